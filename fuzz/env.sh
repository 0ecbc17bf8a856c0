# Sourced by smoke.sh and campaign.sh: the toolchain, cargo-fuzz, and a
# build of every target. Sets FUZZ_TARGETS (names) and FUZZ_BIN (their folder).

fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# cargo-fuzz needs nightly rustc flags (-Zsanitizer). Use the nightly
# toolchain if it is there or can be installed; else the stable one with
# RUSTC_BOOTSTRAP=1, which accepts the same flags.
if cargo +nightly --version >/dev/null 2>&1 ||
   rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
  fuzz_cargo=(cargo +nightly)
else
  echo "fuzz: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1" >&2
  export RUSTC_BOOTSTRAP=1
  fuzz_cargo=(cargo)
fi

if ! "${fuzz_cargo[@]}" fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# Every target, built with ASan and debug assertions (cargo-fuzz's defaults).
fuzz_build() {
  (cd "$fuzz_dir" && "${fuzz_cargo[@]}" fuzz build)
  FUZZ_TARGETS=$(cd "$fuzz_dir" && "${fuzz_cargo[@]}" fuzz list)
  local host
  host=$(rustc -vV | sed -n 's/^host: //p')
  FUZZ_BIN="$fuzz_dir/target/$host/release"
}

# libFuzzer's last status line's "cov: N ft: M" of a log, as "N M".
fuzz_cov() {
  grep -E '^#[0-9]+.*cov: [0-9]+ ft: [0-9]+' "$1" | tail -1 |
    sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\1 \2/'
}

# libFuzzer's executions of a log (-print_final_stats=1).
fuzz_execs() {
  sed -n 's/^stat::number_of_executed_units: *//p' "$1" | tail -1
}
