#!/bin/sh
# Runs the full backends benchmark (about an hour, as root, on an otherwise idle machine)
# and writes docs/benchmarks.md from it: the machine, the command, the headline table of
# this module against a plain share, every table of the run, and its charts
# (docs/benchmarks/*.png, with the run's CSVs and report beside them).
#
#   scripts/benchmarks.sh [benchmark options, e.g. --repeats 5]
#   scripts/benchmarks.sh --from-report   # only rewrite docs/benchmarks.md from the last run
#
# The reading of the results (docs/benchmarks-reading.md) is written by hand and included
# as it is: look at it again when the figures change.
set -eu
cd "$(dirname "$0")/.."
out=docs/benchmarks
mkdir -p "$out"
if [ "${1:-}" != "--from-report" ]; then
	cargo build --release
	started=$(date -u '+%Y-%m-%d %H:%M UTC')
	cargo bench --bench backends -- --csv "$out/results.csv" --png "$out" "$@" \
		2>&1 | tee "$out/report.txt"
	printf '%s\n' "$started" >"$out/started"
	printf 'cargo bench --bench backends -- --csv %s/results.csv --png %s%s\n' \
		"$out" "$out" "${*:+ $*}" >"$out/command"
	{
		echo "cpu: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
		echo "cores: $(nproc)"
		echo "memory: $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)"
		echo "kernel: $(uname -r)"
		echo "samba: $(smbd -V 2>/dev/null || echo unknown)"
		echo "file system: $(findmnt -no FSTYPE --target "${TMPDIR:-/tmp}") (the shares' directories), XFS on a loop-mounted image"
		echo "free page reporting: $([ -e /sys/module/page_reporting/parameters/reported_kib ] && echo yes || echo no)"
		echo "commit: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src benches || echo ' (with local changes)')"
	} >"$out/machine"
fi
python3 scripts/benchmarks-doc.py "$out" >docs/benchmarks.md
echo "wrote docs/benchmarks.md"
