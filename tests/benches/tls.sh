#!/usr/bin/env bash
# TLS benchmark of the REST endpoint, run by hand (not in CI); prints rows for
# BENCHMARKS.md.
#
# Servers, all on loopback with one ECDSA P-256 certificate made here:
#   qkeyd, TLS ([tls] groups = "hybrid": X25519MLKEM768 preferred, X25519 accepted)
#   qkeyd, plain HTTP (no [tls]), for the keep-alive figure without TLS
#   nginx (Debian's, OpenSSL 3.0): 2 workers, TLS 1.3 only, X25519 only,
#     `return 200` with a body the size of qkeyd's answer, keep-alive on
# Measures, in ROUNDS interleaved rounds (A B C A B C ...), median round shown:
#   full handshakes: tests/tls/probe (Go's crypto/tls, no resumption)
#     `tlsprobe handshakes -c 4 -d SECONDS` on qkeyd X25519MLKEM768, qkeyd
#     X25519, nginx X25519; and the hybrid / X25519 rate ratio on qkeyd;
#   keep-alive requests: `wrk -t2 -c16 -dSECONDS --latency` on
#     GET /v1/random?bytes=32 over TLS and over plain HTTP, and nginx's
#     `return 200` over TLS.
# Client and servers share the machine's cores.
#
#   tests/benches/tls.sh
#   TLS_BENCH_SECONDS=10 TLS_BENCH_ROUNDS=3 TLS_BENCH_NO_BUILD=1 QKEYD_BIN=path TLS_BENCH_KEEP=1
# Exit 0 with the table; 1 if a measurement failed (errors, non-2xx answers);
# 2 if the benchmark could not run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SECS=${TLS_BENCH_SECONDS:-10}
ROUNDS=${TLS_BENCH_ROUNDS:-3}
QKEYD=${QKEYD_BIN:-$ROOT/target/release/qkeyd}
PIDS=()
TMP=""

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'tls bench: %s\n' "$*" >&2; exit 2; }

[[ $SECS =~ ^[0-9]+$ && $SECS -gt 0 ]] || die "TLS_BENCH_SECONDS must be a whole number of seconds"
[[ $ROUNDS =~ ^[0-9]+$ && $ROUNDS -gt 0 ]] || die "TLS_BENCH_ROUNDS must be a whole number"

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n $TMP && -z ${TLS_BENCH_KEEP:-} ]]; then
    rm -rf "$TMP"
  elif [[ -n $TMP ]]; then
    say "kept $TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------
sudo=""
[[ $(id -u) -ne 0 ]] && sudo=sudo
apt_install() { # PACKAGE
  say "installing $1"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null ||
    die "$1 is missing and apt-get could not install it"
}
NGINX=$(command -v nginx || true)
[[ -z $NGINX && -x /usr/sbin/nginx ]] && NGINX=/usr/sbin/nginx
if [[ -z $NGINX ]]; then
  apt_install nginx
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
command -v wrk >/dev/null || apt_install wrk
for t in openssl go python3; do command -v "$t" >/dev/null || die "$t is needed"; done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/qkeyd-tls-bench.XXXXXX")

if [[ -z ${TLS_BENCH_NO_BUILD:-} ]]; then
  say "cargo build --release -p qkeyd --locked"
  (cd "$ROOT" && cargo build --release -p qkeyd --locked --quiet)
fi
[[ -x $QKEYD ]] || die "no qkeyd at $QKEYD"
PROBE=$TMP/tlsprobe
say "go build tests/tls/probe"
(cd "$ROOT/tests/tls/probe" && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o "$PROBE" .)

# --- certificate ---------------------------------------------------------
CERT=$TMP/server.crt
KEY=$TMP/server.key
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -keyout "$KEY" -out "$CERT" -subj /CN=localhost \
  -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
  -addext 'basicConstraints=critical,CA:FALSE' \
  -addext 'keyUsage=critical,digitalSignature' \
  -addext 'extendedKeyUsage=serverAuth' 2>/dev/null || die "openssl could not make the certificate"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# --- servers -------------------------------------------------------------
