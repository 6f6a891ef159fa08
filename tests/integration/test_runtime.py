"""The foundation: worker placement, backpressure, timeouts, limits,
single instance, shutdown and reload, driven through the runtime's line
test protocol and the admin API."""
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import SLUICED, Sluiced, recv_line, recv_until_closed, wait_until

CAP = 1 << 20  # pending_response_bytes_max in these tests


def base_limits(**kw):
    lim = {"pending_response_bytes_max": "1M", "partial_frame_timeout_ms": "500",
           "write_deadline_ms": "30000", "frame_bytes_max": "4096"}
    lim.update({k: str(v) for k, v in kw.items()})
    return {"limits": lim}


def test_connections_spread_over_both_workers(make_sluiced):
    s = make_sluiced(extra=base_limits()).start()
    socks, said = [], {}
    # The kernel's 4-tuple hash places connections; 24 make missing a worker
    # a 2^-23 event.
    for _ in range(24):
        c = s.connect()
        c.sendall(b"WORKER\n")
        said[c.getsockname()[1]] = int(recv_line(c))
        socks.append(c)
    assert set(said.values()) == {0, 1}
    conns = s.api("/api/v1/connections")["connections"]
    by_port = {int(c["peer"].rsplit(":", 1)[1]): c for c in conns}
    for port, worker in said.items():
        assert by_port[port]["worker"] == worker
        assert by_port[port]["protocol"] == "test"
    for c in socks:
        c.close()


def test_echo_fed_one_byte_at_a_time(make_sluiced):
    s = make_sluiced(extra=base_limits()).start()
    c = s.connect()
    for b in b"hello, one byte at a time\n":
        c.sendall(bytes([b]))
    assert recv_line(c) == b"hello, one byte at a time\n"


def test_reader_that_stops_reading_stays_under_the_cap(make_sluiced):
    s = make_sluiced(extra=base_limits()).start()
    rss0 = s.rss_kib()
    stalled = s.connect()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.sendall(b"BIG 500000000\n")  # 500 MB it will never read
    # The queue fills to the cap and stops there.
    wait_until(lambda: s.metric_sum("sluice_connection_pending_send_bytes_max") >= CAP // 2,
               what="output to queue up")
    for _ in range(20):
        assert s.metric_sum("sluice_connection_pending_send_bytes_max") <= CAP
    # Others are still served.
    other = s.connect()
    other.sendall(b"still here\n")
    assert recv_line(other) == b"still here\n"
    assert s.rss_kib() - rss0 < 64 * 1024, "memory grew with a stalled reader"
    stalled.close()


def test_writer_that_never_reads_replies_is_not_read_either(make_sluiced):
    """Input from a client that ignores its replies stops being read once its
    reply queue is full: held receive bytes stay bounded."""
    s = make_sluiced(extra=base_limits()).start()
    c = s.connect()
    c.setblocking(False)
    line = b"x" * 1000 + b"\n"
    sent = 0
    while sent < 64 * CAP:
        try:
            sent += c.send(line * 64)
        except BlockingIOError:
            # Writable again within 2 s means the server still reads.
            _, w, _ = select.select([], [c], [], 2.0)
            if not w:
                break  # the server stopped reading: TCP pushed back
    assert sent < 64 * CAP, "server kept reading although replies could not be sent"

    wait_until(lambda: s.metric_sum("sluice_receive_held_total") > 0, what="backpressure")
    assert s.metric_sum("sluice_connection_pending_send_bytes_max") <= CAP
    # One connection pins at most the one receive buffer it is stuck in.
    assert s.metric_sum("sluice_pinned_receive_bytes") <= s.api("/api/v1/config")["net"]["recv_buffer_bytes"]
    other = s.connect()
    other.sendall(b"ping\n")
    assert recv_line(other) == b"ping\n"


