"""A client on another subnet, behind a router, reaches sluiced's DPDK port:
three namespaces joined by two veth pairs,

    client ns  10.77.0.1/24 (default via .254)
      | veth
    router ns  10.77.0.254/24 + 10.78.0.1/24, ip_forward=1
      | veth
    broker ns  sluiced, net_af_packet on the veth, 10.78.0.2/24

With `[dpdk] gateway = 10.78.0.1` the stack resolves the router by ARP and
sends every off-link frame to its MAC; without it the client is never
answered (no frame to a guessed MAC), the drop is counted in /metrics and
the broker keeps serving its own subnet. Needs root and a DPDK build."""
import os
import subprocess
import tempfile
import uuid

import pytest

from test_dpdk_tap import (BULK, ROUND_TRIPS, NATS_C_CLIENT, REASON, SLUICED, TX_CSUM_OFF, NetnsSluiced, netns_run,
                           wait_until)

pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

CLIENT_IP = "10.77.0.1"
ROUTER_CLIENT_SIDE = "10.77.0.254"
ROUTER_BROKER_SIDE = "10.78.0.1"
BROKER_IP = "10.78.0.2"
NATS_PORT = 4222
WORKERS = 2  # the gateway's MAC, learnt by worker 0, must reach worker 1 too


class RoutedBroker(NetnsSluiced):
    def __init__(self, gateway):
        tag = uuid.uuid4().hex[:6]
        self.gateway = gateway
        self.ns, self.rns, self.cns = f"sl-gb-{tag}", f"sl-gr-{tag}", f"sl-gc-{tag}"
        self.bif, self.rbif = f"slgb{tag}", f"slgrb{tag}"  # broker <-> router
        self.crif, self.cif = f"slgrc{tag}", f"slgc{tag}"  # router <-> client
        self.dir = tempfile.mkdtemp(prefix="sl-e2e-gw-")
        self.proc = None
        self.log = None

    def _start(self):
        for ns in (self.ns, self.rns, self.cns):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            netns_run(ns, "ip", "link", "set", "lo", "up", check=True)
        subprocess.run(["ip", "link", "add", self.bif, "netns", self.ns, "type", "veth", "peer",
                        "name", self.rbif, "netns", self.rns], check=True)
        subprocess.run(["ip", "link", "add", self.crif, "netns", self.rns, "type", "veth", "peer",
                        "name", self.cif, "netns", self.cns], check=True)
        netns_run(self.ns, "ip", "link", "set", self.bif, "up", check=True)
        # the router first, so the broker's ARP request for it is answered
        netns_run(self.rns, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        netns_run(self.rns, "ip", "addr", "add", f"{ROUTER_BROKER_SIDE}/24", "dev", self.rbif,
                  check=True)
        netns_run(self.rns, "ip", "addr", "add", f"{ROUTER_CLIENT_SIDE}/24", "dev", self.crif,
                  check=True)
        for ifc in (self.rbif, self.crif):
            netns_run(self.rns, "ip", "link", "set", ifc, "up", check=True)
        netns_run(self.cns, "ip", "addr", "add", f"{CLIENT_IP}/24", "dev", self.cif, check=True)
        netns_run(self.cns, "ip", "link", "set", self.cif, "up", check=True)
        netns_run(self.cns, "ip", "route", "add", "default", "via", ROUTER_CLIENT_SIDE,
                  check=True)
        # af_packet never completes an offloaded checksum: every sender
        # toward the broker computes its own (the router forwards as is)
        netns_run(self.cns, "/usr/bin/python3", "-c", TX_CSUM_OFF, self.cif, check=True)
        netns_run(self.rns, "/usr/bin/python3", "-c", TX_CSUM_OFF, self.rbif, check=True)

        gateway = f"gateway = {ROUTER_BROKER_SIDE}\n" if self.gateway else ""
        self.launch(WORKERS, f"net_af_packet0,iface={self.bif},qpairs={WORKERS}",
                    f"{BROKER_IP}/24", f"nats = 0.0.0.0:{NATS_PORT}\nkafka = off\namqp = off",
                    dpdk_extra=gateway)
        return self

    def namespaces(self):
        return [self.ns, self.rns, self.cns]


def test_client_behind_a_router_is_served_through_the_gateway():
    b = RoutedBroker(gateway=True).start()
    try:
        # the client really is off-link: its route to the broker is the router
        r = netns_run(b.cns, "ip", "route", "get", BROKER_IP, check=True)
        assert f"via {ROUTER_CLIENT_SIDE}" in r.stdout, r.stdout
        wait_until(lambda: b.greets(b.cns, BROKER_IP), 20, "a greeting through the router")
        if os.access(NATS_C_CLIENT, os.X_OK):
            for scenario in ("pubsub", "request_reply"):
                r = netns_run(b.cns, NATS_C_CLIENT, f"nats://{BROKER_IP}:{NATS_PORT}",
                              str(WORKERS), scenario, timeout=120)
                assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{b.log_text()[-3000:]}"
                assert r.stdout.strip().endswith(f"ok {scenario}")
        # a few hundred KiB each way, byte for byte (8 payloads of ~48 KiB)
        r = netns_run(b.cns, "/usr/bin/python3", "-c", BULK, BROKER_IP, str(NATS_PORT), "8",
                      timeout=120)
        assert r.returncode == 0, f"{r.stdout}{r.stderr}\n{b.log_text()[-3000:]}"
        assert int(r.stdout.split()[1]) > 384 * 1024
        # several connections: with 2 workers some belong to worker 1, which
        # only knows the router's MAC from worker 0's publication
        r = netns_run(b.cns, "/usr/bin/python3", "-c", ROUND_TRIPS, BROKER_IP, str(NATS_PORT), "16",
                      timeout=120)
        assert r.stdout.strip() == "ok", f"{r.stdout}{r.stderr}\n{b.log_text()[-3000:]}"
        m = b.metrics()
        accepted = [m.get(f'sluice_dpdk_tcp_accepted_total{{worker="{w}"}}', 0)
                    for w in range(WORKERS)]
        assert all(a > 0 for a in accepted), accepted
        assert b.total("sluice_dpdk_ip_no_route_total") == 0
    finally:
        b.stop()
    assert b.proc.returncode == 0, b.log_text()[-2000:]


def test_without_a_gateway_the_off_link_client_gets_no_answer():
    b = RoutedBroker(gateway=False).start()
    try:
        # the router's side is on-link: served, so the port itself works
        wait_until(lambda: b.greets(b.rns, BROKER_IP), 20, "a greeting on the broker's own subnet")
        assert not b.greets(b.cns, BROKER_IP, timeout=3)  # a timeout, not a refusal or a crash
        wait_until(lambda: b.total("sluice_dpdk_ip_no_route_total") > 0, 10,
                   "the no-route drop in /metrics")
        assert b.proc.poll() is None
        assert b.greets(b.rns, BROKER_IP)
    finally:
        b.stop()
    assert b.proc.returncode == 0, b.log_text()[-2000:]


def test_gateway_outside_the_prefix_is_a_config_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    conf = tmp_path / "bad.conf"
    conf.write_text(f"""[server]
data_dir = {data}
[net]
mode = dpdk
[listeners]
nats = 0.0.0.0:{NATS_PORT}
kafka = off
[admin]
listen = 127.0.0.1:0
[dpdk]
hugepages = false
file_prefix = sl-gw-bad-{uuid.uuid4().hex[:6]}
ports = net_tap0
addresses = {BROKER_IP}/24
gateway = {ROUTER_CLIENT_SIDE}
""")
    r = subprocess.run([SLUICED, "--config", str(conf)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert f"[dpdk] gateway: {ROUTER_CLIENT_SIDE} is not a neighbour" in r.stderr, r.stderr

