#!/usr/bin/env bash
# Makes the certificates for tests/qkd/kme_sim.py (EC P-256 keys, openssl CLI).
#
#   tests/qkd/make_certs.sh DIR SAE_ID...
#
# DIR/ca.pem, DIR/ca.key        the CA (kept and reused if both already exist)
# DIR/kme-a.pem, DIR/kme-a.key  server cert of KME_A (CN KME_A, SAN IP 127.0.0.1, DNS localhost)
# DIR/kme-b.pem, DIR/kme-b.key  server cert of KME_B (CN KME_B, same SANs)
# DIR/<sae>.pem, DIR/<sae>.key  cert per SAE id (subject CN = the SAE id; clientAuth, and
#                               serverAuth with the same SANs, so that a qkeyd node can
#                               use its SAE certificate for its own GS QKD 014 listener)
#
# Keys are PKCS#8 PEM; certs are X.509 v3, 10 years, signed with ECDSA-SHA256.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 DIR [SAE_ID...]" >&2
  exit 2
fi
dir=$1
shift
mkdir -p "$dir"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

newkey() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# sign NAME CN EXTFILE: DIR/NAME.key + DIR/NAME.pem issued by the CA.
sign() {
  local name=$1 cn=$2 ext=$3
  newkey "$dir/$name.key"
  openssl req -new -key "$dir/$name.key" -subj "/CN=$cn" -out "$tmp/$name.csr"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  chmod 644 "$dir/$name.pem"
}

new_ca=0
if [[ ! -s "$dir/ca.pem" || ! -s "$dir/ca.key" ]]; then
  newkey "$dir/ca.key"
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 \
    -subj "/CN=qkd-sim test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$dir/ca.pem"
  chmod 644 "$dir/ca.pem"
  new_ca=1
fi

cat >"$tmp/server.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF

cat >"$tmp/client.ext" <<'EOF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth,serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF

for kme in a b; do
  if [[ $new_ca == 1 || ! -s "$dir/kme-$kme.pem" || ! -s "$dir/kme-$kme.key" ]]; then
    sign "kme-$kme" "KME_${kme^^}" "$tmp/server.ext"
  fi
done

for sae in "$@"; do
  case $sae in
    "" | */* | . | .. | ca | kme-a | kme-b)
      echo "$0: unusable SAE id: '$sae'" >&2
      exit 2
      ;;
  esac
  sign "$sae" "$sae" "$tmp/client.ext"
done
