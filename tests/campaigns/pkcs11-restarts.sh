#!/usr/bin/env bash
# PKCS#11 fault campaign: a qkeyd of its own serving the module socket
# (temporary state directory), 8 processes × 4 threads using
# libqkeyd_pkcs11.so through the cryptoki crate for SECONDS, drawing random
# bytes (C_GenerateRandom) and signing with an ML-DSA-65 token key (logged in
# with the PIN), while the daemon is restarted twice (SIGTERM, then SIGKILL).
# Checks that no 32-byte output block repeats across all processes, that only
# documented return codes come back (each CKR_* seen is listed with its
# count), that every signature verifies, and that neither the daemon nor the
# clients leak file descriptors. The work is done by
# tests/src/bin/p11_campaign.rs.
#
#   tests/campaigns/pkcs11-restarts.sh [SECONDS] [--procs N] [--threads N] [--rate N]
#   (default 600 s, 8 × 4, 50 iterations/s per thread)
source "$(dirname "$0")/lib.sh"

secs=$(duration_arg "${1:-}" 600)
shift || true
build_release -p qkeyd --bin qkeyd
build_release -p qkeyd-pkcs11 --lib
build_release -p qkeyd-e2e --bin p11_campaign
QKEYD_BIN=$(qkeyd_bin) \
  QKEYD_PKCS11_MODULE=${QKEYD_PKCS11_MODULE:-$CAMPAIGN_ROOT/target/release/libqkeyd_pkcs11.so} \
  exec "$CAMPAIGN_ROOT/target/release/p11_campaign" "$secs" "$@"
