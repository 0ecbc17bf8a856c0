#!/usr/bin/env bash
# REST load campaign: a qkeyd of its own (OS source, soft sealer, temporary
# state directory, loopback), then
#   phase 1: wrk, 64 connections for SECONDS, mixing GET /v1/random?bytes=32
#            with sign / verify / encapsulate on keys made first (bearer token;
#            tests/campaigns/rest-mix.lua), while the daemon's RSS is sampled
#            every 2 s from /proc/PID/status;
#   phase 2: wrk, 16 connections, 20 s on /healthz then 20 s on
#            /v1/random?bytes=32, and the ratio of the two rates (goal ≥ 80%).
# Prints a summary; exits 1 if an answer was wrong (a verify of a good
# signature said false), a request failed (non-2xx, socket error) or the
# daemon died, 2 if the campaign could not run.
#
#   tests/campaigns/rest-load.sh [SECONDS]     (default 600)
#   REST_LOAD_PHASE2_SECONDS=20 REST_LOAD_THREADS=2 REST_LOAD_CONNECTIONS=64
source "$(dirname "$0")/lib.sh"

secs=$(duration_arg "${1:-}" 600)
phase2=${REST_LOAD_PHASE2_SECONDS:-20}
threads=${REST_LOAD_THREADS:-2}
conns=${REST_LOAD_CONNECTIONS:-64}
here=$(cd "$(dirname "$0")" && pwd)

if ! command -v wrk >/dev/null; then
  say "installing wrk"
  sudo=""
  [[ $(id -u) -ne 0 ]] && sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null ||
    die "wrk is missing and apt-get could not install it"
fi
command -v curl >/dev/null || die "curl is needed"

build_release -p qkeyd --bin qkeyd
campaign_tmp
state=$CAMPAIGN_TMP/state
log=$CAMPAIGN_TMP/qkeyd.log
cat >"$CAMPAIGN_TMP/qkeyd.toml" <<'EOF'
[[source]]
name = "os"
kind = "os"
EOF
start_qkeyd "$CAMPAIGN_TMP/qkeyd.toml" "$state" "$log"
pid=$QKEYD_PID
base="http://$QKEYD_ADDR"
say "qkeyd pid $pid on $base"

token=$(cat "$state/api-token")
call() { # METHOD PATH [BODY]
  curl -sS -X "$1" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
    ${3:+-d "$3"} "$base$2"
}
field() { grep -o "\"$1\":\"[^\"]*\"" | head -n1 | sed "s/\"$1\":\"//; s/\"$//"; }

dsa=$(call POST /v1/keys '{"alg":"ml-dsa-65","label":"rest-load-dsa"}' | field id)
kem=$(call POST /v1/keys '{"alg":"ml-kem-768","label":"rest-load-kem"}' | field id)
[[ -n $dsa && -n $kem ]] || die "could not create the keys (see $log)"
msg=$(printf 'the REST load campaign signs this message' | base64 -w0)
sig=$(call POST "/v1/keys/$dsa/sign" "{\"message\":\"$msg\"}" | field signature)
[[ -n $sig ]] || die "could not sign"
call POST "/v1/keys/$dsa/verify" "{\"message\":\"$msg\",\"signature\":\"$sig\"}" |
  grep -q '"valid":true' || die "the first signature does not verify"
call POST "/v1/keys/$kem/encapsulate" '{}' | grep -q shared_secret || die "cannot encapsulate"

rss_file=$CAMPAIGN_TMP/rss
rss_start=$(rss_kb "$pid")
sample_rss "$pid" "$rss_file" 2 &
CAMPAIGN_PIDS+=("$!")

say "phase 1: wrk -t$threads -c$conns -d${secs}s, random + sign/verify/encapsulate"
out1=$CAMPAIGN_TMP/wrk1
QKEYD_TOKEN=$token QKEYD_DSA_ID=$dsa QKEYD_KEM_ID=$kem QKEYD_MSG_B64=$msg QKEYD_SIG_B64=$sig \
  wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s -s "$here/rest-mix.lua" "$base/" >"$out1" 2>&1 ||
  { cat "$out1" >&2; die "wrk failed"; }
