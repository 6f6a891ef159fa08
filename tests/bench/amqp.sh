#!/bin/bash
# AMQP 0-9-1 benchmark (issue 7): the same sluice-bench workloads against
# sluiced and rabbitmq-server on this machine in one run; writes the `## AMQP`
# section of tests/bench/RESULTS.md. Not a test: numbers never fail anything.
#   tests/bench/amqp.sh [SECONDS_PER_RUN]   (default 1; BUILD_DIR=build-bench in the tree)
# Each run is repeated REPEAT times (default 2, best kept: other work on a
# shared machine only ever slows a run down). Env: CONFIGS ("one two", see
# below), SIZES, MODES, FANOUT (4),
# INFLIGHT (confirm window, 1000), PREFETCH (256), MAX_BYTES (per confirm run).
#
# sluiced runs at its defaults: one worker per CPU it may run on (2 here when
# unpinned, 1 when the "one" layout pins it to CPU 0), its data dir on the
# root disk, persistent messages in durable queues fsynced before their
# confirm, as RabbitMQ does.
#
# rabbitmq-server is started here as root from /usr/lib/rabbitmq/bin (not the
# /usr/sbin wrapper, which switches to the rabbitmq user and the system node)
# with its own node name, data, logs, config, cookie ($HOME), epmd port and
# AMQP port under a temp dir on the root disk; it and its epmd are stopped at
# the end. A system-wide instance, if any, is never touched.
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build-bench}
secs=${1:-1}
repeat=${REPEAT:-2}
sizes=${SIZES:-"16 128 1024 16384"}
modes=${MODES:-"confirm consume pubsub fanout"}
fanout=${FANOUT:-4}
inflight=${INFLIGHT:-1000}
prefetch=${PREFETCH:-256}
max_bytes=${MAX_BYTES:-268435456}
results=${RESULTS:-$src/tests/bench/RESULTS.md}
py=/usr/bin/python3
rmq_bin=/usr/lib/rabbitmq/bin

command -v jq >/dev/null || { echo "amqp.sh: needs jq" >&2; exit 1; }
[ -x "$rmq_bin/rabbitmq-server" ] || {
	echo "amqp.sh: rabbitmq-server is not installed (deploy/install-deps.sh)" >&2
	exit 1
}
[ "$(id -u)" -eq 0 ] || { echo "amqp.sh: run as root (rabbitmq-server runs as root here)" >&2; exit 1; }

[ -d "$build" ] || meson setup "$build" "$src" >/dev/null
# A build dir set up from another tree (a sibling worktree, /work/main) would
# benchmark that tree's code under this tree's commit.
built_from=$(jq -r .directories.source "$build/meson-info/meson-info.json")
[ "$(realpath "$built_from")" = "$src" ] || {
	echo "amqp.sh: $build builds $built_from, not $src: set BUILD_DIR" >&2
	exit 1
}
ninja -C "$build" control/sluiced tools/sluice-bench >/dev/null
bench=$build/tools/sluice-bench
sluiced=$build/control/sluiced
ncpu=$(nproc)

# Under /var/tmp (the root disk), not a tmpfs: RabbitMQ's fsyncs must be real.
tmp=$(mktemp -d /var/tmp/sluice-bench-amqp.XXXXXX)
pids=""
rmq_env=""
stop_rabbitmq() {
	[ -n "$rmq_env" ] || return 0
	env $rmq_env "$rmq_bin/rabbitmqctl" -q stop >/dev/null 2>&1 || true
	# stop returns before the VM has exited; epmd refuses to die until then
	for _ in $(seq 100); do
		[ -n "${pid_rabbitmq:-}" ] && kill -0 "$pid_rabbitmq" 2>/dev/null || break
		sleep 0.1
	done
	env $rmq_env epmd -kill >/dev/null 2>&1 || true
	rmq_env=""
}
stop_all() { # the brokers this script started, by pid
	stop_rabbitmq
	for p in $pids; do
		kill "$p" 2>/dev/null || true
	done
	for p in $pids; do
		wait "$p" 2>/dev/null || true
	done
	pids=""
}
cleanup() {
	stop_all
	rm -rf "$tmp"
}
trap cleanup EXIT

wait_for() { # FILE PATTERN: poll (bounded) until FILE holds PATTERN
	for _ in $(seq 200); do
		grep -q "$2" "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	echo "amqp.sh: timed out waiting for '$2' in $1" >&2
	return 1
}

free_port() {
	"$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Ways to share the 2 vCPUs (CONFIGS, default "one two"):
#   one: each broker (every thread) pinned to CPU 0, sluice-bench to CPU 1;
#        the Erlang VM then runs one scheduler, sluiced one worker (its
#        default sizes workers from the CPUs it may run on)
#   two: nothing pinned: RabbitMQ's VM runs a scheduler per vCPU and sluiced
#        a worker per vCPU (both defaults); sluice-bench shares the CPUs
configs=${CONFIGS:-"one two"}
[ "$ncpu" -ge 2 ] || configs="two"
pin_broker="" pin_bench=""
config_set() {
	case $1 in
	one) pin_broker="taskset -c 0" pin_bench="taskset -c 1" ;;
	*) pin_broker="" pin_bench="" ;;
	esac
}

start_sluiced() {
	rm -rf "$tmp/sluiced"
	mkdir -p "$tmp/sluiced"
	cat >"$tmp/sluiced/sluiced.conf" <<EOF
[server]
data_dir = $tmp/sluiced/data
[listeners]
nats = off
amqp = 127.0.0.1:0
[admin]
listen = 127.0.0.1:0
EOF
	$pin_broker "$sluiced" --config "$tmp/sluiced/sluiced.conf" >"$tmp/sluiced/log" 2>&1 &
	pid_sluiced=$!
	pids="$pids $pid_sluiced"
	wait_for "$tmp/sluiced/data/ports.json" '"amqp"'
	port_sluiced=$(jq .amqp "$tmp/sluiced/data/ports.json")
}

