#!/usr/bin/env bash
# Runs qkeyd's whole test suite on a Debian/Ubuntu machine with Rust installed.
# It first installs what the tests need (Debian packages, rustup components);
# then checks formatting, lints and docs, and runs every test, unit to end-to-end,
# with every feature on (the TPM sealer is tested against swtpm).
#
#   tests/run-all.sh            everything
#   tests/run-all.sh --no-lint  tests only
set -euo pipefail
cd "$(dirname "$0")/.."

lint=1
[[ "${1:-}" == "--no-lint" ]] && lint=0

say() { printf '\n==> %s\n' "$*"; }

# Debian packages the tests drive, keyed by the command they provide.
declare -A packages=(
  [mkfifo]=coreutils
  [softhsm2-util]=softhsm2
  [pkcs11-tool]=opensc
  [p11-kit]=p11-kit
  [setpriv]=util-linux
  [swtpm]=swtpm
  [swtpm_setup]=swtpm-tools
  [tpm2_pcrextend]=tpm2-tools
  [pkg-config]=pkg-config
  [openssl]=openssl
  [ip]=iproute2
  [systemd-analyze]=systemd
  [strace]=strace
  [chromium]=chromium
  [node]=nodejs
  [npm]=npm
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
# Build-time libraries (no command to look for): the TPM sealer links tpm2-tss.
for pkg in libtss2-dev; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# Python packages of the test clients (the KMS grpcio client, the PKCS#11 clients).
if ! python3 -c 'import grpc, grpc_tools' >/dev/null 2>&1; then
  say "installing grpcio and grpcio-tools"
  # A Debian python3 refuses pip (PEP 668); its own packages do the same job.
  python3 -m pip install --quiet --disable-pip-version-check grpcio==1.85.3 grpcio-tools==1.85.1 ||
    { sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-grpcio python3-grpc-tools; }
fi

# python-pkcs11 (0.10 added PKCS#11 3.2 and ML-KEM): a client of the PKCS#11 module.
# Debian has no package of it; a Debian python3 (PEP 668) needs the pip override.
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("python-pkcs11") != "0.10.1")' >/dev/null 2>&1; then
  say "installing python-pkcs11"
  python3 -m pip install --quiet --disable-pip-version-check python-pkcs11==0.10.1 ||
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages python-pkcs11==0.10.1
fi

# Two GS QKD 014 clients written by others, run against qkeyd's QKD server:
# etsi-qkd-014-client (qkd014-client) and qkdsec's conformance probe.
if ! python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("etsi-qkd-014-client") != "0.9.0" or m.version("qkdsec") != "0.3.0")' >/dev/null 2>&1; then
  say "installing etsi-qkd-014-client and qkdsec"
  python3 -m pip install --quiet --disable-pip-version-check etsi-qkd-014-client==0.9.0 "qkdsec[cli]==0.3.0" ||
    python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages etsi-qkd-014-client==0.9.0 "qkdsec[cli]==0.3.0"
fi
# pip --user puts their commands here.
export PATH="$PATH:$HOME/.local/bin"

if ((lint)); then
  for comp in rustfmt clippy; do
    if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
      say "installing rustup component $comp"
      rustup component add "$comp"
    fi
  done
  say "cargo fmt --check"
  cargo fmt --all --check
  say "cargo clippy"
  cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
  say "cargo doc"
  RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --document-private-items --locked --quiet
fi

say "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-features --locked 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# Every fuzz target from its seeds for FUZZ_SECONDS (default 15), and every
# committed regression input (fuzz/README.md).
say "fuzz smoke"
fuzz/smoke.sh || rc=1
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
exit "$rc"
