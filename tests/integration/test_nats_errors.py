"""NATS over raw sockets: every -ERR the server sends and whether the
connection stays open after it, limits at their boundary, verbose mode,
echo, auto-unsubscribe, server PINGs, and the slow-consumer cut-off. Runs
on every backend (chaos splits the bytes at random points)."""
import json
import socket
import time

import pytest

from harness import recv_until_closed, wait_until


class Nats:
    """A minimal raw NATS client: exact bytes in, exact lines out."""

    def __init__(self, s, connect=True, opts=None):
        self.sock = s.connect("nats")
        self.buf = b""
        line = self.line()
        assert line.startswith(b"INFO {"), line
        self.info = json.loads(line[5:])
        if connect:
            o = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
            o.update(opts or {})
            self.send(b"CONNECT " + json.dumps(o).encode() + b"\r\nPING\r\n")
            assert self.line() == b"PONG\r\n" if not o.get("verbose") else True

    def send(self, data):
        self.sock.sendall(data)

    def line(self, timeout=10):
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line + b"\r\n"

    def read(self, n, timeout=10):
        self.sock.settimeout(timeout)
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def ping(self):
        """Round trip: everything sent before is processed (and, after
        SUB/UNSUB, applied on every worker)."""
        self.send(b"PING\r\n")
        while True:
            l = self.line()
            if l == b"PONG\r\n":
                return
            assert l == b"+OK\r\n", l

    def closed_with(self, err):
        data, _ = recv_until_closed(self.sock)
        data = self.buf + data
        assert data.endswith(b"-ERR '" + err.encode() + b"'\r\n"), data[-200:]

    def msg(self):
        head = self.line().split()
        assert head[0] in (b"MSG", b"HMSG"), head
        n = int(head[-1])
        body = self.read(n + 2)
        return head, body[:-2]


def limits(**kw):
    return {"limits": {k: str(v) for k, v in kw.items()}}


def test_info_fields(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, connect=False)
    for k in ["server_id", "server_name", "version", "proto", "headers", "max_payload", "client_id",
              "host", "port"]:
        assert k in n.info, k
    assert n.info["proto"] == 1 and n.info["headers"] is True
    assert n.info["port"] == s.port("nats")
    assert n.info["host"] != "0.0.0.0"


def test_unknown_operation_closes(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s)
    n.send(b"FOO bar\r\n")
    n.closed_with("Unknown Protocol Operation")
    Nats(s).ping()  # everyone else still served


def test_msg_from_client_is_unknown_operation(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s)
    n.send(b"MSG foo 1 2\r\nhi\r\n")
    n.closed_with("Unknown Protocol Operation")


def test_payload_limit_at_boundary(make_sluiced):
    s = make_sluiced(extra=limits(frame_bytes_max=1024)).start()
    assert Nats(s, connect=False).info["max_payload"] == 1024
    sub = Nats(s)
    sub.send(b"SUB big 1\r\n")
    sub.ping()
    pub = Nats(s)
    pub.send(b"PUB big 1024\r\n" + b"a" * 1024 + b"\r\n")  # at the limit: delivered
    pub.ping()
    _, body = sub.msg()
    assert body == b"a" * 1024
    pub.send(b"PUB big 1025\r\n")  # one over: refused from the control line
    pub.closed_with("Maximum Payload Violation")


def test_control_line_limit_at_boundary(make_sluiced):
    s = make_sluiced(extra=limits(control_line_bytes_max=256)).start()
    n = Nats(s)
    args = b"a." + b"b" * 248 + b" 1"  # 252 + ... argument bytes under the limit
    n.send(b"SUB " + args[:250] + b" 1\r\n")
    n.ping()
    n.send(b"SUB " + b"c" * 300 + b" 1\r\n")
    n.closed_with("maximum control line exceeded")


def test_invalid_subject_keeps_connection(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s)
    n.send(b"SUB foo. 90\r\n")
    assert n.line() == b"-ERR 'Invalid Subject'\r\n"
    n.send(b"SUB foo.>.bar 91\r\n")
    assert n.line() == b"-ERR 'Invalid Subject'\r\n"
    n.ping()  # still open
    n.send(b"SUB ok 1\r\nPUB ok 2\r\nhi\r\n")
    assert n.msg()[1] == b"hi"


def test_pedantic_invalid_publish_subject(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, opts={"pedantic": True})
    n.send(b"PUB foo.* 0\r\n\r\n")
    assert n.line() == b"-ERR 'Invalid Publish Subject'\r\n"
    n.ping()


def test_max_subscriptions(make_sluiced):
    s = make_sluiced(extra=limits(subscriptions_max=3)).start()
    n = Nats(s)
    n.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n")
    n.ping()
    n.send(b"SUB d 4\r\n")
    assert n.line() == b"-ERR 'maximum subscriptions exceeded'\r\n"
    n.send(b"UNSUB 1\r\nSUB d 4\r\n")  # room again after an UNSUB
    n.ping()


