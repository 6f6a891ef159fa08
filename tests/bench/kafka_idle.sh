#!/bin/bash
# sluiced CPU per Kafka run (the "idle while I/O in flight" A/B): one
# `sluice-bench kafka produce` and one `kafka consume` (fill + read) of MIB
# MiB of SIZE-byte records against a fresh sluiced (2 workers, 2 partitions
# per topic, fsync durability: kafka.sh's set-up), printing MB/s, produce
# latency, sluiced's user+sys CPU seconds (/proc/PID/stat) and the workers'
# sleeps (sluice_worker_sleeps_total) for each run. Give it any sluiced
# binary to compare builds:
#   tests/bench/kafka_idle.sh SLUICED [SIZE=1024] [MIB=256]
# Only the sluiced started here is stopped; DATA_PARENT (default /var/tmp)
# must be a disk. Not a test: numbers never fail anything.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
sluiced=$1
size=${2:-1024}
mib=${3:-256}
bench=${SLUICE_BENCH:-$src/build/tools/sluice-bench}
tmp=$(mktemp -d "${DATA_PARENT:-/var/tmp}/sluice-kafka-idle.XXXXXX")
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
. "$src/tests/bench/kafka_lib.sh"
kafka_sluiced_start "$sluiced"
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$pid/stat"; }
sleeps() { curl -s "127.0.0.1:$aport/metrics" | awk '$1 ~ /^sluice_worker_sleeps_total/ {s += $2} END {print s + 0}'; }
count=$((mib * 1024 * 1024 / size))
c0=$(cpu) s0=$(sleeps)
p=$("$bench" kafka produce --url "127.0.0.1:$kport" --size "$size" -n 2 --window 1M --count "$count" --json)
c1=$(cpu) s1=$(sleeps)
c=$("$bench" kafka consume --url "127.0.0.1:$kport" --size "$size" -n 2 --window 1M --count "$count" --json)
c2=$(cpu) s2=$(sleeps)
echo "size $size: produce $(echo "$p" | jq .mb_per_s) MB/s p50 $(echo "$p" | jq .p50_us) us p99 $(echo "$p" | jq .p99_us) us" \
	"cpu $(awk -v a="$c1" -v b="$c0" 'BEGIN{print a - b}') s sleeps $((s1 - s0)) |" \
	"consume $(echo "$c" | jq .mb_per_s) MB/s cpu $(awk -v a="$c2" -v b="$c1" 'BEGIN{print a - b}') s sleeps $((s2 - s1))"
