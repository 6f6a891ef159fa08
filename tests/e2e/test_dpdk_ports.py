"""sluiced serving two DPDK ports at once: two net_af_packet ports on two
veth pairs, each to its own client namespace on its own subnet,

    client ns A  10.81.0.1/24 --veth-- broker ns  port 0: 10.81.0.2/24
    client ns B  10.82.0.1/24 --veth--            port 1: 10.82.0.2/24

with 2 workers, each polling its queue pair of both ports and running one
TCP/IP stack per port. af_packet's fanout hashes flows its own way, so some
connections on either port reach the worker that does not own them and are
forwarded to the owner's stack of the same port. Needs root and a DPDK
build."""
import os
import subprocess
import tempfile
import uuid

import pytest

from test_dpdk_tap import (BULK, ROUND_TRIPS, NATS_C_CLIENT, REASON, SLUICED, TX_CSUM_OFF, NetnsSluiced,
                           netns_run, wait_until)

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

NATS_PORT = 4222
WORKERS = 2
# (client address, broker address) per port, in [dpdk] ports order
SUBNETS = [("10.81.0.1", "10.81.0.2"), ("10.82.0.1", "10.82.0.2")]

class TwoPortBroker(NetnsSluiced):
    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.ns = f"sl-pb-{tag}"
        self.cns = [f"sl-pa-{tag}", f"sl-pc-{tag}"]  # the client namespace of port 0, 1
        self.bif = [f"slpb0{tag}", f"slpb1{tag}"]  # sluiced's end of each veth
        self.cif = [f"slpc0{tag}", f"slpc1{tag}"]
        self.dir = tempfile.mkdtemp(prefix="sl-e2e-ports-")
        self.proc = None
        self.log = None

    def _start(self):
        for ns in (self.ns, *self.cns):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            netns_run(ns, "ip", "link", "set", "lo", "up", check=True)
        for i in range(2):
            subprocess.run(["ip", "link", "add", self.bif[i], "netns", self.ns, "type", "veth",
                            "peer", "name", self.cif[i], "netns", self.cns[i]], check=True)
            netns_run(self.ns, "ip", "link", "set", self.bif[i], "up", check=True)
        ports = " ".join(f"net_af_packet{i},iface={self.bif[i]},qpairs={WORKERS}"
                         for i in range(2))
        addresses = " ".join(f"{broker}/24" for _, broker in SUBNETS)
        self.launch(WORKERS, ports, addresses, f"nats = 0.0.0.0:{NATS_PORT}\nkafka = off\namqp = off")
        for i, (client, _) in enumerate(SUBNETS):
            netns_run(self.cns[i], "ip", "addr", "add", f"{client}/24", "dev", self.cif[i],
                      check=True)
            netns_run(self.cns[i], "ip", "link", "set", self.cif[i], "up", check=True)
            # af_packet never completes an offloaded checksum
            netns_run(self.cns[i], "/usr/bin/python3", "-c", TX_CSUM_OFF, self.cif[i],
                      check=True)
        for i, (_, broker) in enumerate(SUBNETS):
            wait_until(lambda: self.greets(self.cns[i], broker), 20, f"a greeting on port {i}")
        return self

    def namespaces(self):
        return [self.ns, *self.cns]

    def by_port(self, name, port):
        """Metric name{worker=..,port=port} per worker."""
        m = self.metrics()
        return [m.get(f'{name}{{worker="{w}",port="{port}"}}', 0) for w in range(WORKERS)]


@pytest.fixture(scope="module")
def broker():
    b = TwoPortBroker().start()
    yield b
    code = b.proc.poll()
    b.stop()
    assert code is None, "sluiced died during the tests"
    assert b.proc.returncode == 0, b.log_text()[-2000:]