def test_max_connections(make_sluiced):
    s = make_sluiced(extra=limits(connections_max=2)).start()
    a, b = Nats(s), Nats(s)
    c = s.connect("nats")
    data, _ = recv_until_closed(c)
    assert data.endswith(b"-ERR 'maximum connections exceeded'\r\n")
    a.ping()
    b.ping()


def test_parser_error_on_bad_size(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s)
    n.send(b"PUB foo bar\r\n")
    n.closed_with("Parser Error")


def test_missing_crlf_after_payload(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s)
    n.send(b"PUB foo 2\r\nhiXX")
    n.closed_with("Unknown Protocol Operation")


def test_hpub_without_headers_support(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, opts={"headers": False})
    n.send(b"HPUB foo 12 12\r\nNATS/1.0\r\n\r\n\r\n")
    n.closed_with("Parser Error")


def test_no_responders_requires_headers(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, connect=False)
    n.send(b'CONNECT {"verbose":false,"headers":false,"no_responders":true}\r\n')
    n.closed_with("no responders requires headers support")


def test_invalid_client_protocol(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, connect=False)
    n.send(b'CONNECT {"verbose":false,"protocol":2}\r\n')
    n.closed_with("invalid client protocol")


def test_bad_connect_json(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, connect=False)
    n.send(b'CONNECT {"verbose":fals\r\n')
    n.closed_with("Parser Error")


AUTH = {"nats": {"user.alice": "s3cret", "auth_timeout_ms": "300"}}


def test_user_password_auth(make_sluiced):
    s = make_sluiced(extra=AUTH).start()
    ok = Nats(s, connect=False)
    assert ok.info.get("auth_required") is True
    ok.send(b'CONNECT {"verbose":false,"user":"alice","pass":"s3cret"}\r\nPING\r\n')
    assert ok.line() == b"PONG\r\n"
    bad = Nats(s, connect=False)
    bad.send(b'CONNECT {"verbose":false,"user":"alice","pass":"nope"}\r\n')
    bad.closed_with("Authorization Violation")
    early = Nats(s, connect=False)
    early.send(b"SUB foo 1\r\n")  # anything before CONNECT
    early.closed_with("Authorization Violation")


def test_token_auth(make_sluiced):
    s = make_sluiced(extra={"nats": {"token": "t0ken"}}).start()
    ok = Nats(s, connect=False)
    ok.send(b'CONNECT {"verbose":false,"auth_token":"t0ken"}\r\nPING\r\n')
    assert ok.line() == b"PONG\r\n"
    bad = Nats(s, connect=False)
    bad.send(b'CONNECT {"verbose":false,"auth_token":"wrong"}\r\n')
    bad.closed_with("Authorization Violation")


def test_auth_timeout(make_sluiced):
    s = make_sluiced(extra=AUTH).start()
    n = Nats(s, connect=False)
    t0 = time.monotonic()
    n.closed_with("Authentication Timeout")
    assert 0.25 < time.monotonic() - t0 < 3


def test_stale_connection_after_unanswered_pings(make_sluiced):
    s = make_sluiced(extra={"nats": {"ping_interval_ms": "200", "ping_max_outstanding": "2"}}).start()
    n = Nats(s)
    assert n.line(timeout=5) == b"PING\r\n"
    assert n.line(timeout=5) == b"PING\r\n"
    n.closed_with("Stale Connection")


def test_answered_pings_keep_connection(make_sluiced):
    s = make_sluiced(extra={"nats": {"ping_interval_ms": "150", "ping_max_outstanding": "1"}}).start()
    n = Nats(s)
    for _ in range(5):
        assert n.line(timeout=5) == b"PING\r\n"
        n.send(b"PONG\r\n")
    n.ping()


def test_verbose_ok_after_each_operation(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, connect=False)
    n.send(b'CONNECT {"verbose":true}\r\n')
    assert n.line() == b"+OK\r\n"
    n.send(b"SUB v 1\r\n")
    assert n.line() == b"+OK\r\n"
    n.send(b"PUB v 1\r\nx\r\n")
    assert n.line() == b"+OK\r\n"  # as nats-server: before the delivery
    assert n.msg()[1] == b"x"
    n.send(b"UNSUB 1\r\n")
    assert n.line() == b"+OK\r\n"
    n.send(b"PUB v 1\r\ny\r\nPING\r\n")
    assert n.line() == b"+OK\r\n"
    assert n.line() == b"PONG\r\n"  # unsubscribed: no MSG


