#!/usr/bin/env bash
# kill -9 campaign: ROUNDS times (default 1000), start a qkeyd of its own on one
# temporary state directory (KMS plugin on), fire key create/rotate/destroy,
# KMS KEK rotate/retire and KMS Encrypt requests at it, SIGKILL it after a
# random delay (0-120 ms) and start it again. After each restart it checks:
# the daemon started; every acknowledged key is there, at its acknowledged
# version, and works; acknowledged destructions stuck; every listed key
# version has its create/rotate line in audit.log and every stored line a
# listed version; audit.log is whole JSON lines; nothing half-written is
# left; acknowledged KEK rotations and retirements stuck and acknowledged
# Encrypts decrypt. Prints rounds, failures (state directories kept), the
# operations acknowledged and cut short, and restart times (spawn to
# "listening"); exit status 1 on any failure. The work is done by
# tests/src/bin/kill9_campaign.rs (checks in tests/src/kill9.rs); the e2e
# suite runs 25 rounds of it (keys::kill_minus_nine_*).
#
#   tests/campaigns/kill9.sh [ROUNDS] [--seed N] [--max-delay-ms N] [--verbose]
#
# Builds release binaries (one cargo build at a time: cargo's lock on target/
# serialises it with any other build). QKEYD_BIN overrides the daemon.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-1000}
[[ $rounds =~ ^[0-9]+$ ]] || { echo "kill9: ROUNDS must be a number, got '$rounds'" >&2; exit 2; }
shift || true
(cd "$root" && cargo build --release --quiet -p qkeyd --bin qkeyd -p qkeyd-e2e --bin kill9_campaign)
QKEYD_BIN=${QKEYD_BIN:-$root/target/release/qkeyd} exec "$root/target/release/kill9_campaign" "$rounds" "$@"
