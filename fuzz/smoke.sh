#!/usr/bin/env bash
# The fuzz smoke run: builds every target (cargo-fuzz), runs each from its
# seeds (fuzz/seeds/<target>/) for FUZZ_SECONDS (default 15), then re-runs every
# committed regression input (fuzz/regressions/<target>/*). Fails on any
# crash, leak, timeout (an input over FUZZ_TIMEOUT seconds, default 10) or
# out-of-memory. Installs cargo-fuzz if it is missing.
#
#   fuzz/smoke.sh                 every target
#   fuzz/smoke.sh rest_api ...    only these
set -euo pipefail
cd "$(dirname "$0")"
source ./env.sh

secs=${FUZZ_SECONDS:-15}
timeout=${FUZZ_TIMEOUT:-10}
fuzz_build
targets=("$@")
((${#targets[@]})) || mapfile -t targets <<<"$FUZZ_TARGETS"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=()
printf '%-18s %10s %6s %7s  %s\n' target execs cov ft regressions
for t in "${targets[@]}"; do
  corpus="$logs/corpus-$t"
  mkdir -p "$corpus" "artifacts/$t"
  ok=1
  "$FUZZ_BIN/$t" "$corpus" "seeds/$t" -max_total_time="$secs" -timeout="$timeout" \
    -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
    >"$logs/$t.log" 2>&1 || ok=0
  regressions=0
  if [[ -d "regressions/$t" ]] && compgen -G "regressions/$t/*" >/dev/null; then
    regressions=$(find "regressions/$t" -type f | wc -l)
    "$FUZZ_BIN/$t" -timeout="$timeout" -rss_limit_mb=4096 "regressions/$t"/* \
      >>"$logs/$t.log" 2>&1 || ok=0
  fi
  read -r cov ft <<<"$(fuzz_cov "$logs/$t.log")"
  printf '%-18s %10s %6s %7s  %s\n' "$t" "$(fuzz_execs "$logs/$t.log")" "${cov:--}" "${ft:--}" "$regressions"
  if ((!ok)); then
    failed+=("$t")
    echo "---- $t failed; the end of its log (inputs in fuzz/artifacts/$t/):"
    tail -40 "$logs/$t.log"
  fi
done
if ((${#failed[@]})); then
  echo "fuzz smoke: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz smoke: ${#targets[@]} targets, ${secs} s each, no crash"