# start_qkeyd NAME SCHEME CONFIG [ARGS...]: sets PORT and SERVER_PID once the
# daemon logs that it listens.
start_qkeyd() {
  local name=$1 scheme=$2 config=$3 port log i pid
  shift 3
  port=$(free_port)
  log=$TMP/$name.log
  "$QKEYD" serve --config "$config" --state-dir "$TMP/$name-state" \
    --listen "127.0.0.1:$port" --log info "$@" </dev/null >/dev/null 2>"$log" &
  pid=$!
  PIDS+=("$pid")
  for ((i = 0; i < 300; i++)); do
    grep -qs "listening on $scheme://127.0.0.1:$port" "$log" && { PORT=$port; SERVER_PID=$pid; return 0; }
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$log" >&2; die "qkeyd ($name) exited at start"; }
    sleep 0.1
  done
  tail -n 20 "$log" >&2
  die "qkeyd ($name) did not log 'listening on $scheme://127.0.0.1:$port'"
}

cat >"$TMP/qkeyd-tls.toml" <<'EOF'
[[source]]
name = "os"
kind = "os"

[tls]
groups = "hybrid"
EOF
cat >"$TMP/qkeyd-plain.toml" <<'EOF'
[[source]]
name = "os"
kind = "os"
EOF
say "starting qkeyd over TLS and qkeyd over plain HTTP"
start_qkeyd qkeyd-tls https "$TMP/qkeyd-tls.toml" --tls-cert "$CERT" --tls-key "$KEY"
Q_TLS=$PORT
Q_TLS_PID=$SERVER_PID
start_qkeyd qkeyd-plain http "$TMP/qkeyd-plain.toml"
Q_PLAIN=$PORT
Q_PLAIN_PID=$SERVER_PID

N_PORT=$(free_port)
mkdir -p "$TMP/nginx/logs"
# The same size of body as qkeyd's answer to /v1/random?bytes=32 (64 hex + newline).
BODY=$(openssl rand -hex 32)
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 2;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  fastcgi_temp_path $TMP/nginx/fastcgi;
  uwsgi_temp_path $TMP/nginx/uwsgi;
  scgi_temp_path $TMP/nginx/scgi;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$N_PORT ssl;
    ssl_certificate $CERT;
    ssl_certificate_key $KEY;
    ssl_protocols TLSv1.3;
    ssl_ecdh_curve X25519;
    ssl_session_cache off;
    ssl_session_tickets off;
    location / {
      default_type text/plain;
      return 200 "$BODY\n";
    }
  }
}
EOF
say "starting nginx ($("$NGINX" -v 2>&1 | sed 's|.*/||'))"
"$NGINX" -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/logs/error.log" </dev/null \
  >"$TMP/nginx/stdout" 2>&1 &
PIDS+=("$!")
NGINX_PID=$!
for ((i = 0; i < 100; i++)); do
  "$PROBE" dial -addr "127.0.0.1:$N_PORT" -ca "$CERT" -timeout 1s >/dev/null 2>&1 && break
  kill -0 "$NGINX_PID" 2>/dev/null || { cat "$TMP/nginx/stdout" "$TMP/nginx/logs/error.log" >&2; die "nginx exited at start"; }
  sleep 0.1