def test_slowloris_dropped_at_partial_frame_timeout(make_sluiced):
    s = make_sluiced(extra=base_limits(partial_frame_timeout_ms=400)).start()
    c = s.connect()
    c.sendall(b"an unfinished line")
    data, secs = recv_until_closed(c, timeout=10)
    assert data == b""
    assert 0.35 <= secs < 3.0, secs
    wait_until(lambda: s.metrics().get(
        'sluice_connections_closed_total{worker="0",reason="partial_frame_timeout"}', 0) +
        s.metrics().get('sluice_connections_closed_total{worker="1",reason="partial_frame_timeout"}', 0) >= 1,
        what="the close to be counted")
    # A complete line never counts as partial.
    ok = s.connect()
    ok.sendall(b"done\n")
    assert recv_line(ok) == b"done\n"


def test_idle_connection_closed_at_idle_timeout(make_sluiced):
    s = make_sluiced(extra=base_limits(idle_timeout_ms=400)).start()
    busy, idle = s.connect(), s.connect()
    t0 = time.monotonic()
    # One connection keeps talking past the timeout; the other says nothing.
    while time.monotonic() - t0 < 1.0:
        busy.sendall(b"still talking\n")
        assert recv_line(busy) == b"still talking\n"
    data, secs = recv_until_closed(idle, timeout=10)
    assert data == b""
    busy.sendall(b"alive\n")
    assert recv_line(busy) == b"alive\n"


def test_line_over_frame_limit_gets_error_and_close(make_sluiced):
    s = make_sluiced(extra=base_limits(frame_bytes_max=1024)).start()
    c = s.connect()
    c.sendall(b"y" * 1024 + b"\n")
    assert recv_line(c) == b"y" * 1024 + b"\n"   # at the limit: served
    c.sendall(b"z" * 1025 + b"\n")                 # one over: refused
    data, _ = recv_until_closed(c)
    assert data == b"ERR line too long\n"


def test_connection_limit_refuses_with_protocol_error(make_sluiced):
    s = make_sluiced(extra=base_limits(connections_max=3)).start()
    keep = [s.connect() for _ in range(3)]
    for k in keep:
        k.sendall(b"hi\n")
        assert recv_line(k) == b"hi\n"
    extra = s.connect()
    data, _ = recv_until_closed(extra)
    assert data == b"ERR too many connections\n"
    keep[0].close()
    wait_until(lambda: s.metric_sum("sluice_connections") <= 2, what="the close to be seen")
    again = s.connect()
    again.sendall(b"back\n")
    assert recv_line(again) == b"back\n"


def test_per_ip_limit(make_sluiced):
    s = make_sluiced(extra=base_limits(connections_per_ip_max=2)).start()
    a, b = s.connect(), s.connect()
    for k in (a, b):
        k.sendall(b"x\n")
        assert recv_line(k) == b"x\n"
    data, _ = recv_until_closed(s.connect())
    assert data == b"ERR too many connections\n"


def test_second_instance_on_same_data_dir_is_refused():
    first = Sluiced(backend="uring").start()
    try:
        second = Sluiced(backend="uring", data_dir=first.data_dir)
        p = subprocess.run([SLUICED, "--config", second.conf], capture_output=True, timeout=20)
        assert p.returncode != 0
        assert b"in use by another sluiced" in p.stderr
        assert first.proc.poll() is None
    finally:
        first.kill()


def test_sigterm_under_load_exits_zero_quickly(make_sluiced):
    s = make_sluiced(extra=base_limits()).start()
    stop = threading.Event()
    errors = []

    def hammer():
        try:
            c = s.connect()
            while not stop.is_set():
                c.sendall(b"load load load\n" * 50)
                c.recv(65536)
        except OSError:
            pass  # the server going away mid-request is expected
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: s.metric_sum("sluice_received_bytes_total") > 100000, what="load")
    t0 = time.monotonic()
    s.signal(signal.SIGTERM)
    s.proc.wait(timeout=10)
    elapsed = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join()
    assert s.proc.returncode == 0
    assert elapsed < 5.0, elapsed
    assert not errors
    assert not os.path.exists(os.path.join(s.data_dir, "ports.json"))


