#!/usr/bin/env bash
# A fuzz campaign: every target for MINUTES, one at a time and at the lowest
# priority, growing its corpus in fuzz/corpus/<target>/ (from its seeds) and
# keeping what crashes in fuzz/artifacts/<target>/. A target that crashes is
# restarted for the rest of its time. Writes the summary table (target,
# executions, libFuzzer's final cov: and ft:, crashes) to
# fuzz/logs/campaign-<time>/summary.md, beside each target's log, and prints it.
#
#   nohup nice -n 19 fuzz/campaign.sh 10 > campaign.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")"
minutes=${1:?usage: fuzz/campaign.sh MINUTES [TARGET...]}
shift
source ./env.sh

fuzz_build
targets=("$@")
((${#targets[@]})) || mapfile -t targets <<<"$FUZZ_TARGETS"
out="$PWD/logs/campaign-$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
summary="$out/summary.md"
{
  echo "# Fuzz campaign: ${minutes} min per target, started $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "| target | executions | cov | ft | crashes |"
  echo "|---|---:|---:|---:|---:|"
} >"$summary"
echo "campaign: ${#targets[@]} targets, ${minutes} min each; summary (a row per finished target): $summary"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="$out/$t.log"
  : >"$log"
  end=$(($(date +%s) + minutes * 60))
  execs=0 crashes=0
  while (( $(date +%s) < end && crashes < 20 )); do
    left=$((end - $(date +%s)))
    run="$out/$t.run.log"
    if nice -n 19 "$FUZZ_BIN/$t" "corpus/$t" "seeds/$t" \
        -max_total_time="$left" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" >"$run" 2>&1; then
      :
    else
      crashes=$((crashes + 1))
    fi
    n=$(fuzz_execs "$run")
    execs=$((execs + ${n:-0}))
    cat "$run" >>"$log"
  done
  rm -f "$out/$t.run.log"
  read -r cov ft <<<"$(fuzz_cov "$log")"
  echo "| $t | $execs | ${cov:--} | ${ft:--} | $crashes |" >>"$summary"
  echo "campaign: $t done: $execs executions, cov ${cov:--}, ft ${ft:--}, $crashes crashes"
done
echo
cat "$summary"
echo
echo "summary: $summary"
