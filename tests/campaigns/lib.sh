# Shared helpers of the campaign scripts (sourced, not run): build the release
# binaries, start and stop a qkeyd of their own on loopback with a temporary
# state directory, read a process's RSS and open file descriptors, and clean up
# only the processes a campaign started.
#
# Overrides: QKEYD_BIN (the daemon), QKEYD_PKCS11_MODULE (libqkeyd_pkcs11.so);
# CAMPAIGN_NO_BUILD=1 uses target/release as it is.

set -euo pipefail

CAMPAIGN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CAMPAIGN_PIDS=()
CAMPAIGN_TMP=""

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'campaign: %s\n' "$*" >&2; exit 2; }

# The duration argument: a whole number of seconds, or the default.
duration_arg() {
  local d=${1:-$2}
  [[ $d =~ ^[0-9]+$ && $d -gt 0 ]] || die "duration must be a whole number of seconds, got '$d'"
  echo "$d"
}

# A temporary directory for this run, removed on exit with every process the
# campaign started (by pid; never by name).
campaign_tmp() {
  CAMPAIGN_TMP=$(mktemp -d "${TMPDIR:-/tmp}/qkeyd-campaign.XXXXXX")
  trap campaign_cleanup EXIT
  trap 'exit 130' INT TERM
}

campaign_cleanup() {
  local pid
  for pid in "${CAMPAIGN_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${CAMPAIGN_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n $CAMPAIGN_TMP && -z ${CAMPAIGN_KEEP:-} ]]; then
    rm -rf "$CAMPAIGN_TMP"
  elif [[ -n $CAMPAIGN_TMP ]]; then
    say "kept $CAMPAIGN_TMP"
  fi
}

# cargo build --release of the given packages/targets (one build at a time:
# cargo's lock on target/ serialises it with any other build).
build_release() {
  [[ -n ${CAMPAIGN_NO_BUILD:-} ]] && return 0
  say "cargo build --release $*"
  (cd "$CAMPAIGN_ROOT" && cargo build --release --quiet "$@")
}

qkeyd_bin() { echo "${QKEYD_BIN:-$CAMPAIGN_ROOT/target/release/qkeyd}"; }

# start_qkeyd CONFIG STATE LOG [ARGS...]: qkeyd serve on 127.0.0.1 (a free
# port, or QKEYD_PORT), its stderr appended to LOG. Sets QKEYD_PID and QKEYD_ADDR (host:port).
start_qkeyd() {
  local config=$1 state=$2 log=$3
  shift 3
  local port=${QKEYD_PORT:-0} before
  touch "$log"
  before=$(grep -c 'listening on http://' "$log" || true)
  "$(qkeyd_bin)" serve --config "$config" --state-dir "$state" \
    --listen "127.0.0.1:$port" --log info "$@" </dev/null >/dev/null 2>>"$log" &
  QKEYD_PID=$!
  CAMPAIGN_PIDS+=("$QKEYD_PID")
  local i addr=""
  for ((i = 0; i < 600; i++)); do
    addr=$(grep -o 'listening on http://[0-9.:]*' "$log" | tail -n1 | sed 's|.*http://||' || true)
    [[ -n $addr && $(grep -c 'listening on http://' "$log" || true) -gt $before ]] && break
    addr=""
    kill -0 "$QKEYD_PID" 2>/dev/null || { tail -n 30 "$log" >&2; die "qkeyd exited at start"; }
    sleep 0.1
  done
  [[ -n $addr ]] || { tail -n 30 "$log" >&2; die "qkeyd did not start listening"; }
  QKEYD_ADDR=$addr
}

# stop_qkeyd [SIGNAL]: stop the daemon started last and wait for it.
stop_qkeyd() {
  local sig=${1:-TERM}
  kill "-$sig" "$QKEYD_PID" 2>/dev/null || true
  wait "$QKEYD_PID" 2>/dev/null || true
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# sample_rss PID FILE SECONDS: append "elapsed_s rss_kb" to FILE every SECONDS
# while PID lives (run in the background).
sample_rss() {
  local pid=$1 file=$2 every=$3 t0=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    echo "$((SECONDS - t0)) $(rss_kb "$pid")" >>"$file"
    sleep "$every"
  done
}