def test_nats_c_served_on_both_ports_at_once(broker):
    if not os.access(NATS_C_CLIENT, os.X_OK):
        pytest.skip(f"no nats.c client at {NATS_C_CLIENT}")
    # One broker: concurrent runs must not share subjects (pubsub uses
    # orders.new, request_reply svc.echo), so each round runs a different
    # scenario on each port, and the second round swaps them.
    for rounds in (("pubsub", "request_reply"), ("request_reply", "pubsub")):
        runs = [(scenario, subprocess.Popen(
                    ["ip", "netns", "exec", broker.cns[i], NATS_C_CLIENT,
                     f"nats://{SUBNETS[i][1]}:{NATS_PORT}", str(WORKERS), scenario],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
                for i, scenario in enumerate(rounds)]
        for scenario, r in runs:
            out = r.communicate(timeout=120)[0]
            assert r.returncode == 0, f"{out}\n--- sluiced ---\n{broker.log_text()[-3000:]}"
            assert out.strip().endswith(f"ok {scenario}"), out


def test_round_trips_on_both_ports_concurrently(broker):
    runs = [subprocess.Popen(["ip", "netns", "exec", broker.cns[i], "/usr/bin/python3", "-c",
                              ROUND_TRIPS, SUBNETS[i][1], str(NATS_PORT), "24"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for i in range(2)]
    for r in runs:
        out = r.communicate(timeout=120)[0]
        assert out.strip() == "ok", f"{out}\n--- sluiced ---\n{broker.log_text()[-3000:]}"


def test_bulk_transfer_on_the_second_port_byte_for_byte(broker):
    r = netns_run(broker.cns[1], "/usr/bin/python3", "-c", BULK, SUBNETS[1][1], str(NATS_PORT),
                  timeout=120)
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\n--- sluiced ---\n{broker.log_text()[-3000:]}"
    assert int(r.stdout.split()[1]) > 4 * 1024 * 1024


def test_port_1_connections_reaching_the_other_worker_are_served(broker):
    """Only port 1 carries traffic here: every connection is served, both
    workers' port-1 stacks accept some (each owns its share of the flows),
    and frames arriving on the worker that does not own their flow were
    forwarded to the owner's port-1 stack, not reset."""
    forwarded0 = broker.total("sluice_dpdk_forwarded_frames_total")
    rst0 = broker.total("sluice_dpdk_tcp_rst_sent_total")
    r = netns_run(broker.cns[1], "/usr/bin/python3", "-c", ROUND_TRIPS, SUBNETS[1][1],
                  str(NATS_PORT), "48", timeout=120)
    assert r.stdout.strip() == "ok", f"{r.stdout}{r.stderr}\n{broker.log_text()[-3000:]}"

    def settled():  # counters are published every 100 ms
        accepted = broker.by_port("sluice_dpdk_tcp_accepted_by_port_total", 1)
        forwarded = broker.total("sluice_dpdk_forwarded_frames_total") - forwarded0
        return (accepted, forwarded) if all(a > 0 for a in accepted) and forwarded > 0 else None
    accepted, forwarded = wait_until(settled, 10, lambda: (
        broker.by_port("sluice_dpdk_tcp_accepted_by_port_total", 1),
        broker.total("sluice_dpdk_forwarded_frames_total") - forwarded0))
    assert broker.total("sluice_dpdk_forward_dropped_total") == 0
    # a segment answered by the wrong worker would have been a RST
    assert broker.total("sluice_dpdk_tcp_rst_sent_total") == rst0


def test_metrics_show_frames_on_both_ports(broker):
    for port in range(2):
        netns_run(broker.cns[port], "/usr/bin/python3", "-c", ROUND_TRIPS, SUBNETS[port][1],
                  str(NATS_PORT), "4", timeout=60, check=True)

    def counted():
        m = broker.metrics()
        ok = all(m.get(f'sluice_dpdk_port_rx_frames_total{{worker="0",port="{p}"}}', 0) > 0 and
                 sum(broker.by_port("sluice_dpdk_rx_frames_by_port_total", p)) > 0 and
                 sum(broker.by_port("sluice_dpdk_tx_frames_by_port_total", p)) > 0 and
                 sum(broker.by_port("sluice_dpdk_tcp_accepted_by_port_total", p)) > 0
                 for p in range(2))
        return m if ok else None
    wait_until(counted, 10, "frames and connections on both ports in /metrics")

    # the per-worker totals are the sums over the ports; a scrape may fall
    # between two publications while the last ACKs arrive: poll until one
    # scrape agrees for every worker
    def sums_agree():
        m = broker.metrics()
        return all(m[f'sluice_dpdk_rx_frames_total{{worker="{w}"}}'] ==
                   sum(m.get(f'sluice_dpdk_rx_frames_by_port_total{{worker="{w}",port="{p}"}}', 0)
                       for p in range(2))
                   for w in range(WORKERS))
    wait_until(sums_agree, 10, "per-worker frame totals equal to the sums over the ports")


# One ICMP echo to argv[1] from a raw socket (no ping binary here); prints
# the replying address.
ECHO = r"""
import socket, struct, sys
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff)
    return ~(t + (t >> 16)) & 0xffff
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(5)
body = struct.pack("!BBHHH", 8, 0, 0, 0x5e1c, 1) + b"sluice-port-echo"
s.sendto(body[:2] + struct.pack("!H", csum(body)) + body[4:], (sys.argv[1], 0))
while True:
    data, addr = s.recvfrom(2048)
    icmp = data[(data[0] & 15) * 4:]
    if icmp[0] == 0 and icmp[4:6] == b"\x5e\x1c" and icmp[8:] == b"sluice-port-echo":
        print("reply", addr[0])
        break
"""


def test_each_port_answers_icmp_echo_with_its_own_address(broker):
    for i, (_, addr) in enumerate(SUBNETS):
        r = netns_run(broker.cns[i], "/usr/bin/python3", "-c", ECHO, addr, timeout=30)
        assert r.stdout.strip() == f"reply {addr}", f"{r.stdout}{r.stderr}"


def test_check_names_both_ports(broker):
    conf = os.path.join(broker.dir, "sluiced.conf")
    r = subprocess.run(["ip", "netns", "exec", broker.ns, SLUICED, "--config", conf, "--check"],
                       capture_output=True, text=True, timeout=60)
    for i, (_, addr) in enumerate(SUBNETS):
        assert f"port {i}: vdev net_af_packet{i}" in r.stdout + r.stderr, r.stdout + r.stderr
        assert f"{addr}/24" in r.stdout + r.stderr
    for w in range(WORKERS):
        assert f"polls rx/tx queue {w} of ports 0..1" in r.stdout, r.stdout
