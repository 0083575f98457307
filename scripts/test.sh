#!/usr/bin/env bash
# Runs every test: installs what is missing, checks formatting and lints, then runs the
# unit tests and the integration tests (real smbd in private namespaces, real clients).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [[ -x scripts/samba-rootfs.sh ]]; then
	scripts/samba-rootfs.sh >/dev/null # Samba 4.22 root file system, cached after the first run
fi

cargo fmt --check
cargo clippy --all-targets -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# One build (the test profile: debug assertions and overflow checks on), used by every test.
status=0
cargo test --no-fail-fast -- "$@" 2>&1 | tee "$log" || status=$?

# One closing line for all test binaries together.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) ig += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed, %d ignored\n", p, f, ig; if (p == 0) exit 1 }' "$log" || status=1
exit "$status"
