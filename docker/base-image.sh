#!/usr/bin/env bash
# make base-image: the images SPIC's Dockerfiles and docker-compose.yml build FROM, made from
# Debian's packages alone, for machines that cannot pull from a container registry.
#
#   spic-base:bookworm      Python 3.11 with venv: what python:3.11-slim gives (BASE_IMAGE)
#   spic-services:bookworm  PostgreSQL 15 and nginx: for the db and lb services
#                           (SPIC_POSTGRES_IMAGE, SPIC_NGINX_IMAGE)
#
# Each is a minimal Debian root file system made by mmdebstrap, then `docker import`ed.
# An image that already exists is kept (FORCE=1 makes it again).
set -euo pipefail
SUITE=${SUITE:-bookworm}
trim=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*'
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

build() {  # build TAG PACKAGES
    local tag=$1 packages=$2
    if [[ -z ${FORCE:-} ]] && docker image inspect "$tag" >/dev/null 2>&1; then
        echo "base-image: $tag exists (FORCE=1 rebuilds it)"
        return
    fi
    mmdebstrap --quiet --variant=minbase --include="$packages" "${trim[@]}" "$SUITE" "$work/rootfs.tar"
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["/bin/bash"]' \
        "$work/rootfs.tar" "$tag" >/dev/null
    rm -f "$work/rootfs.tar"
    echo "base-image: $tag $(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec)"
}

build spic-base:$SUITE python3,python3-venv,ca-certificates
build spic-services:$SUITE postgresql-15,nginx-light,ca-certificates
