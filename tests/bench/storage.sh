#!/bin/sh
# Storage benchmark (issue 4): builds bench_storage and runs it on one file
# system. O_DIRECT needs a real disk file system (ext4 here), not tmpfs.
#   tests/bench/storage.sh [DATA_DIR] [SECONDS_PER_RUN] [PARTITIONS MIB_EACH]
# Prints markdown for tests/bench/RESULTS.md. Needs ~3 GiB free, plus
# PARTITIONS * MIB_EACH for the start-up run (default 1000 x 10 MiB = 10 GiB;
# PARTITIONS 0 skips it).
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build-bench}
dir=${1:-/var/tmp/sluice-bench-$$}
secs=${2:-1}
parts=${3:-1000}
mib=${4:-10}
[ -d "$build" ] || meson setup "$build" "$src" >/dev/null
ninja -C "$build" tests/unit/storage/bench_storage >/dev/null
fstype=$(findmnt -no FSTYPE -T "$(dirname "$dir")" 2>/dev/null || stat -f -c %T "$(dirname "$dir")")
if [ "$fstype" = tmpfs ]; then
	echo "storage.sh: $dir is on tmpfs, which has no O_DIRECT; pick a disk" >&2
	exit 1
fi
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
echo "Machine: $(nproc) vCPU, $(uname -r), file system $fstype ($(df -h "$dir" | awk 'NR==2{print $1}'))"
echo
"$build/tests/unit/storage/bench_storage" "$dir" "$secs"
echo
# the same rows on a log in its steady state under retention (64 MiB
# segments, 64 MiB retained): every roll writes over a recycled segment file
echo "Steady state (BENCH_STEADY=1: retention recycles segment files):"
echo
BENCH_STEADY=1 "$build/tests/unit/storage/bench_storage" "$dir" "$secs"
echo
"$build/tests/unit/storage/bench_storage" --crc
echo
# where a fsync'd 1 MiB append's time goes: never-written vs written blocks
"$build/tests/unit/storage/bench_storage" "$dir" --extents 300
echo
# PARTITIONS 0 skips the start-up run (it needs PARTITIONS * MIB_EACH free)
if [ "$parts" -gt 0 ]; then
	echo
	"$build/tests/unit/storage/bench_storage" "$dir" --startup "$parts" "$mib"
fi
