#!/bin/bash
# dpdk mode vs kernel mode (issue 5), same client, same wire, one run: a veth
# pair between two network namespaces; sluiced on one end, sluice-bench on
# the other. dpdk mode reads its end with DPDK's net_af_packet and runs the
# userspace TCP stack; kernel mode gives that end an address and uses
# io_uring sockets. Rewrites the `## DPDK` section of tests/bench/RESULTS.md.
# Not a test: numbers never fail anything. Root (namespaces).
#   tests/bench/dpdk.sh [SECONDS_PER_RUN]   (default 3; BUILD_DIR=build)
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$src/build}
secs=${1:-3}
results=${RESULTS:-$src/tests/bench/RESULTS.md}
py=/usr/bin/python3
bench=$build/tools/sluice-bench
sluiced=$build/control/sluiced
ninja -C "$build" control/sluiced tools/sluice-bench >/dev/null

id=$$
bns=slb-b$id cns=slb-c$id bif=slbb$id cif=slbc$id
tmp=$(mktemp -d /tmp/sluice-bench-dpdk.XXXXXX)
pid=""
stop_broker() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		pid=""
	fi
}
cleanup() {
	stop_broker
	ip netns del "$bns" 2>/dev/null || true
	ip netns del "$cns" 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

ip netns add "$bns"
ip netns add "$cns"
ip link add "$bif" netns "$bns" type veth peer name "$cif" netns "$cns"
ip -n "$bns" link set lo up
ip -n "$cns" link set lo up
ip -n "$bns" link set "$bif" up
ip -n "$cns" addr add 10.88.0.1/24 dev "$cif"
ip -n "$cns" link set "$cif" up
# ethtool -K $cif tx off: a packet socket never completes partial checksums
ip netns exec "$cns" $py -c '
import array, fcntl, socket, struct, sys
v = array.array("B", struct.pack("II", 0x17, 0))
s = socket.socket()
fcntl.ioctl(s.fileno(), 0x8946, struct.pack("16sP", sys.argv[1].encode(), v.buffer_info()[0]))
' "$cif"

conf() { # mode -> config file
	local mode=$1 f=$tmp/$1.conf
	mkdir -p "$tmp/data-$mode"
	cat >"$f" <<EOF
[server]
data_dir = $tmp/data-$mode
[net]
mode = $mode
[cores]
worker_count = 1
[listeners]
nats = ${2}:4222
kafka = off
[admin]
listen = 127.0.0.1:0
[dpdk]
hugepages = false
memory_mb = 512
file_prefix = slb$id
ports = net_af_packet0,iface=$bif,qpairs=1
addresses = 10.88.0.2/24
eal_args = --no-shconf --no-telemetry --log-level=lib.eal:warning --log-level=pmd.net.af_packet:error
mbufs = 16383
EOF
	echo "$f"
}

wait_greeting() {
	for _ in $(seq 200); do
		if ip netns exec "$cns" $py -c 'import socket;s=socket.create_connection(("10.88.0.2",4222),timeout=1);assert s.recv(4)==b"INFO"' 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "broker did not answer" >&2
	return 1
}

run_set() { # label
	local label=$1
	for w in "pub 128" "pubsub 128" "pubsub 1024" "pubsub 16384" "reqrep 128"; do
		set -- $w
		ip netns exec "$cns" "$bench" nats "$1" --url 10.88.0.2:4222 --size "$2" \
			--duration "$secs" --json | sed "s/^{/{\"setup\":\"$label\",/" >>"$tmp/out.jsonl"
	done
}

ip netns exec "$bns" "$sluiced" --config "$(conf dpdk 0.0.0.0)" >"$tmp/dpdk.log" 2>&1 &
pid=$!
wait_greeting
run_set dpdk
stop_broker

ip -n "$bns" addr add 10.88.0.2/24 dev "$bif"
ip netns exec "$bns" "$sluiced" --config "$(conf kernel 10.88.0.2)" >"$tmp/kernel.log" 2>&1 &
pid=$!
wait_greeting
run_set kernel
stop_broker

$py - "$tmp/out.jsonl" "$results" "$secs" "$(nproc)" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
secs, ncpu = sys.argv[3], sys.argv[4]
by = {(r["setup"], r["mode"], r["size"]): r for r in rows}
out = ["## DPDK", "",
       "`tests/bench/dpdk.sh %s` (root): sluiced with 1 worker on one end of a veth pair, "
       "sluice-bench in a second network namespace on the other; the same client and wire "
       "for both modes, one after the other in one run. dpdk: net_af_packet (one queue pair, "
       "--no-huge) and sluiced's userspace TCP stack; kernel: the veth end has the address, "
       "io_uring sockets. %s vCPUs shared by the worker, the control thread, the client and "
       "the kernel's veth/af_packet work: these compare the two paths over a kernel virtual "
       "wire, not line rate (af_packet itself is a kernel socket)." % (secs, ncpu), "",
       "| workload | size | dpdk msgs/s | dpdk MB/s | kernel msgs/s | kernel MB/s | dpdk/kernel |",
       "|---|---|---|---|---|---|---|"]
for mode, size in [("pub", 128), ("pubsub", 128), ("pubsub", 1024), ("pubsub", 16384),
                   ("reqrep", 128)]:
    d, k = by.get(("dpdk", mode, size)), by.get(("kernel", mode, size))
    if not d or not k:
        continue
    ratio = d["msgs_per_s"] / k["msgs_per_s"] if k["msgs_per_s"] else 0
    extra = ""
    if mode == "reqrep":
        extra = " (p50 %.0f vs %.0f us, p99 %.0f vs %.0f us, max %.0f vs %.0f us)" % (
            d.get("p50_us", 0), k.get("p50_us", 0), d.get("p99_us", 0), k.get("p99_us", 0),
            d.get("max_us", 0), k.get("max_us", 0))
    out.append("| %s | %d | %.0f | %.1f | %.0f | %.1f | %.2f%s |" % (
        mode, size, d["msgs_per_s"], d["mb_per_s"], k["msgs_per_s"], k["mb_per_s"], ratio, extra))
out += ["",
        "Read with care: over a veth pair the kernel path moves GSO segments of up to 64 KiB "
        "between the namespaces without segmenting them, while the userspace stack sends and "
        "receives MSS-sized frames, each through af_packet's own socket copy and a copy into "
        "or out of the TCP rings: the per-packet cost dominates (not profiled yet). The worker "
        "naps 50 us when idle (no rx interrupts on these vdevs), which is what request/reply "
        "latency pays. Not measured yet: DPDK io-forwarding (testpmd) over the same PMD as the "
        "ceiling, and a memif/net_ring load generator at memory speed.", ""]
text = open(sys.argv[2]).read()
start = text.find("## DPDK")
if start >= 0:
    end = text.find("\n## ", start + 1)
    text = text[:start] + ("\n".join(out) + "\n" + (text[end + 1:] if end >= 0 else ""))
else:
    text = text.rstrip("\n") + "\n\n" + "\n".join(out) + "\n"
open(sys.argv[2], "w").write(text)
print("\n".join(out))
EOF