done
# nginx's CPU time: the master's and its workers'.
mapfile -t NGINX_PIDS < <(echo "$NGINX_PID"; pgrep -P "$NGINX_PID")
[[ ${#NGINX_PIDS[@]} -ge 2 ]] || die "nginx has no worker processes"

# Each server answers before anything is timed.
check() { # WHAT DIAL-ARGS...
  local what=$1 out
  shift
  out=$("$PROBE" dial -ca "$CERT" "$@") || die "$what: $out"
  echo "$out" | grep -q '"status":200' || die "$what did not answer 200: $out"
  say "$what: $(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["version"], d["curve"])')"
}
check "qkeyd TLS, Go defaults" -addr "127.0.0.1:$Q_TLS" -path '/v1/random?bytes=32'
check "qkeyd TLS, X25519" -addr "127.0.0.1:$Q_TLS" -curves X25519 -path '/v1/random?bytes=32'
check "nginx" -addr "127.0.0.1:$N_PORT" -curves X25519 -path /
code=$(python3 - "$Q_PLAIN" <<'EOF'
import sys, urllib.request
print(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v1/random?bytes=32").status)
EOF
) || die "plain qkeyd does not answer"
[[ $code == 200 ]] || die "plain qkeyd answered $code"

# --- measurements --------------------------------------------------------
RES=$TMP/results
mkdir -p "$RES"
failed=0
# CPU time (user + system, clock ticks) the given processes have used so far.
cpu_ticks() {
  local pid t=0
  for pid in "$@"; do
    t=$((t + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo "$t"
}
# The server's CPU ticks while COMMAND runs go into FILE.
with_cpu() { # FILE "PIDS" COMMAND...
  local file=$1 pids=$2 before rc=0
  shift 2
  # shellcheck disable=SC2086 # a list of pids
  before=$(cpu_ticks $pids)
  "$@" || rc=$?
  # shellcheck disable=SC2086
  echo $(($(cpu_ticks $pids) - before)) >"$file"
  return "$rc"
}
handshakes() { # LABEL PORT CURVE ROUND "SERVER PIDS"
  local out=$RES/hs-$1-$4.json
  with_cpu "$RES/hs-$1-$4.cpu" "$5" \
    "$PROBE" handshakes -addr "127.0.0.1:$2" -ca "$CERT" -curves "$3" -c 4 -d "${SECS}s" >"$out" ||
    { say "handshakes $1 round $4 had errors: $(cat "$out")"; failed=1; }
  say "handshakes $1 round $4: $(cat "$out")"
}
wrk_run() { # LABEL URL ROUND "SERVER PIDS"
  local out=$RES/wrk-$1-$3.txt
  with_cpu "$RES/wrk-$1-$3.cpu" "$4" wrk -t2 -c16 -d"${SECS}s" --latency "$2" >"$out" 2>&1 ||
    { cat "$out" >&2; die "wrk failed on $2"; }
  if grep -qE 'Non-2xx|Socket errors' "$out"; then
    say "wrk $1 round $3 had errors:"
    grep -E 'Non-2xx|Socket errors' "$out" >&2
    failed=1
  fi
  say "wrk $1 round $3: $(grep Requests/sec "$out")"
}

for ((r = 1; r <= ROUNDS; r++)); do
  handshakes qkeyd-hybrid "$Q_TLS" X25519MLKEM768 "$r" "$Q_TLS_PID"
  handshakes qkeyd-x25519 "$Q_TLS" X25519 "$r" "$Q_TLS_PID"
  handshakes nginx-x25519 "$N_PORT" X25519 "$r" "${NGINX_PIDS[*]}"
done
for ((r = 1; r <= ROUNDS; r++)); do
  wrk_run qkeyd-tls "https://127.0.0.1:$Q_TLS/v1/random?bytes=32" "$r" "$Q_TLS_PID"
  wrk_run qkeyd-plain "http://127.0.0.1:$Q_PLAIN/v1/random?bytes=32" "$r" "$Q_PLAIN_PID"
  wrk_run nginx-tls "https://127.0.0.1:$N_PORT/" "$r" "${NGINX_PIDS[*]}"
done
for pid in "${PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || { say "a server died during the run (pid $pid)"; failed=1; }
done

# --- table ---------------------------------------------------------------
nginx_ver=$("$NGINX" -v 2>&1 | sed 's|.*/||')
ossl_ver=$(openssl version | awk '{print $2}')
go_ver=$(go version | awk '{print $3}')
echo
echo "== TLS benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, ${ROUNDS} rounds of ${SECS} s, median round shown, range of the rate over rounds) =="
halt=/sys/module/haltpoll/parameters/guest_halt_poll_ns
[[ -r $halt ]] && echo "guest_halt_poll_ns: $(cat "$halt")"
echo
python3 - "$RES" "$ROUNDS" "$(getconf CLK_TCK)" "$nginx_ver" "$ossl_ver" "$go_ver" <<'EOF'
import json, re, statistics, sys
res, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
nginx_ver, ossl_ver, go_ver = sys.argv[4:]

def fmt(x, nd=0):
    return f"{x:,.{nd}f}"

def rng(vals, nd=0):
    return f"{fmt(min(vals), nd)}–{fmt(max(vals), nd)}"

def cpu_us(path, count):
    """The server's CPU time per handshake or request, in µs."""
    return int(open(path).read()) / hz * 1e6 / max(count, 1)

def to_ms(v, unit):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

def load_hs(label, r):
    d = json.load(open(f"{res}/hs-{label}-{r}.json"))
    d["cpu_us"] = cpu_us(f"{res}/hs-{label}-{r}.cpu", d["handshakes"])
    return d

def load_wrk(label, r):
    t = open(f"{res}/wrk-{label}-{r}.txt").read()
    lat = {p: to_ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)}
    n = int(re.search(r"(\d+) requests in", t).group(1))
    return {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)),
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "cpu_us": cpu_us(f"{res}/wrk-{label}-{r}.cpu", n),
    }

def median_round(rows):
    return sorted(rows, key=lambda d: d["rate"])[(len(rows) - 1) // 2]

hs = {l: [load_hs(l, r) for r in range(1, rounds + 1)] for l in ("qkeyd-hybrid", "qkeyd-x25519", "nginx-x25519")}
wk = {l: [load_wrk(l, r) for r in range(1, rounds + 1)] for l in ("qkeyd-tls", "qkeyd-plain", "nginx-tls")}

def row(what, server, rows, unit):
    m = median_round(rows)
    print(f"| {what} | {server} | {fmt(m['rate'])}{unit} | {rng([d['rate'] for d in rows])} "
          f"| {m['p50_ms']:.2f} / {m['p99_ms']:.2f} | {m['cpu_us']:.0f} |")

def ratio_row(what, server, a, b, pct=False):
    rs = [x["rate"] / y["rate"] * (100 if pct else 1) for x, y in zip(a, b)]
    cs = [x["cpu_us"] / y["cpu_us"] for x, y in zip(a, b)]
    med = f"{statistics.median(rs):.1f}%" if pct else f"{statistics.median(rs):.2f}"
    span = f"{rng(rs, 1)}%" if pct else rng(rs, 2)
    print(f"| {what} | {server} | {med} | {span} | | {statistics.median(cs):.2f} |")

nginx = f"nginx {nginx_ver} (OpenSSL {ossl_ver}, 2 workers)"
print("| figure | server | rate (median round) | range over rounds | p50 / p99 ms (median round) | server CPU µs each (median round) |")
print("|---|---|---|---|---|---|")
row("full TLS 1.3 handshakes, X25519MLKEM768, 4 clients", "qkeyd", hs["qkeyd-hybrid"], "/s")
row("full TLS 1.3 handshakes, X25519, 4 clients", "qkeyd", hs["qkeyd-x25519"], "/s")
row("full TLS 1.3 handshakes, X25519, 4 clients", nginx, hs["nginx-x25519"], "/s")
ratio_row("X25519MLKEM768 / X25519 handshakes (rate; CPU), round by round", "qkeyd", hs["qkeyd-hybrid"], hs["qkeyd-x25519"])
ratio_row("X25519 handshakes qkeyd / nginx (rate; CPU), round by round", "", hs["qkeyd-x25519"], hs["nginx-x25519"])
row("`GET /v1/random?bytes=32`, wrk 16 connections, keep-alive, TLS 1.3", "qkeyd", wk["qkeyd-tls"], " req/s")
row("`GET /v1/random?bytes=32`, wrk 16 connections, keep-alive, plain HTTP", "qkeyd", wk["qkeyd-plain"], " req/s")
row("`return 200` (65-byte body), wrk 16 connections, keep-alive, TLS 1.3", nginx, wk["nginx-tls"], " req/s")
ratio_row("keep-alive TLS / plain HTTP (rate; CPU), round by round", "qkeyd", wk["qkeyd-tls"], wk["qkeyd-plain"], pct=True)
print()
print(f"Client for the handshakes: tests/tls/probe ({go_ver} crypto/tls, no session resumption, one group offered).")
print("Server CPU: user + system time of the server's processes during the round, per handshake or request.")
EOF

echo
echo "Commands (ports of this run):"
cat <<EOF
  qkeyd serve --config qkeyd-tls.toml --state-dir DIR --listen 127.0.0.1:$Q_TLS --tls-cert server.crt --tls-key server.key   # [tls] groups = "hybrid"
  qkeyd serve --config qkeyd-plain.toml --state-dir DIR --listen 127.0.0.1:$Q_PLAIN
  nginx -p PREFIX -c nginx.conf   # worker_processes 2; ssl_protocols TLSv1.3; ssl_ecdh_curve X25519; return 200
  tlsprobe handshakes -addr 127.0.0.1:$Q_TLS -ca server.crt -curves X25519MLKEM768 -c 4 -d ${SECS}s
  tlsprobe handshakes -addr 127.0.0.1:$Q_TLS -ca server.crt -curves X25519 -c 4 -d ${SECS}s
  tlsprobe handshakes -addr 127.0.0.1:$N_PORT -ca server.crt -curves X25519 -c 4 -d ${SECS}s
  wrk -t2 -c16 -d${SECS}s --latency 'https://127.0.0.1:$Q_TLS/v1/random?bytes=32'
  wrk -t2 -c16 -d${SECS}s --latency 'http://127.0.0.1:$Q_PLAIN/v1/random?bytes=32'
  wrk -t2 -c16 -d${SECS}s --latency 'https://127.0.0.1:$N_PORT/'
EOF
[[ $failed -eq 0 ]] || { echo "some measurements had errors (see above)" >&2; exit 1; }