start_rabbitmq() {
	local d=$tmp/rabbitmq
	rm -rf "$d"
	mkdir -p "$d/home" "$d/mnesia" "$d/log"
	port_rabbitmq=$(free_port)
	: >"$d/rabbitmq-env.conf"
	echo '[].' >"$d/enabled_plugins"
	# Only loopback: Erlang distribution and epmd listen on every address
	# unless told otherwise.
	echo '[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}].' >"$d/advanced.config"
	cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$port_rabbitmq
log.console = false
log.file.level = warning
EOF
	rmq_env="HOME=$d/home RABBITMQ_NODENAME=sluicebench$$@localhost
		RABBITMQ_MNESIA_BASE=$d/mnesia RABBITMQ_LOG_BASE=$d/log RABBITMQ_PID_FILE=$d/pid
		RABBITMQ_CONFIG_FILE=$d/rabbitmq.conf RABBITMQ_CONF_ENV_FILE=$d/rabbitmq-env.conf
		RABBITMQ_ADVANCED_CONFIG_FILE=$d/advanced.config
		RABBITMQ_ENABLED_PLUGINS_FILE=$d/enabled_plugins
		RABBITMQ_DIST_PORT=$(free_port) ERL_EPMD_PORT=$(free_port) ERL_EPMD_ADDRESS=127.0.0.1"
	# The Erlang VM sizes its schedulers from the CPUs it may run on, so
	# pinning it (config "one") gives it one core like sluiced's one worker.
	env $rmq_env $pin_broker "$rmq_bin/rabbitmq-server" >"$d/stdout" 2>&1 &
	pids="$pids $!"
	# await_startup fails at once while the node is not yet known to epmd:
	# retry it (bounded) until the node has booted.
	local ok=""
	for _ in $(seq 60); do
		if env $rmq_env "$rmq_bin/rabbitmqctl" -q await_startup --timeout 5 >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.5
	done
	[ -n "$ok" ] || { echo "amqp.sh: rabbitmq-server did not start:" >&2; tail -20 "$d/stdout" >&2; exit 1; }
	pid_rabbitmq=$(cat "$d/pid")
}

cpu_s() { # user+system seconds of PID, all threads
	sed 's/.*) //' "/proc/$1/stat" | awk -v hz="$(getconf CLK_TCK)" '{printf "%.3f", ($12 + $13) / hz}'
}

run() { # CONFIG BROKER MODE SIZE
	local cfg=$1 broker=$2 mode=$3 size=$4 pid port before after out extra=""
	eval "pid=\$pid_$broker port=\$port_$broker"
	case $mode in
	fanout) extra="-n $fanout" ;;
	consume) extra="--prefetch $prefetch" ;;
	# nobody drains the confirm queue: cap what one run leaves in the broker
	confirm) extra="--inflight $inflight --count $((max_bytes / size))" ;;
	esac
	before=$(cpu_s "$pid")
	if ! out=$($pin_bench "$bench" amqp "$mode" $extra --url "127.0.0.1:$port" --size "$size" \
		--duration "$secs" --json); then
		echo "amqp.sh: $broker $mode $size failed: $out" >&2
		out='{"failed":true}'
	fi
	after=$(cpu_s "$pid")
	echo "$out" | jq -c --arg cfg "$cfg" --arg broker "$broker" --arg mode "$mode" \
		--argjson size "$size" \
		--argjson cpu "$(awk -v a="$after" -v b="$before" 'BEGIN{printf "%.3f", a - b}')" \
		'. + {cfg: $cfg, broker: $broker, mode: $mode, size: $size, broker_cpu_s: $cpu}' \
		>>"$tmp/results.jsonl"
}

started=$(date -u '+%Y-%m-%d %H:%M UTC')
t0=$(date +%s)
for cfg in $configs; do
	config_set "$cfg"
	start_sluiced
	start_rabbitmq
	for mode in $modes; do
		for size in $sizes; do
			for _ in $(seq "$repeat"); do
				run "$cfg" sluiced "$mode" "$size"
				run "$cfg" rabbitmq "$mode" "$size"
			done
			echo "amqp.sh: $cfg $mode $size done ($(($(date +%s) - t0)) s)" >&2
		done
	done
	stop_all
done
cp "$tmp/results.jsonl" "${RAW_OUT:-/tmp/sluice-bench-amqp.jsonl}"

load=$(cut -d' ' -f1-3 /proc/loadavg)
SECS=$secs REPEAT=$repeat STARTED=$started LOAD=$load NCPU=$ncpu KERNEL=$(uname -r) \
	FANOUT=$fanout INFLIGHT=$inflight PREFETCH=$prefetch MAX_BYTES=$max_bytes \
	RABBITMQ_VERSION=$(dpkg-query -W -f='${Version}' rabbitmq-server) \
	COMMIT="$(git -C "$src" rev-parse --short HEAD)$(
		git -C "$src" diff --quiet HEAD -- dataplane control || echo ' + uncommitted dataplane/control edits')" \
	CMD="tests/bench/amqp.sh $*" \
	"$py" "$src/tests/bench/bench_amqp_report.py" "$tmp/results.jsonl" "$results"
echo "amqp.sh: wrote the ## AMQP section of $results ($(($(date +%s) - t0)) s)" >&2
