#!/bin/sh
# Load-independent evidence for the storage write path: per bench row, the
# io_uring requests bench_storage submits, how many io_uring punted to io-wq
# (io_uring_queue_async_work), the fallocates and the fdatasyncs, counted
# from perf tracepoints; MB/s and bytes per fdatasync from the bench itself
# (those two depend on load). With BASE_BUILD, the same rows of another
# build's bench_storage run interleaved with this one ("base", "new").
#   tests/bench/storage_punts.sh DIR [ROUNDS] [ROW...]
#   e.g. BASE_BUILD=/tmp/base/build tests/bench/storage_punts.sh /var/tmp/sb 2 "fsync 1 1024"
# Rows are BENCH_ONLY names ("fsync 1 1024", "none 1x5 256"); SECS (1) per run.
# Prints markdown rows for tests/bench/RESULTS.md. Needs perf and root.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build-bench}
dir=${1:?usage: storage_punts.sh DIR [ROUNDS] [ROW...]}
rounds=${2:-1}
[ $# -ge 2 ] && shift 2 || shift $#
[ $# -gt 0 ] || set -- "fsync 1 1024" "fsync 1x5 256" "fsync 64 16" "none 64 1024" "interval 1x5 1024"
[ -d "$build" ] || meson setup "$build" "$src" >/dev/null
ninja -C "$build" tests/unit/storage/bench_storage >/dev/null
mkdir -p "$dir"
data=$(mktemp)
trap 'rm -f "$data"; rm -rf "$dir"' EXIT
builds="new"
[ -n "${BASE_BUILD:-}" ] && builds="base new"
echo "| row | build | MB/s | bytes/fsync | writes | punted to io-wq | fallocates | fdatasyncs |"
echo "|---|---|---|---|---|---|---|---|"
for row in "$@"; do
	for _ in $(seq "$rounds"); do
		for b in $builds; do
			bin=$build/tests/unit/storage/bench_storage
			[ "$b" = base ] && bin=$BASE_BUILD/tests/unit/storage/bench_storage
			out=$(BENCH_SKIP_RAW=1 BENCH_ONLY="$row" perf record -q -o "$data" \
				-e io_uring:io_uring_submit_req -e io_uring:io_uring_queue_async_work \
				"$bin" "$dir" "${SECS:-1}" 2>/dev/null | grep '^| [fin]')
			counts=$(perf script -i "$data" -F event,trace 2>/dev/null | awk '
				/submit_req/ && /opcode WRITE/ {w++}
				/queue_async_work/ && /opcode WRITE/ {wp++}
				/submit_req/ && /opcode FALLOCATE/ {fa++}
				/submit_req/ && /opcode FSYNC/ {fs++}
				END {printf "%d | %d (%.0f%%) | %d | %d", w, wp, w ? 100 * wp / w : 0, fa, fs}')
			echo "$out" | awk -F'|' -v row="$row" -v b="$b" -v c="$counts" \
				'{gsub(/ /, "", $6); gsub(/ /, "", $9); printf "| %s | %s | %s | %s | %s |\n", row, b, $6, $9, c}'
		done
	done
done
