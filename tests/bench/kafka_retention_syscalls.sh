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
d=$(mktemp -d /tmp/sluice-retention-syscalls.XXXXXX)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$d"; }
trap cleanup EXIT
cat > "$d/c.conf" <<EOC
[server]
data_dir = $d/data
[cores]
worker_count = 2
[listeners]
kafka = 127.0.0.1:0
nats = off
amqp = off
[admin]
listen = off
[kafka]
retention_check_interval_ms = $interval
EOC
"$build/control/sluiced" --config "$d/c.conf" > "$d/log" 2>&1 &
pid=$!
for _ in $(seq 200); do [ -f "$d/data/ports.json" ] && break; sleep 0.05; done
port=$(/usr/bin/python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['kafka'])" "$d/data/ports.json")
/usr/bin/python3 - "$port" <<'EOP'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
a = AdminClient({'bootstrap.servers': '127.0.0.1:' + sys.argv[1]})
for t, f in a.create_topics([NewTopic('p200', num_partitions=200, replication_factor=1)]).items():
    f.result(30)
EOP
timeout -s INT 6 strace -f -c -p "$pid" -o "$d/strace.txt" >/dev/null 2>&1 || true
echo "retention_check_interval_ms = $interval"
awk 'NR<=2 || /total/ || ($4 > 0 && NF >= 5)' "$d/strace.txt"
