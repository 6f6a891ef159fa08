"""Starts sluiced for integration tests: a temp data dir, ports chosen by the
kernel (port 0) and read back from the ports file, the admin API at hand.
Readiness is the ports file appearing (written after every listener is
bound), never a fixed sleep."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

SLUICED = os.environ.get("SLUICED", os.path.join(os.path.dirname(__file__), "../../build/control/sluiced"))


def wait_until(pred, timeout=10.0, what="condition"):
    """Polls pred() until it is truthy; fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Sluiced:
    def __init__(self, backend="uring", extra=None, data_dir=None, workers="2", listeners=None):
        self.tmp = tempfile.mkdtemp(prefix="sluice-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.conf = os.path.join(self.tmp, "sluice.conf")
        self.backend = backend
        self.sections = {
            "server": {"data_dir": self.data_dir, "log_level": "info"},
            "cores": {"worker_count": workers},
            "net": {"backend": backend, "chaos_seed": str(os.getpid())},
            # Every listener the test does not ask for is off, so no test
            # ever binds a protocol's well-known port.
            "listeners": dict({"nats": "off", "kafka": "off", "amqp": "off", "test": "off"},
                              **(listeners or {"nats": "127.0.0.1:0", "test": "127.0.0.1:0"})),
            "admin": {"listen": "127.0.0.1:0"},
        }
        for sec, kv in (extra or {}).items():
            self.sections.setdefault(sec, {}).update(kv)
        self.write_conf()
        self.proc = None
        self.ports = None

    def write_conf(self):
        with open(self.conf, "w") as f:
            for sec, kv in self.sections.items():
                f.write(f"[{sec}]\n")
                for k, v in kv.items():
                    f.write(f"{k} = {v}\n")

    def start(self, timeout=10.0):
        ports_file = os.path.join(self.data_dir, "ports.json")
        if os.path.exists(ports_file):
            os.unlink(ports_file)
        self.log = open(os.path.join(self.tmp, "sluiced.log"), "ab")
        self.proc = subprocess.Popen([SLUICED, "--config", self.conf], stdout=self.log, stderr=self.log)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"sluiced exited with {self.proc.returncode}:\n{self.log_text()}")
            if not os.path.exists(ports_file):
                return None
            with open(ports_file) as f:
                return json.load(f)

        self.ports = wait_until(ready, timeout, "sluiced to publish its ports")
        return self

    def log_text(self):
        with open(os.path.join(self.tmp, "sluiced.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def port(self, proto):
        return self.ports[proto]

    def connect(self, proto="test", timeout=10.0):
        s = socket.create_connection(("127.0.0.1", self.port(proto)), timeout=timeout)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def http(self, path):
        url = f"http://127.0.0.1:{self.ports['admin']}{path}"
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.read().decode()

    def api(self, path):
        return json.loads(self.http(path))

    def metrics(self):
        """Prometheus text -> {'name{labels}': value}."""
        out = {}
        for line in self.http("/metrics").splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out

    def metric_sum(self, name):
        return sum(v for k, v in self.metrics().items() if k == name or k.startswith(name + "{"))

    # What the sanitizers print. A report fails the test even when the
    # broker survives it (UBSan without halt_on_error, a leak report at
    # exit, an ASan abort during a SIGTERM the test did not check).
    SANITIZER_MARKERS = (b"ERROR: AddressSanitizer", b"ERROR: LeakSanitizer", b"runtime error:",
                         b"WARNING: ThreadSanitizer", b"SUMMARY: UndefinedBehaviorSanitizer")

    def sanitizer_report(self):
        """The first sanitizer report in sluiced's log (all its runs), or None."""
        try:
            with open(os.path.join(self.tmp, "sluiced.log"), "rb") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        hits = [text.find(m) for m in self.SANITIZER_MARKERS]
        hits = [h for h in hits if h >= 0]
        if not hits:
            return None
        at = min(hits)
        return text[max(0, at - 200):at + 4000].decode(errors="replace")

    def check_sanitizers(self):
        report = self.sanitizer_report()
        if report:
            raise AssertionError("sanitizer report in sluiced's log:\n" + report)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=10.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("sluiced did not stop within %.0fs of SIGTERM" % timeout)
        self.check_sanitizers()
        return self.proc.returncode if self.proc else None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.check_sanitizers()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def recv_line(sock, limit=1 << 20):
    buf = bytearray()
    while not buf.endswith(b"\n"):
        d = sock.recv(1)
        if not d:
            break
        buf += d
        if len(buf) > limit:
            break
    return bytes(buf)


def recv_until_closed(sock, timeout=10.0):
    """Reads until EOF; returns (data, seconds). Raises on timeout."""
    sock.settimeout(timeout)
    t0 = time.monotonic()
    data = bytearray()
    while True:
        try:
            d = sock.recv(65536)
        except ConnectionResetError:
            break
        if not d:
            break
        data += d
    return bytes(data), time.monotonic() - t0


def alarm_timeout(seconds):
    """Context manager for a test's hard timeout: SIGALRM raises
    TimeoutError in the test after `seconds`. One place for every suite's
    autouse timeout fixture."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        def boom(signum, frame):
            raise TimeoutError(f"test exceeded {seconds}s")

        old = signal.signal(signal.SIGALRM, boom)
        signal.alarm(seconds)
        try:
            yield
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)

    return scope()
