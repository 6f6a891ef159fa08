#!/bin/sh
# Zero-fill A/B for issue 4 (tests/bench/RESULTS.md, Storage): one bench_storage row with
# zero-fill off and on, interleaved, counting per fdatasync the metadata block writes and
# unwritten-extent writes issued by the bench's own threads (perf tracepoints; needs root).
# Load on a shared machine moves MB/s a lot; these counts do not depend on it.
#   tests/bench/storage_zero_ab.sh DATA_DIR [ROUNDS] [ROW...]   (BUILD_DIR as in storage.sh)
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build}
dir=${1:?data dir on a disk file system}
rounds=${2:-3}
shift $(($# >= 2 ? 2 : $#))
[ $# -gt 0 ] || set -- "fsync 1 16" "fsync 1 256" "fsync 64 1" "fsync 64 16" "fsync 1x5 16" "fsync 1 1024"
ninja -C "$build" tests/unit/storage/bench_storage >/dev/null
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
r=0
while [ $r -lt "$rounds" ]; do
	r=$((r + 1))
	for row in "$@"; do
		for z in 0 8388608; do
			BENCH_SKIP_RAW=1 BENCH_ZERO_AHEAD=$z BENCH_ONLY="$row" perf stat -x, \
				-e ext4:ext4_sync_file_enter \
				-e block:block_rq_issue --filter 'rwbs ~ "*M*"' \
				-e ext4:ext4_ext_handle_unwritten_extents \
				"$build/tests/unit/storage/bench_storage" "$dir" 1 2>&1 |
				awk -F, -v z="$z" -v row="$row" '
/^\| fsync/ {split($0,c,"|"); mbs=c[6]; aps=c[7]; p50=c[11]; p99=c[12]}
/sync_file_enter/ {fs=$1} /block_rq_issue/ {md=$1} /unwritten/ {uw=$1}
END {printf "%-14s z=%-8s MB/s %5s appends/s %6s ack p50 %5s p99 %6s | fdatasyncs %5d metadata writes/fdatasync %.2f unwritten-extent writes/fdatasync %.2f\n", row, z, mbs, aps, p50, p99, fs, fs?md/fs:0, fs?uw/fs:0}'
		done
	done
done
