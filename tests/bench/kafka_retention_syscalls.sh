#!/bin/bash
# System calls of an idle sluiced with a 200-partition Kafka topic over 2
# workers, counted by strace -f -c for 6 s: run it with two retention check
# intervals to see what the worker's retention check costs in system calls.
#   tests/bench/kafka_retention_syscalls.sh INTERVAL_MS   (BUILD_DIR=build)
# Only the sluiced started here is stopped; its temp dir is removed.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build}
interval=${1:?retention_check_interval_ms}
tmp=$(mktemp -d /tmp/sluice-retention-syscalls.XXXXXX)
pid=""
. "$src/tests/bench/kafka_lib.sh"
trap 'kafka_sluiced_stop; rm -rf "$tmp"' EXIT
KAFKA_EXTRA_CONF="retention_check_interval_ms = $interval" kafka_sluiced_start "$build/control/sluiced"
/usr/bin/python3 - "$kport" <<'EOP'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({'bootstrap.servers': '127.0.0.1:' + sys.argv[1]})
for t, f in a.create_topics([NewTopic('p200', num_partitions=200, replication_factor=1)]).items():
    f.result(30)
EOP
timeout -s INT 6 strace -f -c -p "$pid" -o "$tmp/strace.txt" >/dev/null 2>&1 || true
echo "retention_check_interval_ms = $interval"
awk 'NR<=2 || /total/ || ($4 > 0 && NF >= 5)' "$tmp/strace.txt"
