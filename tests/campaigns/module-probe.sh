#!/usr/bin/env bash
# The module socket probed as an attacker on the same host would: 300
# connections that say nothing, then 300 that announce 16 MiB + 1000 bytes and
# send a few, then 300 that start the largest request there is (a 1 MiB Sign)
# and trickle it. Meanwhile a client of another uid (65534) draws random bytes
# through libqkeyd_pkcs11.so with pkcs11-tool. Prints the daemon's RSS
# (baseline, peak, after), what was refused or closed, and the log lines.
#
#   tests/campaigns/module-probe.sh
set -euo pipefail
source "$(dirname "$0")/lib.sh"
campaign_tmp
build_release -p qkeyd -p qkeyd-pkcs11

open=$CAMPAIGN_TMP/open
mkdir -p "$open" && chmod 755 "$CAMPAIGN_TMP" "$open"
cp "${QKEYD_PKCS11_MODULE:-$CAMPAIGN_ROOT/target/release/libqkeyd_pkcs11.so}" "$open/"
echo "5678-probe" >"$CAMPAIGN_TMP/pin"

# run_probe NAME MODULE_SETTINGS PHASE
run_probe() {
  local name=$1 settings=$2 phase=$3 log=$CAMPAIGN_TMP/$1.log
  cat >"$CAMPAIGN_TMP/$name.toml" <<TOML
[[source]]
name = "os"
kind = "os"

[module]
socket = "$open/$name.sock"
socket_mode = "0666"
allowed_uids = [65534]
pin_file = "$CAMPAIGN_TMP/pin"
$settings
TOML
  start_qkeyd "$CAMPAIGN_TMP/$name.toml" "$CAMPAIGN_TMP/$name-state" "$log"
  python3 - "$open/$name.sock" "$QKEYD_PID" "$phase" "$open/libqkeyd_pkcs11.so" <<'PY'
import os, socket, struct, subprocess, sys, threading, time
path, pid, phase, module = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def rss():
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) // 1024
peak = [rss()]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.05)
baseline = rss()
threading.Thread(target=sample, daemon=True).start()
conns = []
for i in range(300):
    c = socket.socket(socket.AF_UNIX); c.connect(path); conns.append(c)
    if phase == "oversized":
        c.sendall(struct.pack(">I", (16 << 20) + 1000) + bytes([(7, 3, 200)[i % 3]]) + b"abc")
    elif phase == "trickle":
        # A Sign of 1 MiB + 300 bytes: tag, a key reference, then the
        # message's length and its first kilobyte.
        c.sendall(struct.pack(">I", (1 << 20) + 300) + b"\x07" + struct.pack(">I", 4) + b"ab/1"
                  + struct.pack(">I", 1 << 20) + b"\0" * 1024)
t0 = time.time()
p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                    "pkcs11-tool", "--module", module, "--generate-random", "16"],
                   env={"PATH": "/usr/bin:/bin", "QKEYD_MODULE_SOCKET": path},
                   capture_output=True)
other = "served" if p.returncode == 0 and len(p.stdout) == 16 else f"FAILED {p.stderr!r}"
during = rss()
closed = 0
deadline = time.time() + 30
for c in conns:
    c.settimeout(max(0.01, deadline - time.time()))
    try:
        if c.recv(1) == b"": closed += 1
    except ConnectionResetError: closed += 1
    except socket.timeout: pass
    c.close()
took = time.time() - t0
time.sleep(2)
stop.set()
print(f"{phase}: RSS MB baseline {baseline}, during {during}, peak {peak[0]}, after {rss()}; "
      f"uid 65534 {other}; {closed}/300 closed by qkeyd within {took:.1f} s")
PY
  curl -s "http://$QKEYD_ADDR/metrics" | grep -E '^qkeyd_(connections_refused|module_connections_closed)_total' | sed 's/^/  /'
  echo "  log lines 'connection refused': $(grep -c 'connection refused' "$log" || true)"
  stop_qkeyd
}

run_probe idle "" idle
run_probe oversized "max_connections = 512
max_connections_per_uid = 512" oversized
run_probe trickle "max_connections = 512
max_connections_per_uid = 512" trickle
