#!/bin/sh
# `make certs`: a throwaway CA and a server certificate it signs, for nginx's TLS in compose and
# the TLS test. The edges trust ca.pem (spic-edge --ca-cert); nginx serves server.pem/server.key.
# The CA's key is deleted once the server certificate is signed: this CA signs nothing else.
# For a real deployment put your own server.pem (full chain), server.key and ca.pem in the folder.
#
#   sh docker/make-certs.sh [DIR]        DIR defaults to docker/certs
#   SPIC_CERT_NAMES=DNS:lb,DNS:spic.example.com,IP:127.0.0.1 sh docker/make-certs.sh
set -eu
dir=${1:-docker/certs}
names=${SPIC_CERT_NAMES:-DNS:lb,DNS:localhost,IP:127.0.0.1}
days=${SPIC_CERT_DAYS:-365}
mkdir -p "$dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curve="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
# shellcheck disable=SC2086  # $curve is several arguments
openssl req -x509 $curve -days "$days" -subj "/CN=SPIC test CA" \
    -keyout "$work/ca.key" -out "$dir/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
# shellcheck disable=SC2086
openssl req $curve -subj "/CN=spic" -keyout "$dir/server.key" -out "$work/server.csr" 2>/dev/null
cat >"$work/ext.cnf" <<EXT
subjectAltName=$names
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EXT
openssl x509 -req -in "$work/server.csr" -CA "$dir/ca.pem" -CAkey "$work/ca.key" \
    -CAcreateserial -CAserial "$work/ca.srl" -days "$days" -extfile "$work/ext.cnf" \
    -out "$dir/server.pem" 2>/dev/null
# nginx runs as nobody in compose and reads the key itself: readable by all here, a test key only.
chmod 644 "$dir/server.key" "$dir/server.pem" "$dir/ca.pem"
echo "make-certs: $dir/ca.pem, $dir/server.pem, $dir/server.key for $names ($days days)"
