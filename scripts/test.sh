#!/usr/bin/env bash
# Runs every test: installs what is missing, checks formatting and lints, then runs the
# unit tests and the integration tests (real smbd in private namespaces, real clients).
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
# The other Samba releases, each in a root file system built once (about 60 s each) and
# cached outside the repository: bookworm-backports, trixie, trixie-backports, sid.
releases=(4.22.6 4.22.11 4.24.7 4.25.1)
roots=()
for release in "${releases[@]}"; do
	roots+=("$(scripts/testing/samba-rootfs.sh "$release")")
done

cargo fmt --check
cargo clippy --all-targets -- -D warnings

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# One build of the module (the dev profile: debug assertions and overflow checks on), used
# by every test: `cargo test` alone leaves the cdylib only under target/debug/deps.
cargo build
status=0
# Includes tests/cluster.rs: a two-node CTDB cluster, about 60 s (its own deadline: 20 min).
cargo test --no-fail-fast -- "$@" 2>&1 | tee "$log" || status=$?

# (tests/privileges.rs runs on the host's Samba only: it loop-mounts file systems under
# the shares and preloads a ballast into smbd, which a chrooted smbd would not see.)
# The tests that drive a real smbd once more per release (its smbd chrooted into that
# release's root file system, see tests/common/samba_root.rs) with the same module build:
# one build serves every release.
for rootfs in "${roots[@]}"; do
	echo "== the smbd tests again, against $(cat "$rootfs/.aio_fork-rootfs-complete") =="
	AIO_FORK_SAMBA_ROOT=$rootfs cargo test --no-fail-fast \
		--test transfers --test smbtorture_suites --test culling --test stacking --test security \
		--test profile_counters -- "$@" 2>&1 | tee -a "$log" ||
		status=$?
done

# One closing line for all test binaries together.
# (Namespaced tests echo their inner run indented, so only top-level results count.)
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) ig += $(i-1) } }
     END { printf "\ntests: %d passed, %d failed, %d skipped\n", p, f, ig; if (p == 0) exit 1 }' "$log" || status=1
exit "$status"
