#!/bin/sh
# Makes a private CA and the certificates docker-compose.tls.yml mounts (for trying TLS and mTLS
# locally; production certificates come from your own CA or ACME):
#   ca.pem                      the CA every service and admin trusts
#   services.pem / -key.pem     the services' certificate, for server and client use, valid for
#                               the compose service names, localhost and 127.0.0.1
#   admin.pem / admin-key.pem   an admin's client certificate (grpcurl -cert/-key)
# Usage: deploy/make-certs.sh [DIR]   (default: ./certs; needs openssl)
set -eu
dir=${1:-certs}
mkdir -p "$dir"
cd "$dir"
umask 077
days=825

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=Stanna Keys local CA" -keyout ca-key.pem -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

issue() { # name subject-alt-names extended-key-usage
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$1-key.pem" -out "$1.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s' \
    "$3" "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue services "subjectAltName=DNS:key-registry,DNS:auth-check,DNS:quota,DNS:gateway,DNS:localhost,IP:127.0.0.1" "serverAuth,clientAuth"
issue admin "" "clientAuth"
rm -f ca.srl
# The certificates are public; the keys stay owner-only. The containers run as uid 65532
# (distroless nonroot): the services' key is theirs, the admin's stays yours.
chmod 644 ca.pem services.pem admin.pem
if [ "$(id -u)" = 0 ]; then
  chown 65532 services-key.pem
  note=""
else
  note=" (for the containers: sudo chown 65532 $(pwd)/services-key.pem)"
fi
echo "wrote $(pwd)/ca.pem, services.pem, admin.pem and their keys$note"
