#!/usr/bin/env bash
# KMS fault campaign: a qkeyd of its own with a SoftHSM2 KEK (temporary token
# and state directory), its KMS v2 unix socket driven at concurrency 64 for
# SECONDS while the token is taken away and put back twice, without restarting
# the daemon. Every Encrypt is decrypted and compared: each answer must be a
# correct round trip or a gRPC error, never a wrong plaintext. Prints calls,
# errors by code, wrong answers (must be 0) and the recovery time after each
# restore. The work is done by tests/src/bin/kms_campaign.rs.
#
#   tests/campaigns/kms-faults.sh [SECONDS] [--concurrency N] [--outage SECONDS]
#   (default 600 s; the token stays away SECONDS/10, 3 to 30 s)
source "$(dirname "$0")/lib.sh"

secs=$(duration_arg "${1:-}" 600)
shift || true
command -v softhsm2-util >/dev/null || die "softhsm2-util is needed (Debian package softhsm2)"
build_release -p qkeyd --bin qkeyd
build_release -p qkeyd-e2e --bin kms_campaign
QKEYD_BIN=$(qkeyd_bin) exec "$CAMPAIGN_ROOT/target/release/kms_campaign" "$secs" "$@"
