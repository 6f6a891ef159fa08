"""Every (API key, version) the Debian Kafka clients send is one sluiced
advertises, and sluiced never closes their connections: a recording proxy sits
between each client and sluiced (sluiced advertises the proxy's address, so
clients reach every broker connection through it). Runs on every backend."""
import os
import selectors
import shutil
import socket
import struct
import subprocess
import threading

import pytest

from test_kafka import CONFLUENT, CONFLUENT_GROUP, KAFKA_PYTHON_GROUP, PY, frame, recv_frame, run

TIMEOUT = 120


class RecordingProxy:
    """Forwards bytes both ways; parses the client's request headers."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.target = None
        self.seen = set()
        self.server_closes = 0
        self.stop = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def start(self, target_port):
        self.target = target_port
        self.thread.start()

    def loop(self):
        sel = selectors.DefaultSelector()
        sel.register(self.lsock, selectors.EVENT_READ, None)
        peers = {}  # sock -> (other sock, is_client, parse buffer)
        while not self.stop:
            for key, _ in sel.select(0.1):
                s = key.fileobj
                if s is self.lsock:
                    c, _ = self.lsock.accept()
                    u = socket.create_connection(("127.0.0.1", self.target))
                    peers[c] = [u, True, b""]
                    peers[u] = [c, False, b""]
                    sel.register(c, selectors.EVENT_READ, None)
                    sel.register(u, selectors.EVENT_READ, None)
                    continue
                if s not in peers:
                    continue
                other, is_client, _ = peers[s]
                try:
                    d = s.recv(65536)
                except OSError:
                    d = b""
                if not d:
                    if not is_client:
                        with self.lock:
                            self.server_closes += 1
                    for x in (s, other):
                        if x in peers:
                            sel.unregister(x)
                            del peers[x]
                            x.close()
                    continue
                if is_client:
                    self.parse(peers[s], d)
                try:
                    other.sendall(d)
                except OSError:
                    pass
        for s in list(peers):
            s.close()
        self.lsock.close()

    def parse(self, st, d):
        buf = st[2] + d
        while len(buf) >= 8:
            (n,) = struct.unpack(">i", buf[:4])
            if len(buf) < 4 + n:
                break
            key, ver = struct.unpack(">hh", buf[4:8])
            with self.lock:
                self.seen.add((key, ver))
            buf = buf[4 + n:]
        st[2] = buf

    def close(self):
        self.stop = True
        self.thread.join(5)


def advertised_table(port):
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    c.sendall(frame(18, 0, 1))
    r = recv_frame(c)
    c.close()
    corr, err, n = struct.unpack(">ihi", r[:10])
    assert err == 0
    out = {}
    for i in range(n):
        k, lo, hi = struct.unpack(">hhh", r[10 + 6 * i:16 + 6 * i])
        out[k] = (lo, hi)
    return out


@pytest.fixture
def proxied(make_sluiced):
    proxy = RecordingProxy()
    s = make_sluiced(listeners={"kafka": "127.0.0.1:0", "kafka_advertised": f"127.0.0.1:{proxy.port}"})
    s.start()
    proxy.start(s.port("kafka"))
    yield s, proxy, f"127.0.0.1:{proxy.port}"
    proxy.close()


def check(s, proxy):
    table = advertised_table(s.port("kafka"))
    with proxy.lock:
        seen = sorted(proxy.seen)
        closes = proxy.server_closes
    bad = [(k, v) for k, v in seen if k not in table or not table[k][0] <= v <= table[k][1]]
    assert not bad, f"versions sent but not advertised: {bad} (seen {seen})"
    assert closes == 0, f"sluiced closed {closes} client connection(s); seen {seen}"
    assert s.metric_sum("sluice_kafka_protocol_closes_total") == 0
    print("versions seen:", seen)
    return seen


@pytest.mark.skipif(not shutil.which("kcat"), reason="kcat not installed")
def test_kcat_versions(proxied):
    s, proxy, b = proxied
    run(["kcat", "-b", b, "-t", "v", "-P"], stdin=b"a\nb\n")
    run(["kcat", "-b", b, "-t", "v", "-C", "-e", "-q"])
    run(["kcat", "-b", b, "-L"])
    run(["kcat", "-b", b, "-G", "vg", "v", "-e", "-q", "-X", "auto.offset.reset=earliest"])
    seen = check(s, proxy)
    assert {k for k, _ in seen} >= {0, 1, 3, 18}


def test_confluent_versions(proxied):
    s, proxy, b = proxied
    run([PY, "-c", CONFLUENT, b, "cv", "3", "30"])
    run([PY, "-c", CONFLUENT_GROUP, b, "cg", "60"])
    check(s, proxy)


def test_kafka_python_versions(proxied):
    s, proxy, b = proxied
    run([PY, "-c", KAFKA_PYTHON_GROUP, b, "kv", "20"])
    check(s, proxy)
