#!/bin/bash
# What the recent-data cache costs the produce path: sluiced's CPU seconds
# (user+sys, all threads, /proc/PID/stat) for the same produce run with
# [kafka] cache_bytes = 0 (write-through off) and with the given budget,
# alternated ROUNDS times on a fresh sluiced and data dir each, so a load
# change on the shared machine hits both alike. CPU seconds, not wall time:
# they do not depend on how busy the other cores are.
#   tests/bench/kafka_cache_cost.sh [MIB] [SIZE]   (default 256 MiB of 1024 B records;
#                                                   CACHE_BYTES=auto, ROUNDS=3, BUILD_DIR=build)
# Prints one line per run and the medians. Not a test.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build}
mib=${1:-256}
size=${2:-1024}
rounds=${ROUNDS:-3}
cache=${CACHE_BYTES:-auto}
parent=${DATA_PARENT:-/var/tmp}
bench=$build/tools/sluice-bench
tmp=$(mktemp -d "$parent/sluice-cache-cost.XXXXXX")
pid=""
. "$src/tests/bench/kafka_lib.sh"
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

run() { # CACHE_BYTES: prints sluiced CPU seconds of one produce run
	local hz c0 c1
	kafka_sluiced_start "$build/control/sluiced" "$1"
	hz=$(getconf CLK_TCK)
	c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	"$bench" kafka produce --url "127.0.0.1:$kport" --size "$size" -n 2 --window 1M \
		--count $((mib * 1024 * 1024 / size)) --json >"$tmp/out"
	c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	kafka_sluiced_stop
	awk -v a="$c1" -v b="$c0" -v hz="$hz" 'BEGIN{printf "%.2f\n", (a - b) / hz}'
}

off="" on=""
for r in $(seq "$rounds"); do
	a=$(run 0)
	b=$(run "$cache")
	echo "round $r: cache_bytes=0 ${a} s, cache_bytes=$cache ${b} s ($(jq -r .mb_per_s "$tmp/out") MB/s)"
	off="$off $a" on="$on $b"
done
median() { echo "$@" | tr ' ' '\n' | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
echo "median sluiced CPU s per ${mib} MiB produce of ${size} B records: cache_bytes=0 $(median $off), cache_bytes=$cache $(median $on)"
