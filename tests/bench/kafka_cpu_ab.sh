#!/bin/bash
# A/B of sluiced's CPU cost per produced byte, for two sluiced binaries
# (e.g. a base build against this tree): the same produce run (1 KiB
# records, 2 connections, 1 MiB window, acks=all, fsync durability) on a
# fresh sluiced and data dir each, A and B interleaved ROUNDS times, counted
# with `perf stat -p` over the run: task-clock (CPU ms, all threads),
# context switches, page faults. CPU and switch counts, not wall time: they
# depend far less on how busy the shared cores are than MB/s does.
#   tests/bench/kafka_cpu_ab.sh SLUICED_A SLUICED_B [MIB] [SIZE]
#     (default 256 MiB of 1024 B records; ROUNDS=3, BUILD_DIR=build for sluice-bench,
#      CACHE_BYTES=auto: [kafka] cache_bytes)
# STEADY=SEGMENT_BYTES (e.g. 64m): as kafka.sh's STEADY, the run produces
# into a topic in its steady state (segment_bytes, retention 4 segments, 6
# segments per partition produced first, untimed), not a fresh one whose
# first fill also pays page faults and fresh extents; with CACHE_BYTES=128m
# the recent-data cache is recycling blocks by then too.
# One line per run, then the medians. Not a test.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build}
a_bin=$1 b_bin=$2
mib=${3:-256}
size=${4:-1024}
rounds=${ROUNDS:-3}
parent=${DATA_PARENT:-/var/tmp}
bench=$build/tools/sluice-bench
tmp=$(mktemp -d "$parent/sluice-cpu-ab.XXXXXX")
pid=""
. "$src/tests/bench/kafka_lib.sh"
trap 'kafka_sluiced_stop; rm -rf "$tmp"' EXIT

steady=${STEADY:-}
topic_args=""
if [ -n "$steady" ]; then
	kafka_steady_conf "$steady"
	topic_args="--topic steady"
fi

run() { # SLUICED: prints "task_ms switches faults MB/s" of one produce run
	kafka_sluiced_start "$1" "${CACHE_BYTES:-auto}"
	if [ -n "$steady" ]; then
		"$bench" kafka produce --url "127.0.0.1:$kport" $topic_args --size "$size" -n 2 \
			--window 1M --count $((6 * 2 * seg / size)) --json >/dev/null
	fi
	perf stat -x, -e task-clock,context-switches,page-faults -p "$pid" -o "$tmp/stat" &
	local sp=$!
	"$bench" kafka produce --url "127.0.0.1:$kport" $topic_args --size "$size" -n 2 --window 1M \
		--count $((mib * 1024 * 1024 / size)) --json >"$tmp/out"
	kill -INT "$sp"
	wait "$sp" || true
	kafka_sluiced_stop
	awk -F, -v mbs="$(jq -r .mb_per_s "$tmp/out")" '
		$3 == "task-clock" {t = $1} $3 == "context-switches" {c = $1} $3 == "page-faults" {f = $1}
		END {printf "%.0f %d %d %s\n", t, c, f, mbs}' "$tmp/stat"
}

median() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
: >"$tmp/a"
: >"$tmp/b"
for r in $(seq "$rounds"); do
	a=$(run "$a_bin")
	b=$(run "$b_bin")
	echo "round $r: A $a | B $b   (task-clock ms, context switches, page faults, MB/s)"
	echo "$a" >>"$tmp/a"
	echo "$b" >>"$tmp/b"
done
for k in a b; do
	printf '%s median: task-clock %s ms, %s context switches, %s page faults, %s MB/s\n' \
		"$(echo "$k" | tr ab AB)" "$(cut -d' ' -f1 "$tmp/$k" | median)" "$(cut -d' ' -f2 "$tmp/$k" | median)" \
		"$(cut -d' ' -f3 "$tmp/$k" | median)" "$(cut -d' ' -f4 "$tmp/$k" | median)"
done
echo "(${mib} MiB of ${size} B records per run; load average $(cut -d' ' -f1-3 /proc/loadavg))"
