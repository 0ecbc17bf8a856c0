#!/usr/bin/env bash
# Makes golden TPM 2.0 quote fixtures with a software TPM (swtpm) and tpm2-tools only,
# independently of qkeyd's own TPM code: an EK with a certificate chain from swtpm-localca,
# an ECC P-256 AK, a TPM2_Quote of sha256 PCRs 0-7 whose qualifying data is the extraData
# of qkeyd's evidence format (qkeyd-evidence/1), and a TPM2_Certify attest signed by the AK.
#
#   tests/attest/make-golden.sh [OUTDIR]     (default: tests/attest/golden/)
#
# Needs swtpm, swtpm-tools, tpm2-tools, gnutls-bin (certtool, for swtpm-localca), openssl
# and python3; tests/run-all.sh installs the Debian packages. Nothing is written outside a
# temporary directory and OUTDIR: swtpm_setup and swtpm-localca get their own config files.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/golden}"

declare -A packages=(
  [swtpm]=swtpm
  [swtpm_setup]=swtpm-tools
  [swtpm_localca]=swtpm-tools
  [swtpm_ioctl]=swtpm-tools
  [certtool]=gnutls-bin
  [tpm2_quote]=tpm2-tools
  [tpm2_checkquote]=tpm2-tools
  [openssl]=openssl
  [python3]=python3
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]} (for $cmd)")
done
if ((${#missing[@]})); then
  echo "make-golden: missing Debian packages: ${missing[*]}" >&2
  echo "make-golden: install them (apt-get install swtpm swtpm-tools tpm2-tools gnutls-bin openssl python3) or run tests/run-all.sh once" >&2
  exit 2
fi

say() { printf '==> %s\n' "$*"; }
die() { echo "make-golden: $*" >&2; exit 1; }

work="$(mktemp -d -t qkeyd-golden.XXXXXX)"
swtpm_pid=""
cleanup() {
  if [[ -n "$swtpm_pid" ]] && kill -0 "$swtpm_pid" 2>/dev/null; then
    kill "$swtpm_pid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$swtpm_pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$swtpm_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Everything temporary (swtpm_setup's own scratch directories too) stays under $work.
export TMPDIR="$work"
export XDG_CONFIG_HOME="$work/xdg"
mkdir -p "$work/state" "$work/localca" "$work/xdg" "$work/t"

# --- swtpm_setup with a private swtpm-localca -------------------------------------------
# Debian 12's swtpm_setup reads /etc/swtpm_setup.conf, which points swtpm_localca at
# /etc/swtpm-localca.conf and a CA state directory under /var/lib/swtpm-localca. Our own
# copies (--config) point it at a temporary directory instead; on its first use
# swtpm_localca creates a root CA and an intermediate signing CA (with certtool) there.
cat >"$work/localca.conf" <<EOF
statedir = $work/localca
signingkey = $work/localca/signkey.pem
issuercert = $work/localca/issuercert.pem
certserial = $work/localca/certserial
EOF
cat >"$work/localca.options" <<EOF
--platform-manufacturer qkeyd-golden
--platform-version 2.1
--platform-model swtpm
EOF
cat >"$work/swtpm_setup.conf" <<EOF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $work/localca.conf
create_certs_tool_options = $work/localca.options
active_pcr_banks = sha256
EOF

say "swtpm_setup (TPM 2.0, EK and platform certificates, NVRAM locked)"
swtpm_setup --tpm2 --tpm-state "$work/state" --config "$work/swtpm_setup.conf" \
  --create-ek-cert --create-platform-cert --lock-nvram --pcr-banks sha256 \
  --logfile "$work/swtpm_setup.log" >/dev/null ||
  { cat "$work/swtpm_setup.log" >&2; die "swtpm_setup failed (log above)"; }
grep -E '^(Successfully|Creating)' "$work/swtpm_setup.log" | sed 's/^/    /'

# --- swtpm on free loopback ports ---------------------------------------------------------
# The swtpm TCTI talks to the command port P and the control port P+1.
port="$(python3 - <<'EOF'
import socket
for _ in range(200):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    if p < 65535:
        b = socket.socket()
        try:
            b.bind(("127.0.0.1", p + 1)); b.close(); a.close(); print(p); break
        except OSError:
            b.close()
    a.close()
else:
    raise SystemExit("no two adjacent free loopback ports")
EOF
)"
ctrl=$((port + 1))
say "swtpm socket on 127.0.0.1:$port (control $ctrl)"
swtpm socket --tpm2 --tpmstate dir="$work/state" \
  --server type=tcp,port="$port",bindaddr=127.0.0.1 \
  --ctrl type=tcp,port="$ctrl",bindaddr=127.0.0.1 \
  --log file="$work/swtpm.log" &
swtpm_pid=$!
for _ in $(seq 1 50); do
  swtpm_ioctl --tcp "127.0.0.1:$ctrl" -g >/dev/null 2>&1 && break
  kill -0 "$swtpm_pid" 2>/dev/null || { cat "$work/swtpm.log" >&2; die "swtpm exited"; }
  sleep 0.1
done
export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$port"
# The swtpm TCTI does not power the TPM on: TPM_Init through the control channel first.
swtpm_ioctl --tcp "127.0.0.1:$ctrl" -i
tpm2_startup -c -T "$TPM2TOOLS_TCTI"

# Without a resource manager every tool leaves its transient objects loaded and swtpm
# holds only three: flush after each tool that loads one.
flush() { tpm2_flushcontext -t >/dev/null; tpm2_flushcontext -l >/dev/null; }

cd "$work/t"

# --- EK, AK --------------------------------------------------------------------------------
say "EK (RSA 2048, default template) and AK (ECC P-256, ECDSA-SHA256, restricted signing)"
tpm2_createek -G rsa -c ek.ctx -u ek.pub
flush
tpm2_createak -C ek.ctx -c ak.ctx -G ecc -g sha256 -s ecdsa -u ak.pub -n ak.name >ak.yaml
flush
tpm2_readpublic -c ak.ctx -f pem -o ak.pem >/dev/null
flush

# --- EK certificate chain --------------------------------------------------------------------
say "EK certificate from NV index 0x01c00002, localca issuer and root"
# (tpm2_nvread warns on stderr that it reads the whole index: keep that out of the way.)
tpm2_nvread 0x01c00002 -C o -o ek_cert.der 2>nvread.err || { cat nvread.err >&2; die "no EK certificate"; }
tpm2_nvread 0x01c08000 -C o -o platform_cert.der 2>nvread.err || { cat nvread.err >&2; die "no platform certificate"; }
openssl x509 -in "$work/localca/issuercert.pem" -outform der -out ek_issuer.der
openssl x509 -in "$work/localca/swtpm-localca-rootca-cert.pem" -outform der -out ek_root.der
openssl x509 -inform der -in ek_cert.der -out ek_cert.pem
openssl x509 -inform der -in ek_issuer.der -out ek_issuer.pem
openssl x509 -inform der -in ek_root.der -out ek_root.pem
# The TPM's TCG OIDs (EKU 2.23.133.8.1, directoryName SAN) need no special flags here.
openssl verify -CAfile ek_root.pem -untrusted ek_issuer.pem ek_cert.pem | sed 's/^/    /'
# The certificate names the EK the TPM derives again from its endorsement seed.
python3 - <<'EOF'
import subprocess
pub = open("ek.pub", "rb").read()
n = int.from_bytes(pub[-256:], "big")
m = subprocess.run(["openssl", "x509", "-inform", "der", "-in", "ek_cert.der", "-noout", "-modulus"],
                   check=True, capture_output=True, text=True).stdout.strip().split("=", 1)[1]
assert int(m, 16) == n, "EK certificate does not certify the TPM's EK"
print("    EK certificate modulus = EK public modulus")
EOF

# --- extraData -------------------------------------------------------------------------------
# SHA-256("qkeyd-attest/1\0" || nonce || SHA3-256(statement)), nonce = bytes 0x00..0x1f.
say "extraData"
printf '{"format":"qkeyd-golden/1","note":"fixed statement bytes for the TPM quote fixtures"}' >statement.bin
python3 - <<'EOF'
import hashlib
nonce = bytes(range(32))
open("nonce.bin", "wb").write(nonce)
stmt = open("statement.bin", "rb").read()
extra = hashlib.sha256(b"qkeyd-attest/1\0" + nonce + hashlib.sha3_256(stmt).digest()).digest()
open("extra_data.bin", "wb").write(extra)
open("extra_data.hex", "w").write(extra.hex() + "\n")
EOF
extra="$(tr -d '\n' <extra_data.hex)"
echo "    $extra"

# --- PCRs and the quote --------------------------------------------------------------------
say "extend PCRs 0 and 7, quote sha256:0-7"
pcr0_in="$(printf 'qkeyd golden pcr 0' | openssl dgst -sha256 -r | cut -c1-64)"
pcr7_in="$(printf 'qkeyd golden pcr 7' | openssl dgst -sha256 -r | cut -c1-64)"
tpm2_pcrextend "0:sha256=$pcr0_in" "7:sha256=$pcr7_in"
sel="sha256:0,1,2,3,4,5,6,7"
tpm2_pcrread "$sel" >pcrs_before.yaml
tpm2_quote -c ak.ctx -l "$sel" -q "$extra" -m attest.bin -s sig.bin -o pcrs.bin -g sha256 >quote.yaml
flush
tpm2_pcrread "$sel" >pcrs_after.yaml
cmp -s pcrs_before.yaml pcrs_after.yaml || die "PCRs changed during the quote"
python3 - "$pcr0_in" "$pcr7_in" <<'EOF'
import hashlib, json, re, sys
vals = {}
for line in open("pcrs_after.yaml"):
    m = re.match(r"\s*(\d+)\s*:\s*0x([0-9A-Fa-f]{64})\s*$", line)
    if m:
        vals[m.group(1)] = m.group(2).lower()
assert sorted(vals, key=int) == [str(i) for i in range(8)], vals
# The extends themselves, recomputed from zero PCRs.
for idx, ext in ((0, sys.argv[1]), (7, sys.argv[2])):
    want = hashlib.sha256(bytes(32) + bytes.fromhex(ext)).hexdigest()
    assert vals[str(idx)] == want, (idx, vals[str(idx)], want)
json.dump(vals, open("pcrs.json", "w"), indent=1, sort_keys=False)
open("pcrs.json", "a").write("\n")
# The quote's pcrDigest = SHA-256 of the values in selection order (the digest is last).
att = open("attest.bin", "rb").read()
digest = hashlib.sha256(b"".join(bytes.fromhex(vals[str(i)]) for i in range(8))).digest()
assert att[:4] == b"\xffTCG" and att[4:6] == b"\x80\x18", att[:6].hex()
assert att[-34:] == b"\x00\x20" + digest, "pcrDigest differs from the PCR values"
print("    pcrs.json values hash to the quote's pcrDigest")
EOF

# --- tpm2_checkquote: passes, and fails for a changed byte ---------------------------------
say "tpm2_checkquote"
tpm2_checkquote -u ak.pem -m attest.bin -s sig.bin -f pcrs.bin -g sha256 -q "$extra" >checkquote.yaml ||
  die "tpm2_checkquote refused the golden quote"
echo "    golden quote: pass"
expect_fail() { # name, then the tpm2_checkquote arguments
  local name="$1"; shift
  if tpm2_checkquote "$@" >/dev/null 2>&1; then die "tpm2_checkquote accepted $name"; fi
  echo "    $name: fail (as it must)"
}
python3 - <<'EOF'
a = bytearray(open("attest.bin", "rb").read()); a[-1] ^= 0x01; open("attest_flip_digest.bin", "wb").write(a)
a = bytearray(open("attest.bin", "rb").read()); a[0x30] ^= 0x80; open("attest_flip_extra.bin", "wb").write(a)
s = bytearray(open("sig.bin", "rb").read()); s[-1] ^= 0x01; open("sig_flip.bin", "wb").write(s)
EOF
expect_fail "attest.bin with its last byte (pcrDigest) flipped" \
  -u ak.pem -m attest_flip_digest.bin -s sig.bin -f pcrs.bin -g sha256 -q "$extra"
expect_fail "attest.bin with a byte of extraData flipped" \
  -u ak.pem -m attest_flip_extra.bin -s sig.bin -f pcrs.bin -g sha256 -q "$extra"
expect_fail "sig.bin with its last byte flipped" \
  -u ak.pem -m attest.bin -s sig_flip.bin -f pcrs.bin -g sha256 -q "$extra"
expect_fail "another qualifying data" \
  -u ak.pem -m attest.bin -s sig.bin -f pcrs.bin -g sha256 -q "$(printf '%064d' 0)"

# --- TPM2_Certify of an owner-hierarchy key, signed by the AK ------------------------------
say "TPM2_Certify (owner primary -> ECC P-256 child) signed by the AK"
tpm2_createprimary -C o -g sha256 -G ecc -c srk.ctx >/dev/null
flush
tpm2_create -C srk.ctx -G ecc256 -u certified.pub -r certified.priv >/dev/null
flush
tpm2_load -C srk.ctx -u certified.pub -r certified.priv -c certified.ctx -n certified.name >/dev/null
flush
tpm2_certify -c certified.ctx -C ak.ctx -g sha256 -o certify_attest.bin -s certify_sig.bin >/dev/null
flush
tpm2_verifysignature -c ak.ctx -g sha256 -m certify_attest.bin -s certify_sig.bin -t certify_ticket.bin ||
  die "the TPM refused the AK's certify signature"
flush
# And outside the TPM: TPMT_SIGNATURE (ECDSA) -> DER, openssl verifies with the AK's PEM.
python3 - <<'EOF'
import hashlib
def der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80: b = b"\0" + b
    return b"\x02" + bytes([len(b)]) + b
for att_f, sig_f, der_f, want_type in (("certify_attest.bin", "certify_sig.bin", "certify_sig.der", 0x8017),
                                       ("attest.bin", "sig.bin", "sig.der", 0x8018)):
    s = open(sig_f, "rb").read()
    assert s[:4] == b"\x00\x18\x00\x0b", s[:4].hex()   # TPM_ALG_ECDSA, TPM_ALG_SHA256
    rl = int.from_bytes(s[4:6], "big"); r = s[6:6 + rl]
    sl = int.from_bytes(s[6 + rl:8 + rl], "big"); sv = s[8 + rl:8 + rl + sl]
    assert 8 + rl + sl == len(s)
    body = der_int(r) + der_int(sv)
    open(der_f, "wb").write(b"\x30" + bytes([len(body)]) + body)
    a = open(att_f, "rb").read()
    assert a[:4] == b"\xffTCG" and int.from_bytes(a[4:6], "big") == want_type, a[:6].hex()
# certifyInfo.name (after the 2-byte size) is the certified key's Name.
a = open("certify_attest.bin", "rb").read()
name = open("certified.name", "rb").read()
assert name in a, "certifyInfo does not name the certified key"
# The certified key's Name = 0x000b || SHA-256(TPMT_PUBLIC); the same for the AK.
for pub_f, name_f in (("certified.pub", "certified.name"), ("ak.pub", "ak.name")):
    p = open(pub_f, "rb").read()
    assert int.from_bytes(p[:2], "big") == len(p) - 2
    assert open(name_f, "rb").read() == b"\x00\x0b" + hashlib.sha256(p[2:]).digest(), name_f
open("ak.name.hex", "w").write(open("ak.name", "rb").read().hex() + "\n")
EOF
openssl dgst -sha256 -verify ak.pem -signature certify_sig.der certify_attest.bin | sed 's/^/    certify: /'
openssl dgst -sha256 -verify ak.pem -signature sig.der attest.bin | sed 's/^/    quote: /'

# --- into OUTDIR, with a README ------------------------------------------------------------
files=(statement.bin nonce.bin extra_data.bin extra_data.hex
  ak.pub ak.pem ak.name ak.name.hex ek.pub ek_cert.der ek_issuer.der ek_root.der platform_cert.der
  attest.bin sig.bin sig.der pcrs.bin pcrs.json
  certify_attest.bin certify_sig.bin certify_sig.der certified.pub certified.name)
mkdir -p "$out"
cp "${files[@]}" "$out/"
(cd "$out" && chmod 0644 "${files[@]}")

swtpm_version="swtpm $(swtpm --version 2>&1 | sed -n 's/.*version \([0-9.]*\).*/\1/p' | head -1)"
tools_version="tpm2-tools $(tpm2_quote --version 2>&1 | sed -n 's/.*version="\([^"]*\)".*/\1/p' | head -1)"
clock_line="$(python3 -c '
a = open("attest.bin", "rb").read()
o = 6
n = int.from_bytes(a[o:o+2], "big"); o += 2 + n
n = int.from_bytes(a[o:o+2], "big"); o += 2 + n
clock = int.from_bytes(a[o:o+8], "big"); reset = int.from_bytes(a[o+8:o+12], "big")
restart = int.from_bytes(a[o+12:o+16], "big"); safe = a[o+16]; fw = int.from_bytes(a[o+17:o+25], "big")
print(f"clock {clock} ms, resetCount {reset}, restartCount {restart}, safe {safe}, firmwareVersion 0x{fw:016x}")
')"
{
  cat <<EOF
# Golden TPM 2.0 quote fixtures

Made by \`tests/attest/make-golden.sh\` with a software TPM and tpm2-tools only (no qkeyd
code): $swtpm_version; $tools_version. Running the script again makes a new TPM, so new
keys and signatures: the files belong together and are replaced together.

How: \`swtpm_setup --tpm2 --create-ek-cert --create-platform-cert --lock-nvram --pcr-banks sha256\`
with a private swtpm-localca (root CA and intermediate created by swtpm_localca in a temp dir),
\`swtpm socket\` on loopback, \`swtpm_ioctl -i\` (TPM_Init), \`tpm2_startup -c\`, then the steps below.

Quoted: $clock_line.

| file | what | made by |
| --- | --- | --- |
| \`statement.bin\` | fixed statement bytes (arbitrary JSON text, not a signed canonical statement) | the script |
| \`nonce.bin\` | the nonce: 32 bytes 0x00..0x1f | the script |
| \`extra_data.bin\`, \`extra_data.hex\` | \`SHA-256("qkeyd-attest/1\\0" \|\| nonce \|\| SHA3-256(statement.bin))\` | python3 hashlib |
| \`ek.pub\` | EK public, TPM2B_PUBLIC (RSA 2048, default EK template) | \`tpm2_createek -G rsa -c ek.ctx -u ek.pub\` |
| \`ak.pub\` | AK public, TPM2B_PUBLIC with its 2-byte size (ECC P-256, ECDSA-SHA256, restricted sign, nameAlg SHA-256) | \`tpm2_createak -C ek.ctx -c ak.ctx -G ecc -g sha256 -s ecdsa -u ak.pub -n ak.name\` |
| \`ak.pem\` | the AK as SPKI PEM | \`tpm2_readpublic -c ak.ctx -f pem -o ak.pem\` |
| \`ak.name\`, \`ak.name.hex\` | AK Name, \`0x000b \|\| SHA-256(TPMT_PUBLIC)\` (binary, hex) | \`tpm2_createak -n\`; hex by the script |
| \`ek_cert.der\` | EK certificate (DER) from NV index 0x01c00002 | \`tpm2_nvread 0x01c00002 -C o\` |
| \`ek_issuer.der\` | its issuer, CN=swtpm-localca (intermediate) | swtpm_localca's \`issuercert.pem\` |
| \`ek_root.der\` | the root, CN=swtpm-localca-rootca (self-signed) | swtpm_localca's \`swtpm-localca-rootca-cert.pem\` |
| \`platform_cert.der\` | platform attribute certificate from NV index 0x01c08000 | \`tpm2_nvread 0x01c08000 -C o\` |
| \`attest.bin\` | TPMS_ATTEST of the quote (TPM2B_ATTEST body, without size), type 0x8018 | \`tpm2_quote -c ak.ctx -l sha256:0,1,2,3,4,5,6,7 -q \$(cat extra_data.hex) -m attest.bin -s sig.bin -o pcrs.bin -g sha256\` |
| \`sig.bin\` | its TPMT_SIGNATURE (0x0018 ECDSA, 0x000b SHA-256, r, s) | same |
| \`sig.der\` | the same signature as DER ECDSA-Sig-Value (for openssl) | the script |
| \`pcrs.bin\` | tpm2-tools' PCR file (input of \`tpm2_checkquote -f\`) | same |
| \`pcrs.json\` | the quoted PCR values, \`{"0":"<hex>",...}\` | \`tpm2_pcrread sha256:0,1,2,3,4,5,6,7\` |
| \`certify_attest.bin\` | TPMS_ATTEST of TPM2_Certify (type 0x8017, empty qualifying data) of \`certified.pub\` | \`tpm2_certify -c certified.ctx -C ak.ctx -g sha256 -o certify_attest.bin -s certify_sig.bin\` |
| \`certify_sig.bin\`, \`certify_sig.der\` | its signature by the AK (TPMT_SIGNATURE; DER) | same; DER by the script |
| \`certified.pub\`, \`certified.name\` | the certified key: ECC P-256 child of an owner ECC primary (TPM2B_PUBLIC; Name) | \`tpm2_createprimary -C o -g sha256 -G ecc\`, \`tpm2_create -G ecc256\`, \`tpm2_load -n\` |

PCRs 0 and 7 were extended once from zero (all others are zero):

- PCR 0 with \`SHA-256("qkeyd golden pcr 0")\` = \`$pcr0_in\`
- PCR 7 with \`SHA-256("qkeyd golden pcr 7")\` = \`$pcr7_in\`

Checks the script made before writing these files:

- \`openssl verify -CAfile ek_root.pem -untrusted ek_issuer.pem ek_cert.pem\`: OK; the EK
  certificate's modulus is the modulus in \`ek.pub\`.
- the PCR values hash (in selection order) to the quote's pcrDigest; Names = \`0x000b || SHA-256(TPMT_PUBLIC)\`.
- \`tpm2_checkquote -u ak.pem -m attest.bin -s sig.bin -f pcrs.bin -g sha256 -q \$(cat extra_data.hex)\`
  passes; it fails with the last byte (pcrDigest) or a byte of extraData of \`attest.bin\`
  flipped, with the last byte of \`sig.bin\` flipped, and with another qualifying data.
- \`tpm2_verifysignature\` (in the TPM) and \`openssl dgst -sha256 -verify ak.pem\` accept
  both AK signatures (quote and certify).
EOF
} >"$out/README.md"

say "wrote ${#files[@]} files and README.md to $out"
