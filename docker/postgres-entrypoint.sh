#!/bin/sh
# The db service's entrypoint, the same on the official postgres:15 image and on
# spic-services:bookworm (Debian's postgresql-15): create the cluster, the user and the database
# on first start, then run the server as the postgres user.
set -eu
PATH="/usr/lib/postgresql/15/bin:$PATH"
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
: "${POSTGRES_USER:=spic}" "${POSTGRES_DB:=spic}" "${POSTGRES_PASSWORD:=spic}"
export PATH PGDATA POSTGRES_USER POSTGRES_DB POSTGRES_PASSWORD
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups /bin/sh "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start >/dev/null
    createdb -h /var/run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
    pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -k /var/run/postgresql
