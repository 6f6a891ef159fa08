#!/bin/bash
# NATS benchmark (issue 3): the same sluice-bench workloads against sluiced and
# nats-server on this machine in one run; writes the `## NATS` section of
# tests/bench/RESULTS.md. Not a test: numbers never fail anything.
#   tests/bench/nats.sh [SECONDS_PER_RUN]   (default 1; BUILD_DIR=build-bench in the tree)
# Throughput runs are repeated REPEAT times (default 2, best kept: other work on
# a shared machine only ever slows a run down); reqrep runs RR_SECS (default 2).
# Brokers run on free ports with temp dirs; only the ones started here are stopped.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build-bench}
secs=${1:-1}
repeat=${REPEAT:-2}
rr_secs=${RR_SECS:-2}
sizes=${SIZES:-"16 128 1024 16384 65536"}
modes=${MODES:-"pub pubsub fanout queue reqrep"}
results=${RESULTS:-$src/tests/bench/RESULTS.md}
py=/usr/bin/python3

[ -d "$build" ] || meson setup "$build" "$src" >/dev/null
ninja -C "$build" control/sluiced tools/sluice-bench >/dev/null
bench=$build/tools/sluice-bench
sluiced=$build/control/sluiced
ncpu=$(nproc)

tmp=$(mktemp -d /tmp/sluice-bench-nats.XXXXXX)
pids=""
cleanup() {
	for p in $pids; do
		kill "$p" 2>/dev/null || true
	done
	for p in $pids; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$tmp"
}
trap cleanup EXIT

wait_for() { # FILE PATTERN: poll (bounded) until FILE holds PATTERN
	for _ in $(seq 200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "nats.sh: timed out waiting for '$2' in $1" >&2
	return 1
}

# start_sluiced NAME CORES_LINE [TASKSET_CPUS]: sets port_NAME and pid_NAME
start_sluiced() {
	local name=$1 cores=$2 cpus=${3:-}
	mkdir -p "$tmp/$name"
	cat >"$tmp/$name/sluiced.conf" <<EOF
[server]
data_dir = $tmp/$name/data
[cores]
$cores
[listeners]
nats = 127.0.0.1:0
[admin]
listen = 127.0.0.1:0
EOF
	if [ -n "$cpus" ]; then
		taskset -c "$cpus" "$sluiced" --config "$tmp/$name/sluiced.conf" >"$tmp/$name/log" 2>&1 &
	else
		"$sluiced" --config "$tmp/$name/sluiced.conf" >"$tmp/$name/log" 2>&1 &
	fi
	local pid=$!
	pids="$pids $pid"
	wait_for "$tmp/$name/data/ports.json" '"nats"'
	eval "pid_$name=$pid port_$name=$(jq .nats "$tmp/$name/data/ports.json")"
}

# start_nats NAME [TASKSET_CPUS [GOMAXPROCS]]: random port, read back from its log
start_nats() {
	local name=$1 cpus=${2:-} procs=${3:-}
	mkdir -p "$tmp/$name"
	if [ -n "$cpus" ]; then
		taskset -c "$cpus" nats-server -a 127.0.0.1 -p -1 -l "$tmp/$name/log" &
	else
		env ${procs:+GOMAXPROCS=$procs} nats-server -a 127.0.0.1 -p -1 -l "$tmp/$name/log" &
	fi
	local pid=$!
	pids="$pids $pid"
	wait_for "$tmp/$name/log" 'Listening for client connections'
	local port
	port=$(sed -n 's/.*Listening for client connections on .*:\([0-9]*\)$/\1/p' "$tmp/$name/log")
	eval "pid_$name=$pid port_$name=$port"
}

cpu_s() { # user+system seconds of PID, all threads
	sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($12 + $13) / hz}'
}

# Two ways to share the 2 vCPUs:
#   one: the broker (every thread) on CPU 0, sluice-bench on CPU 1
#   two: sluiced with 2 pinned workers, nats-server with GOMAXPROCS=2, and
#        sluice-bench unpinned: broker and generator share both cores
#   free (reqrep only): one unpinned sluiced worker, nats-server with
#        GOMAXPROCS=1, nothing pinned: the scheduler may put client and broker
#        on one CPU, which a latency test across pinned CPUs never sees
if [ "$ncpu" -ge 2 ]; then
	start_sluiced s1 "workers = 0" 0
	start_nats n1 0
	start_sluiced s2 "workers = 0-1"
	start_nats n2
	start_sluiced s3 "worker_count = 1"
	start_nats n3 "" 1
	configs="one two free"
else
	start_sluiced s1 "worker_count = 1"
	start_nats n1
	configs="one"
fi

run() { # CONFIG BROKER NAME MODE SIZE
	local cfg=$1 broker=$2 name=$3 mode=$4 size=$5 pin="" extra="" dur=$secs
	local pid port before after out
	eval "pid=\$pid_$name port=\$port_$name"
	[ "$cfg" = one ] && pin="taskset -c 1"
	case $mode in fanout | queue) extra="-n 4" ;; reqrep) dur=$rr_secs ;; esac
	before=$(cpu_s "$pid")
	if ! out=$($pin "$bench" nats "$mode" $extra --url "127.0.0.1:$port" --size "$size" \
		--duration "$dur" --json); then
		echo "nats.sh: $broker $mode $size failed: $out" >&2
		out='{"failed":true}'
	fi
	after=$(cpu_s "$pid")
	echo "$out" | jq -c --arg cfg "$cfg" --arg broker "$broker" --arg mode "$mode" \
		--argjson size "$size" --argjson cpu "$(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.3f", a - b}')" \
		'. + {cfg: $cfg, broker: $broker, mode: $mode, size: $size, broker_cpu_s: $cpu}' \
		>>"$tmp/results.jsonl"
}

started=$(date -u '+%Y-%m-%d %H:%M UTC')
t0=$(date +%s)
for mode in $modes; do
	for size in $sizes; do
		reps=$repeat
		[ "$mode" = reqrep ] && reps=1
		for cfg in $configs; do
			[ "$cfg" = free ] && [ "$mode" != reqrep ] && continue
			i=$(echo "$configs" | tr ' ' '\n' | grep -n "^$cfg\$" | cut -d: -f1)
			for _ in $(seq "$reps"); do
				run "$cfg" sluiced "s$i" "$mode" "$size"
				run "$cfg" nats-server "n$i" "$mode" "$size"
			done
		done
		echo "nats.sh: $mode $size done ($(($(date +%s) - t0)) s)" >&2
	done
done
cp "$tmp/results.jsonl" "${RAW_OUT:-/tmp/sluice-bench-nats.jsonl}"

load=$(cut -d' ' -f1-3 /proc/loadavg)
SECS=$secs REPEAT=$repeat RR_SECS=$rr_secs STARTED=$started LOAD=$load NCPU=$ncpu KERNEL=$(uname -r) \
	NATS_VERSION=$(nats-server --version) COMMIT="$(git -C "$src" rev-parse --short HEAD)$(
		git -C "$src" diff --quiet HEAD -- dataplane control || echo ' + uncommitted dataplane/control edits')" CMD="tests/bench/nats.sh $*" \
	"$py" "$src/tests/bench/bench_nats_report.py" "$tmp/results.jsonl" "$results"
echo "nats.sh: wrote the ## NATS section of $results ($(($(date +%s) - t0)) s)" >&2