def test_echo_false_skips_own_messages(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, opts={"echo": False})
    other = Nats(s)
    n.send(b"SUB e 1\r\n")
    n.ping()
    n.send(b"PUB e 4\r\nmine\r\n")
    other.send(b"PUB e 6\r\ntheirs\r\n")
    other.ping()
    assert n.msg()[1] == b"theirs"
    n.send(b"PING\r\n")
    assert n.line() == b"PONG\r\n"  # and no "mine" before it


def test_unsub_with_max_msgs(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s)
    # Published on the subscriber's own connection: delivery is local and
    # in order, so the PONG proves nothing more arrives.
    n.send(b"SUB auto 7\r\nUNSUB 7 3\r\n")
    n.send(b"".join(b"PUB auto 1\r\n%d\r\n" % i for i in range(6)) + b"PING\r\n")
    assert [n.msg()[1] for _ in range(3)] == [b"0", b"1", b"2"]
    assert n.line() == b"PONG\r\n"
    wait_until(lambda: s.metric_sum("sluice_nats_subscriptions") == 0, what="auto-unsubscribe")
    assert any(k.startswith("sluice_nats_subscriptions{") for k in s.metrics())


def test_session_fed_one_byte_at_a_time(make_sluiced):
    s = make_sluiced().start()
    n = Nats(s, connect=False)
    session = (b'CONNECT {"verbose":false,"headers":true}\r\nSUB one.* 5\r\n'
               b"PUB one.x r 5\r\nhello\r\nHPUB one.y 22 27\r\nNATS/1.0\r\nBar: Baz\r\n\r\nhello\r\nPING\r\n")
    for b in session:
        n.send(bytes([b]))
    head, body = n.msg()
    assert head == [b"MSG", b"one.x", b"5", b"r", b"5"] and body == b"hello"
    head, body = n.msg()
    assert head == [b"HMSG", b"one.y", b"5", b"22", b"27"]
    assert body == b"NATS/1.0\r\nBar: Baz\r\n\r\nhello"
    assert n.line() == b"PONG\r\n"


def test_headers_stripped_for_subscriber_without_headers(make_sluiced):
    s = make_sluiced().start()
    plain = Nats(s, opts={"headers": False})
    plain.send(b"SUB h 1\r\n")
    plain.ping()
    pub = Nats(s)
    pub.send(b"HPUB h 22 27\r\nNATS/1.0\r\nBar: Baz\r\n\r\nhello\r\n")
    pub.ping()
    head, body = plain.msg()
    assert head[0] == b"MSG" and body == b"hello"


def nats_on_each_worker(s, per_worker, workers=2):
    """per_worker connections on every worker (a connection's id says its
    worker). The kernel places connections by a hash of the 4-tuple, so a
    fixed number of them may all land on one worker (6 did, twice in one CI
    run): connect until each worker has its share, close the extras."""
    got = {w: [] for w in range(workers)}
    for _ in range(64 * workers):
        n = Nats(s)
        w = got[n.info["client_id"] % workers]
        if len(w) < per_worker:
            w.append(n)
        else:
            n.sock.close()
        if all(len(v) == per_worker for v in got.values()):
            return [n for v in got.values() for n in v]
    raise AssertionError(f"connections per worker after {64 * workers}: "
                         f"{ {w: len(v) for w, v in got.items()} }")


def test_order_per_publisher_across_workers(make_sluiced):
    s = make_sluiced().start()
    subs = nats_on_each_worker(s, 3)
    pub = Nats(s)
    for i, n in enumerate(subs):
        n.send(b"SUB ord.> %d\r\n" % i)
        n.ping()
    batch = b"".join(b"PUB ord.x 6\r\n%06d\r\n" % i for i in range(3000))
    pub.send(batch)
    pub.ping()
    for n in subs:
        for i in range(3000):
            assert n.msg()[1] == b"%06d" % i


def test_slow_consumer_is_cut_off_and_memory_stays_bounded(make_sluiced):
    s = make_sluiced(extra=limits(pending_response_bytes_max="256K", write_deadline_ms=10000)).start()
    slow = Nats(s)  # subscribes, then stops reading
    slow.send(b"SUB flood 1\r\n")
    slow.ping()
    pub = Nats(s)
    rss0 = s.rss_kib()
    payload = b"p" * 4000
    chunk = b"".join(b"PUB flood 4000\r\n" + payload + b"\r\n" for _ in range(64))
    # Publish until the broker has cut the subscriber off.
    deadline = time.monotonic() + 30
    while s.metric_sum("sluice_nats_slow_consumers_total") == 0:
        assert time.monotonic() < deadline, "slow consumer never detected"
        pub.send(chunk)
        pub.ping()
    assert s.metric_sum("sluice_connection_pending_send_bytes_max") <= 300 * 1024
    assert s.rss_kib() - rss0 < 64 * 1024
    # What was queued before the cut reaches the client, then the error.
    slow.closed_with("Slow Consumer")
    pub.ping()  # the publisher is unaffected
