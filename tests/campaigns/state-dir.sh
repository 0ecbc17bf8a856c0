#!/usr/bin/env bash
# State-directory fault campaign: runs the e2e test
# state_dir::a_full_or_read_only_state_dir_fails_clearly_and_recovers, which
# puts a qkeyd's state directory on a 4 MiB tmpfs, fills it, makes it
# read-only (live and at start), and checks that key creation, key rotation
# and KEK rotation fail with a clear error, leave nothing half-written, and
# work again once the disk is back; every deviation is printed as
# "FINDING: ...". Root only (mount); the test says why it skipped otherwise.
# It takes no duration: it runs each step once (about 20 s).
#
#   tests/campaigns/state-dir.sh
source "$(dirname "$0")/lib.sh"

cd "$CAMPAIGN_ROOT"
exec cargo test -p qkeyd-e2e --all-features --test e2e -- \
  state_dir::a_full_or_read_only_state_dir_fails_clearly_and_recovers --exact --nocapture