alive1=yes
kill -0 "$pid" 2>/dev/null || alive1=no
rss_end=$(rss_kb "$pid")
rss_peak=$( (echo "0 $rss_start"; echo "0 $rss_end"; cat "$rss_file") | awk '$2 > m {m = $2} END {print m}')
rss_samples=$(wc -l <"$rss_file")

say "phase 2: wrk -t$threads -c16 -d${phase2}s on /healthz, then on /v1/random?bytes=32"
out2=$CAMPAIGN_TMP/wrk2
out3=$CAMPAIGN_TMP/wrk3
wrk -t"$threads" -c16 -d"${phase2}s" -s "$here/rest-summary.lua" "$base/healthz" >"$out2" 2>&1 ||
  { cat "$out2" >&2; die "wrk failed"; }
wrk -t"$threads" -c16 -d"${phase2}s" -s "$here/rest-summary.lua" "$base/v1/random?bytes=32" >"$out3" 2>&1 ||
  { cat "$out3" >&2; die "wrk failed"; }
alive2=yes
kill -0 "$pid" 2>/dev/null || alive2=no

# key=value from the "wrk ..." / "mix ..." line of a wrk output.
get() { grep "^$2 " "$1" | tr ' ' '\n' | sed -n "s/^$3=//p"; }

rps1=$(get "$out1" wrk rps)
non2xx1=$(get "$out1" wrk non2xx)
sockerr1=$(($(get "$out1" wrk connect) + $(get "$out1" wrk read) + $(get "$out1" wrk write) + $(get "$out1" wrk timeout)))
vfalse=$(get "$out1" mix verify_false)
rps_h=$(get "$out2" wrk rps)
rps_r=$(get "$out3" wrk rps)
err2=0
for f in "$out2" "$out3"; do
  for k in non2xx connect read write timeout; do err2=$((err2 + $(get "$f" wrk "$k"))); done
done
ratio=$(awk -v a="$rps_r" -v b="$rps_h" 'BEGIN {printf "%.1f", 100 * a / b}')
goal=$(awk -v r="$ratio" 'BEGIN {print (r >= 80 ? "met" : "NOT met")}')

echo
echo "== rest-load summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) cores) =="
echo "phase 1: ${secs}s, wrk -t$threads -c$conns, mix per 10 requests: 7 random(32 B), 1 sign, 1 verify, 1 encapsulate"
grep '^mix ' "$out1" | sed 's/^mix /  sent: /'
grep '^wrk ' "$out1" | sed 's/^wrk /  wrk: /'
echo "  requests/s: $rps1"
echo "  non-2xx answers: $non2xx1   socket errors (connect+read+write+timeout): $sockerr1"
echo "  verify of the good signature answered false: $vfalse"
echo "  daemon RSS: start ${rss_start} kB, peak ${rss_peak} kB, end ${rss_end} kB ($rss_samples samples, every 2 s)"
# Flat or climbing: the highest RSS in each tenth of phase 1.
echo "  daemon RSS by tenth of phase 1 (MB, highest in each): $(awk -v d="$secs" '
  $1 < d { t = int($1 * 10 / d); if ($2 > m[t]) m[t] = $2 }
  END { for (i = 0; i < 10; i++) printf "%s%d", (i ? " " : ""), m[i] / 1024 }' "$rss_file")"
echo "  daemon alive after phase 1: $alive1"
echo "phase 2: ${phase2}s each, wrk -t$threads -c16"
echo "  /healthz:            $rps_h req/s   ($(grep '^wrk ' "$out2" | sed 's/^wrk //'))"
echo "  /v1/random?bytes=32: $rps_r req/s   ($(grep '^wrk ' "$out3" | sed 's/^wrk //'))"
echo "  random / healthz: ${ratio}% (goal ≥ 80%: $goal)   failed requests: $err2"
echo "  daemon alive after phase 2: $alive2"

fail=0
[[ $alive1 == yes && $alive2 == yes ]] || { echo "FAIL: the daemon died (log: $log)"; fail=1; }
((vfalse == 0)) || { echo "FAIL: $vfalse verify answers said false for a good signature"; fail=1; }
((non2xx1 == 0 && sockerr1 == 0 && err2 == 0)) || { echo "FAIL: requests failed (see above)"; fail=1; }
if ((fail)); then
  CAMPAIGN_KEEP=1
  grep -E 'ERROR|WARN|panic' "$log" | tail -n 20 || true
  exit 1
fi
echo "PASS"