RELOADABLE = {
    ("server", "log_level"): ("debug", lambda c: c["server"]["log_level"]),
    ("limits", "connections_max"): ("777", lambda c: str(c["limits"]["connections_max"])),
    ("limits", "connections_per_ip_max"): ("55", lambda c: str(c["limits"]["connections_per_ip_max"])),
    ("limits", "frame_bytes_max"): ("2048", lambda c: str(c["limits"]["frame_bytes_max"])),
    ("limits", "control_line_bytes_max"): ("2000", lambda c: str(c["limits"]["control_line_bytes_max"])),
    ("limits", "inflight_requests_max"): ("33", lambda c: str(c["limits"]["inflight_requests_max"])),
    ("limits", "pending_response_bytes_max"): ("3145728", lambda c: str(c["limits"]["pending_response_bytes_max"])),
    ("limits", "pinned_bytes_per_conn_max"): ("1048576", lambda c: str(c["limits"]["pinned_bytes_per_conn_max"])),
    ("limits", "pinned_bytes_per_worker_max"): ("67108864", lambda c: str(c["limits"]["pinned_bytes_per_worker_max"])),
    ("limits", "partial_frame_timeout_ms"): ("300", lambda c: str(c["limits"]["partial_frame_timeout_ms"])),
    ("limits", "idle_timeout_ms"): ("600000", lambda c: str(c["limits"]["idle_timeout_ms"])),
    ("limits", "write_deadline_ms"): ("20000", lambda c: str(c["limits"]["write_deadline_ms"])),
    ("limits", "subscriptions_max"): ("99", lambda c: str(c["limits"]["subscriptions_max"])),
    ("nats", "ping_interval_ms"): ("60000", lambda c: str(c["nats"]["ping_interval_ms"])),
    ("nats", "ping_max_outstanding"): ("3", lambda c: str(c["nats"]["ping_max_outstanding"])),
    ("nats", "auth_timeout_ms"): ("1500", lambda c: str(c["nats"]["auth_timeout_ms"])),
    ("nats", "token"): ("n3w-t0ken", lambda c: "n3w-t0ken" if c["nats"]["auth"] else "none"),
}


@pytest.mark.parametrize("key", list(RELOADABLE), ids=["%s.%s" % k for k in RELOADABLE])
def test_sighup_reloads_each_reloadable_key(key):
    s = Sluiced(backend="uring", extra=base_limits(partial_frame_timeout_ms=30000)).start()
    try:
        value, read = RELOADABLE[key]
        assert read(s.api("/api/v1/config")) != value
        s.sections.setdefault(key[0], {})[key[1]] = value
        s.write_conf()
        s.signal(signal.SIGHUP)
        wait_until(lambda: read(s.api("/api/v1/config")) == value, what=f"{key} to reload")
        assert s.proc.poll() is None
    finally:
        s.kill()


def test_reloaded_limit_takes_effect_in_workers():
    s = Sluiced(backend="uring", extra=base_limits(partial_frame_timeout_ms=60000)).start()
    try:
        s.sections["limits"]["partial_frame_timeout_ms"] = "300"
        s.write_conf()
        s.signal(signal.SIGHUP)
        wait_until(lambda: "reload applied by all workers" in s.log_text(), what="workers to ack")
        c = s.connect()
        c.sendall(b"partial")
        data, secs = recv_until_closed(c, timeout=10)
        assert data == b"" and secs < 5
    finally:
        s.kill()


