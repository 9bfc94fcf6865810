#!/usr/bin/env bash
# Writes throwaway TLS material for the security tests into DIR:
#   ca.pem                    the CA that signs the server and alice
#   server.pem server.key     CN=localhost, SAN localhost and 127.0.0.1
#   alice.pem alice.key       a client certificate, CN=alice
#   rogue-ca.pem              another CA,
#   mallory.pem mallory.key   a client certificate it signed, CN=mallory,
#   renewed.pem renewed.key   and a server certificate it signed, as
#                             server.pem (to rotate to)
# Made fresh for every test run, so nothing private is checked in and
# nothing expires.
set -euo pipefail
dir=$1
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" > /dev/null 2>&1; }

ca() {  # NAME
  quiet openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.pem"
}
leaf() {  # NAME CA EXTENSIONS
  quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr"
  printf '%s\n' "$3" > "$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA "$2.pem" -CAkey "$2.key" \
    -CAcreateserial -days 2 -extfile "$1.ext" -out "$1.pem"
}

ca ca
ca rogue-ca
leaf localhost ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
mv localhost.pem server.pem
mv localhost.key server.key
leaf alice ca "extendedKeyUsage=clientAuth"
leaf mallory rogue-ca "extendedKeyUsage=clientAuth"
leaf localhost rogue-ca "subjectAltName=DNS:localhost,IP:127.0.0.1"
mv localhost.pem renewed.pem
mv localhost.key renewed.key
rm -f ./*.csr ./*.ext ./*.srl