def test_sighup_refuses_keys_that_cannot_change():
    s = Sluiced(backend="uring", extra=base_limits()).start()
    try:
        s.sections["cores"]["worker_count"] = "1"
        s.sections["limits"]["connections_max"] = "123"
        s.write_conf()
        s.signal(signal.SIGHUP)
        wait_until(lambda: "reload refused" in s.log_text(), what="the refusal")
        assert "worker" in s.log_text().split("reload refused", 1)[1].splitlines()[0]
        cfg = s.api("/api/v1/config")
        assert cfg["limits"]["connections_max"] != 123  # nothing applied
        assert len(cfg["cores"]["workers"]) == 2
    finally:
        s.kill()


def test_admin_endpoints():
    s = Sluiced(backend="uring").start()
    try:
        assert s.http("/healthz") == "ok\n"
        m = s.metrics()
        for name in ["sluice_connections", "sluice_received_bytes_total", "sluice_ring_full_total",
                     "sluice_credit_stall_total", "sluice_pool_exhausted_total",
                     "sluice_loop_iterations_total", "sluice_worker_busy_ratio"]:
            assert any(k.startswith(name + "{") for k in m), name
        cfg = s.api("/api/v1/config")
        assert cfg["server"]["data_dir"] == s.data_dir
        ports = s.api("/api/v1/ports")
        with open(os.path.join(s.data_dir, "ports.json")) as f:
            assert json.load(f) == ports
        assert ports["test"] == s.port("test") and ports["test"] != 0
        assert "<title>sluice</title>" in s.http("/")
        with pytest.raises(Exception):
            s.http("/nope")
    finally:
        s.kill()


@pytest.mark.skipif(not os.environ.get("SLUICE_CLI"), reason="sluice CLI not built")
def test_cli_reads_the_admin_api():
    cli = os.environ["SLUICE_CLI"]
    s = Sluiced(backend="uring").start()
    try:
        c = s.connect()
        c.sendall(b"hi\n")
        assert recv_line(c) == b"hi\n"
        run = lambda *a: subprocess.run([cli, *a], capture_output=True, text=True, timeout=20)
        p = run("--data-dir", s.data_dir, "health")
        assert p.returncode == 0 and p.stdout == "ok\n"
        p = run("--admin", f"127.0.0.1:{s.ports['admin']}", "connections")
        assert p.returncode == 0
        assert json.loads(p.stdout)["connections"][0]["protocol"] == "test"
        p = run("--data-dir", s.data_dir, "metrics")
        assert "sluice_connections{" in p.stdout
        s.stop()
        p = run("--data-dir", s.data_dir, "health")  # gone: ports file removed
        assert p.returncode != 0 and "no running sluiced" in p.stderr
    finally:
        s.kill()


def test_check_prints_config_and_core_plan(tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text("[cores]\nworker_count = 2\n[listeners]\ntest = 127.0.0.1:0\n")
    p = subprocess.run([SLUICED, "--check", str(conf)], capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stderr
    assert "[limits]" in p.stdout and "core plan" in p.stdout


def test_bad_config_names_file_line_and_key(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("[server]\nmode = kernel\n[limits]\nconnections_max = lots\n")
    p = subprocess.run([SLUICED, "--check", str(conf)], capture_output=True, text=True, timeout=20)
    assert p.returncode != 0
    assert "bad.conf:4" in p.stderr and "connections_max" in p.stderr


def test_harness_fails_on_sanitizer_reports():
    """The ASan/UBSan pass is only worth running if a report in sluiced's
    log fails the test even when the broker survived it."""
    s = Sluiced(backend="uring")
    try:
        with open(os.path.join(s.tmp, "sluiced.log"), "wb") as f:
            f.write(b"info: started\n")
        s.check_sanitizers()  # a clean log passes
        with open(os.path.join(s.tmp, "sluiced.log"), "ab") as f:
            f.write(b"dataplane/x.c:1:2: runtime error: shift exponent 64 is too large\n")
        with pytest.raises(AssertionError, match="shift exponent"):
            s.check_sanitizers()
        with pytest.raises(AssertionError, match="sanitizer report"):
            s.kill()  # not started, but the log is still checked
    finally:
        shutil.rmtree(s.tmp, ignore_errors=True)
