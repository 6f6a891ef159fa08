"""AMQP 0-9-1 front-end: pika (Debian's python3-pika) and raw sockets
against a real sluiced on every backend, with two workers. A queue lives on
the worker of the connection that declared it; the cross-worker tests place
connections on chosen workers (through the admin API) to prove publishes,
deliveries, acks and errors crossing between them."""
import signal
import socket
import struct

import pika
from harness import alarm_timeout, wait_until
import pytest

TEST_TIMEOUT_S = 30


@pytest.fixture(autouse=True)
def hard_timeout():
    with alarm_timeout(TEST_TIMEOUT_S):
        yield


@pytest.fixture
def amqp(make_sluiced):
    s = make_sluiced(workers="2", listeners={"amqp": "127.0.0.1:0"}).start()
    return s


def connect(s, **kw):
    params = pika.ConnectionParameters(
        host="127.0.0.1", port=s.port("amqp"), socket_timeout=10, blocked_connection_timeout=10,
        connection_attempts=1, **kw)
    return pika.BlockingConnection(params)


# ---- raw frames -------------------------------------------------------------

def frame(ftype, ch, payload):
    return struct.pack(">BHI", ftype, ch, len(payload)) + payload + b"\xce"


def shortstr(s):
    return bytes([len(s)]) + s


def longstr(s):
    return struct.pack(">I", len(s)) + s


def method(cls, mid, args=b""):
    return struct.pack(">HH", cls, mid) + args


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        part = sock.recv(n - len(buf))
        if not part:
            raise EOFError(f"closed after {len(buf)} of {n} bytes")
        buf += part
    return buf


def read_frame(sock):
    hdr = recv_exact(sock, 7)
    ftype, ch, size = struct.unpack(">BHI", hdr)
    payload = recv_exact(sock, size)
    assert recv_exact(sock, 1) == b"\xce"
    return ftype, ch, payload


def read_method(sock):
    """Next method frame (heartbeats skipped): (channel, class, method, args)."""
    while True:
        ftype, ch, payload = read_frame(sock)
        if ftype == 1:
            cls, mid = struct.unpack(">HH", payload[:4])
            return ch, cls, mid, payload[4:]


def raw_handshake(port, frame_max=131072):
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    ch, cls, mid, _ = read_method(sock)
    assert (ch, cls, mid) == (0, 10, 10)
    start_ok = (struct.pack(">I", 0) + shortstr(b"PLAIN") + longstr(b"\0guest\0guest") +
                shortstr(b"en_US"))
    sock.sendall(frame(1, 0, method(10, 11, start_ok)))
    ch, cls, mid, args = read_method(sock)
    assert (cls, mid) == (10, 30)
    chmax, fmax, hb = struct.unpack(">HIH", args)
    assert chmax > 0 and fmax >= 4096
    sock.sendall(frame(1, 0, method(10, 31, struct.pack(">HIH", chmax, frame_max, 0))))
    sock.sendall(frame(1, 0, method(10, 40, shortstr(b"/") + shortstr(b"") + b"\x00")))
    assert read_method(sock)[1:3] == (10, 41)
    return sock


def expect_conn_close(sock, code):
    ch, cls, mid, args = read_method(sock)
    assert (ch, cls, mid) == (0, 10, 50), (ch, cls, mid, args)
    assert struct.unpack(">H", args[:2])[0] == code, args
    sock.sendall(frame(1, 0, method(10, 51)))
    # the server closes after close-ok
    sock.settimeout(10)
    while True:
        try:
            if not sock.recv(4096):
                break
        except ConnectionResetError:
            break
    sock.close()


# ---- tests ------------------------------------------------------------------

def test_handshake_and_close(amqp):
    conn = connect(amqp)
    props = conn._impl.server_properties
    caps = props["capabilities"]
    for cap in ("publisher_confirms", "exchange_exchange_bindings", "basic.nack",
                "consumer_cancel_notify", "connection.blocked", "authentication_failure_close",
                "per_consumer_qos"):
        assert caps[cap] is True, cap
    ch = conn.channel()
    assert ch.is_open
    ch.close()
    conn.close()


def test_handshake_frame_max_4096_raw(amqp):
    sock = raw_handshake(amqp.port("amqp"), frame_max=4096)
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    assert read_method(sock)[:3] == (1, 20, 11)
    sock.sendall(frame(1, 0, method(10, 50, struct.pack(">H", 200) + shortstr(b"bye") +
                                    struct.pack(">HH", 0, 0))))
    assert read_method(sock)[:3] == (0, 10, 51)
    sock.close()


@pytest.mark.parametrize("header", [b"AMQP\x00\x00\x08\x00", b"GET / HTTP/1.1\r\n\r\n",
                                    b"AMQP\x03\x01\x00\x00"])
def test_wrong_protocol_header(amqp, header):
    sock = socket.create_connection(("127.0.0.1", amqp.port("amqp")), timeout=10)
    sock.sendall(header)
    got = b""
    while True:
        try:
            part = sock.recv(64)
        except ConnectionResetError:
            break
        if not part:
            break
        got += part
    assert got == b"AMQP\x00\x00\x09\x01"
    sock.close()


def test_amqp_0_9_header_accepted(amqp):
    sock = socket.create_connection(("127.0.0.1", amqp.port("amqp")), timeout=10)
    sock.sendall(b"AMQP\x01\x01\x00\x09")
    assert read_method(sock)[:3] == (0, 10, 10)
    sock.close()


def test_bad_login_refused(amqp):
    creds = pika.PlainCredentials("guest", "wrong")
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(amqp, credentials=creds)


def test_declare_publish_get(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare(queue="").method.queue
    assert q.startswith("amq.gen-")
    ch.basic_publish(exchange="", routing_key=q, body=b"hello",
                     properties=pika.BasicProperties(content_type="text/plain", delivery_mode=2,
                                                     headers={"k": "v"}))
    method, props, body = ch.basic_get(q, auto_ack=False)
    assert body == b"hello"
    assert props.content_type == "text/plain" and props.headers == {"k": "v"}
    assert method.delivery_tag == 1
    ch.basic_ack(method.delivery_tag)
    assert ch.basic_get(q) == (None, None, None)
    conn.close()


def test_exchanges_direct_fanout_topic(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    ch.exchange_declare("ex.d", exchange_type="direct")
    ch.exchange_declare("ex.t", exchange_type="topic")
    qd = ch.queue_declare("qd").method.queue
    qt = ch.queue_declare("qt").method.queue
    qf1 = ch.queue_declare("qf1").method.queue
    qf2 = ch.queue_declare("qf2").method.queue
    ch.queue_bind(qd, "ex.d", routing_key="k1")
    ch.queue_bind(qt, "ex.t", routing_key="a.*.c.#")
    ch.queue_bind(qf1, "amq.fanout")
    ch.queue_bind(qf2, "amq.fanout")
    ch.basic_publish("ex.d", "k1", b"d1")
    ch.basic_publish("ex.d", "k2", b"dropped")
    ch.basic_publish("ex.t", "a.b.c", b"t1")
    ch.basic_publish("ex.t", "a.b.c.d.e", b"t2")
    ch.basic_publish("ex.t", "a.c", b"no")
    ch.basic_publish("amq.fanout", "", b"f")
    assert ch.basic_get(qd, auto_ack=True)[2] == b"d1"
    assert ch.basic_get(qd, auto_ack=True)[2] is None
    assert ch.basic_get(qt, auto_ack=True)[2] == b"t1"
    assert ch.basic_get(qt, auto_ack=True)[2] == b"t2"
    assert ch.basic_get(qt, auto_ack=True)[2] is None
    assert ch.basic_get(qf1, auto_ack=True)[2] == b"f"
    assert ch.basic_get(qf2, auto_ack=True)[2] == b"f"
    conn.close()


def test_consume_with_ack_and_prefetch(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("work").method.queue
    for i in range(10):
        ch.basic_publish("", q, b"m%d" % i)
    ch.basic_qos(prefetch_count=3)
    got = []
    for method, props, body in ch.consume(q, inactivity_timeout=5):
        assert method is not None, "consumer starved"
        got.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(got) == 10:
            break
    ch.cancel()
    assert got == [b"m%d" % i for i in range(10)]
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    conn.close()


def test_unacked_redelivered_after_channel_close(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("redeliver").method.queue
    ch.basic_publish("", q, b"x")
    method, _, body = ch.basic_get(q)
    assert body == b"x" and not method.redelivered
    ch.close()
    ch2 = conn.channel()
    method, _, body = ch2.basic_get(q, auto_ack=True)
    assert body == b"x" and method.redelivered
    conn.close()


def test_one_megabyte_body_many_frames(amqp):
    conn = connect(amqp, frame_max=8192)
    ch = conn.channel()
    q = ch.queue_declare("big").method.queue
    body = bytes(range(256)) * 4096  # 1 MiB
    ch.basic_publish("", q, body)
    method, _, got = ch.basic_get(q, auto_ack=True)
    assert got == body
    conn.close()


def test_publisher_confirms(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    ch.confirm_delivery()
    q = ch.queue_declare("confirmed").method.queue
    for i in range(5):
        ch.basic_publish("", q, b"c%d" % i)
    assert ch.queue_declare(q, passive=True).method.message_count == 5
    conn.close()


def test_publish_to_missing_exchange_closes_only_the_channel(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    ch.basic_publish("no-such-exchange", "k", b"x")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("after")  # the close arrives before this answer
    assert ei.value.reply_code == 404
    assert conn.is_open
    ch2 = conn.channel()
    assert ch2.queue_declare("still-fine").method.queue == "still-fine"
    conn.close()


def test_missing_queue_404_and_ack_unknown_tag_406(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("nope", passive=True)
    assert ei.value.reply_code == 404
    ch = conn.channel()
    ch.basic_ack(42)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("x")
    assert ei.value.reply_code == 406
    assert conn.is_open
    conn.close()


def test_connection_errors_raw(amqp):
    port = amqp.port("amqp")
    # bad frame-end: 501
    sock = raw_handshake(port)
    sock.sendall(struct.pack(">BHI", 8, 0, 0) + b"\x00")
    expect_conn_close(sock, 501)
    # a method on a channel that is not open: 504
    sock = raw_handshake(port)
    sock.sendall(frame(1, 5, method(50, 10, struct.pack(">H", 0) + shortstr(b"q") + b"\x00" +
                                    struct.pack(">I", 0))))
    expect_conn_close(sock, 504)
    # unknown method: 503
    sock = raw_handshake(port)
    sock.sendall(frame(1, 0, method(10, 99)))
    expect_conn_close(sock, 503)
    # a field table with an unknown type tag: 502
    sock = raw_handshake(port)
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    read_method(sock)
    bad_table = shortstr(b"x-k") + b"Z" + b"\x00"
    sock.sendall(frame(1, 1, method(50, 10, struct.pack(">H", 0) + shortstr(b"q") + b"\x00" +
                                    struct.pack(">I", len(bad_table)) + bad_table)))
    expect_conn_close(sock, 502)
    # body without publish: 505
    sock = raw_handshake(port)
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    assert read_method(sock)[:3] == (1, 20, 11)
    sock.sendall(frame(3, 1, b"abc"))
    expect_conn_close(sock, 505)
    # vhost other than "/": 530 (sent instead of open-ok)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    read_method(sock)
    sock.sendall(frame(1, 0, method(10, 11, struct.pack(">I", 0) + shortstr(b"PLAIN") +
                                    longstr(b"\0guest\0guest") + shortstr(b"en_US"))))
    read_method(sock)
    sock.sendall(frame(1, 0, method(10, 31, struct.pack(">HIH", 10, 131072, 0))))
    sock.sendall(frame(1, 0, method(10, 40, shortstr(b"other") + shortstr(b"") + b"\x00")))
    expect_conn_close(sock, 530)
    # immediate=1: 540
    sock = raw_handshake(port)
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    read_method(sock)
    sock.sendall(frame(1, 1, method(60, 40, struct.pack(">H", 0) + shortstr(b"") +
                                    shortstr(b"q") + b"\x02")))
    expect_conn_close(sock, 540)


def test_heartbeats_sent_and_expected(amqp):
    """tune-ok heartbeat=1: the server sends heartbeats about every 0.5 s
    and closes the socket after ~2 s without anything from us."""
    sock = socket.create_connection(("127.0.0.1", amqp.port("amqp")), timeout=10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    read_method(sock)
    sock.sendall(frame(1, 0, method(10, 11, struct.pack(">I", 0) + shortstr(b"PLAIN") +
                                    longstr(b"\0guest\0guest") + shortstr(b"en_US"))))
    read_method(sock)
    sock.sendall(frame(1, 0, method(10, 31, struct.pack(">HIH", 10, 131072, 1))))
    sock.sendall(frame(1, 0, method(10, 40, shortstr(b"/") + shortstr(b"") + b"\x00")))
    ftype, ch, payload = read_frame(sock)
    assert (ftype, ch) == (1, 0)  # open-ok
    beats = 0
    sock.settimeout(8)
    try:
        while True:
            ftype, ch, payload = read_frame(sock)
            assert (ftype, ch, payload) == (8, 0, b"")
            beats += 1
    except (EOFError, ConnectionResetError):
        pass
    assert beats >= 2
    sock.close()


def test_heartbeats_keep_a_live_client(amqp):
    """A client answering heartbeats stays connected past the timeout."""
    conn = connect(amqp, heartbeat=1)
    ch = conn.channel()
    q = ch.queue_declare("hb").method.queue
    deadline = __import__("time").monotonic() + 3
    while __import__("time").monotonic() < deadline:
        conn.process_data_events(time_limit=0.5)
    ch.basic_publish("", q, b"alive")
    assert ch.basic_get(q, auto_ack=True)[2] == b"alive"
    conn.close()


def test_amqp_tools_librabbitmq(amqp):
    import shutil
    import subprocess
    if not shutil.which("amqp-publish"):
        pytest.skip("amqp-tools not installed")
    url = f"amqp://guest:guest@127.0.0.1:{amqp.port('amqp')}"
    run = lambda *a: subprocess.run(list(a) + ["-u", url], check=True, capture_output=True,
                                    timeout=10)
    assert run("amqp-declare-queue", "-q", "tools").stdout.strip() == b"tools"
    run("amqp-publish", "-r", "tools", "-b", "from librabbitmq")
    assert run("amqp-get", "-q", "tools").stdout == b"from librabbitmq"


def test_queue_purge_unbind_delete_and_exchange_delete(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    ch.exchange_declare("ex.del", exchange_type="direct")
    q = ch.queue_declare("qdel").method.queue
    ch.queue_bind(q, "ex.del", routing_key="k")
    for _ in range(3):
        ch.basic_publish("ex.del", "k", b"x")
    assert ch.queue_purge(q).method.message_count == 3
    ch.queue_unbind(q, "ex.del", routing_key="k")
    ch.basic_publish("ex.del", "k", b"unrouted")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.basic_publish("", q, b"one")
    # an unacked message survives the delete of its queue until acked
    method, _, body = ch.basic_get(q)
    ch.basic_publish("", q, b"two")
    assert ch.queue_delete(q).method.message_count == 1
    ch.basic_ack(method.delivery_tag)
    assert ch.queue_delete("never-existed").method.message_count == 0
    ch.exchange_delete("ex.del")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.exchange_declare("ex.del", passive=True)
    assert ei.value.reply_code == 404
    conn.close()


def test_consumer_cancelled_when_queue_deleted(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("doomed").method.queue
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(q, lambda *a: None)
    other = conn.channel()
    other.queue_delete(q)
    conn.process_data_events(time_limit=0)
    while not cancelled:
        conn.process_data_events(time_limit=1)
    assert cancelled == [tag]
    conn.close()


def test_mandatory_unroutable_is_returned(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nobody", b"bounce", mandatory=True)
    conn.close()


def test_exclusive_queue_locked_and_dropped_with_owner(amqp):
    owner = connect(amqp)
    och = owner.channel()
    q = och.queue_declare("", exclusive=True).method.queue
    other = connect(amqp)
    ch = other.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_get(q)
    assert ei.value.reply_code == 405
    owner.close()
    # The server drops the queue when it releases the connection, which may
    # be just after the client saw close-ok: poll for the 404.
    from harness import wait_until

    def gone():
        c = other.channel()
        try:
            c.queue_declare(q, passive=True)
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return True
        c.close()
        return False

    wait_until(gone, 10, "the exclusive queue to go with its owner")
    other.close()


def test_auto_delete_queue_goes_with_its_last_consumer(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("auto", auto_delete=True).method.queue
    tag = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(tag)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404
    conn.close()


def test_global_qos_and_recover(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("gq").method.queue
    for i in range(6):
        ch.basic_publish("", q, b"%d" % i)
    ch.basic_qos(prefetch_count=2, global_qos=True)
    got = []
    for method, _, body in ch.consume(q, inactivity_timeout=0.5):
        if method is None:
            break
        got.append((method.delivery_tag, body))
    assert [b for _, b in got] == [b"0", b"1"]  # capped at 2 unacked per channel
    ch.basic_recover(requeue=True)
    redelivered = []
    for method, _, body in ch.consume(q, inactivity_timeout=5):
        assert method is not None
        redelivered.append((method.redelivered, body))
        ch.basic_ack(method.delivery_tag)
        if len(redelivered) == 6:
            break
    assert redelivered[:2] == [(True, b"0"), (True, b"1")]
    assert [b for _, b in redelivered] == [b"%d" % i for i in range(6)]
    ch.cancel()
    conn.close()


def test_exchange_to_exchange_bindings(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    ch.exchange_declare("src", exchange_type="topic")
    ch.exchange_declare("mid", exchange_type="fanout")
    q = ch.queue_declare("e2e").method.queue
    ch.queue_bind(q, "mid")
    ch.queue_bind(q, "src", routing_key="#")  # a second path: still one copy
    ch.exchange_bind(destination="mid", source="src", routing_key="a.*")
    ch.exchange_bind(destination="src", source="mid")  # a cycle
    ch.basic_publish("src", "a.b", b"via both")
    ch.basic_publish("src", "x", b"direct only")
    assert ch.basic_get(q, auto_ack=True)[2] == b"via both"
    assert ch.basic_get(q, auto_ack=True)[2] == b"direct only"
    assert ch.basic_get(q, auto_ack=True)[2] is None
    ch.queue_unbind(q, "src", routing_key="#")
    ch.exchange_unbind(destination="mid", source="src", routing_key="a.*")
    ch.basic_publish("src", "a.b", b"nowhere")
    assert ch.basic_get(q, auto_ack=True)[2] is None
    ch.exchange_bind(destination="mid", source="src", routing_key="a.*")
    ch.exchange_delete("mid")
    ch.basic_publish("src", "a.b", b"nowhere either")
    assert ch.basic_get(q, auto_ack=True)[2] is None
    conn.close()


def test_metrics(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("metered").method.queue
    for _ in range(3):
        ch.basic_publish("", q, b"m")
    ch.basic_publish("amq.direct", "nobody", b"lost")
    method, _, _ = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    assert amqp.metric_sum("sluice_amqp_messages_published_total") == 4
    assert amqp.metric_sum("sluice_amqp_messages_unroutable_total") == 1
    assert amqp.metric_sum("sluice_amqp_messages_delivered_total") == 1
    from harness import wait_until
    # basic.ack has no reply: wait for the worker to have handled it
    wait_until(lambda: amqp.metric_sum("sluice_amqp_messages_settled_total") == 1, 10, "the ack")
    assert amqp.metric_sum("sluice_amqp_queues") == 1
    assert amqp.metric_sum("sluice_amqp_channels") == 1
    conn.close()


def test_queue_declare_equivalence_reserved_names_exclusive_consumer(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    ch.queue_declare("eq", durable=True)
    ch.queue_declare("eq", durable=True)  # same arguments: fine
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("eq", durable=False)
    assert ei.value.reply_code == 406
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare("amq.mine")
    assert ei.value.reply_code == 403
    ch = conn.channel()
    ch.basic_consume("eq", lambda *a: None, exclusive=True)
    ch2 = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch2.basic_consume("eq", lambda *a: None)
        ch2.queue_declare("eq", passive=True)
    assert ei.value.reply_code == 403
    conn.close()


def test_body_frame_over_frame_max_is_501(amqp):
    sock = raw_handshake(amqp.port("amqp"), frame_max=4096)
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    read_method(sock)
    sock.sendall(frame(1, 1, method(50, 10, struct.pack(">H", 0) + shortstr(b"fm") + b"\x00" +
                                    struct.pack(">I", 0))))
    read_method(sock)
    sock.sendall(frame(1, 1, method(60, 40, struct.pack(">H", 0) + shortstr(b"") +
                                    shortstr(b"fm") + b"\x00")))
    sock.sendall(frame(2, 1, struct.pack(">HHQH", 60, 0, 5000, 0)))
    sock.sendall(frame(3, 1, b"x" * 5000))
    expect_conn_close(sock, 501)


def test_transactions(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("txq").method.queue
    ch.tx_select()
    ch.basic_publish("", q, b"a")
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.tx_commit()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    ch.basic_publish("", q, b"b")
    ch.tx_rollback()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    method, _, body = ch.basic_get(q)
    assert body == b"a"
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()  # the ack is forgotten: the message stays unacked
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.tx_select()
    assert ei.value.reply_code == 406
    assert conn.is_open
    conn.close()


def test_message_larger_than_output_cap_refused_and_slow_consumer(make_sluiced):
    """With a 64 KiB output cap, messages up to half of it are taken and
    larger ones refused with 406. A consumer that does not read stalls its
    own deliveries without hurting the publisher."""
    s = make_sluiced(workers="1", listeners={"amqp": "127.0.0.1:0"},
                     extra={"limits": {"pending_response_bytes_max": "65536"}}).start()
    conn = connect(s)
    ch = conn.channel()
    q = ch.queue_declare("capped").method.queue
    ch.basic_publish("", q, b"x" * 30000)
    assert ch.basic_get(q, auto_ack=True)[2] == b"x" * 30000
    ch.basic_publish("", q, b"x" * 40000)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 406
    # a raw consumer that never reads
    sock = raw_handshake(s.port("amqp"))
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    read_method(sock)
    sock.sendall(frame(1, 1, method(60, 20, struct.pack(">H", 0) + shortstr(b"capped") +
                                    shortstr(b"") + b"\x02" + struct.pack(">I", 0))))
    ch = conn.channel()
    for _ in range(200):
        ch.basic_publish("", q, b"y" * 20000)
    assert ch.queue_declare(q, passive=True).method.queue == q  # publisher unaffected
    sock.close()
    conn.close()


# ---- across workers ---------------------------------------------------------

def local_port(conn):
    return conn._impl._transport._sock.getsockname()[1]


def worker_of(s, conn):
    port = local_port(conn)
    for c in s.api("/api/v1/connections")["connections"]:
        if c["protocol"] == "amqp" and c["peer"].endswith(f":{port}"):
            return c["worker"]
    raise AssertionError(f"connection from port {port} not listed")


def connect_on(s, worker, **kw):
    """A pika connection the kernel placed on `worker` (others are closed)."""
    spare = []
    try:
        for _ in range(64):
            conn = connect(s, **kw)
            if worker_of(s, conn) == worker:
                return conn
            spare.append(conn)
        raise AssertionError(f"no connection landed on worker {worker}")
    finally:
        for x in spare:
            x.close()


def drain(ch, queue, n, timeout=10, ack=False, **kw):
    """n deliveries from a consumer on queue, in arrival order (each acked
    when ack)."""
    got = []
    for method, props, body in ch.consume(queue, inactivity_timeout=timeout, **kw):
        assert method is not None, f"only {len(got)} of {n} deliveries arrived"
        got.append((method, props, body))
        if ack and len(got) < n:
            ch.basic_ack(method.delivery_tag)
        if len(got) == n:
            break
    return got


def test_cross_worker_publish_consume_ack_with_confirms(amqp):
    owner = connect_on(amqp, 0)
    other = connect_on(amqp, 1)
    och = owner.channel()
    q = och.queue_declare("xw.q").method.queue
    och.exchange_declare("xw.fan", exchange_type="fanout")
    och.queue_bind(q, "xw.fan")
    # a queue on worker 1 bound to the same exchange: one publish, two workers
    pch = other.channel()
    q1 = pch.queue_declare("xw.q1").method.queue
    pch.queue_bind(q1, "xw.fan")
    pch.confirm_delivery()
    for i in range(50):
        # confirm_delivery makes basic_publish wait for the broker's ack
        pch.basic_publish("xw.fan", "", str(i).encode(), mandatory=True)
    pch.basic_publish("", q, b"direct")
    # the routing table on worker 1 knows the queue of worker 0 at once
    assert pch.queue_declare(q, passive=True).method.message_count == 51
    assert pch.queue_declare(q1, passive=True).method.message_count == 50
    # consumer on worker 1, queue on worker 0, prefetch 5 across the hop
    cch = other.channel()
    cch.basic_qos(prefetch_count=5)
    first = drain(cch, q, 5)
    assert [b for _, _, b in first] == [str(i).encode() for i in range(5)]
    # nothing beyond the prefetch arrives until an ack travels back
    extra = []
    other.process_data_events(time_limit=0.5)
    for m in cch.consume(q, inactivity_timeout=0.3):
        if m[0] is None:
            break
        extra.append(m)
    assert extra == []
    cch.basic_ack(first[-1][0].delivery_tag, multiple=True)
    rest = drain(cch, q, 46, ack=True)
    assert [b for _, _, b in rest] == [str(i).encode() for i in range(5, 50)] + [b"direct"]
    # reject with requeue: it comes back redelivered
    cch.basic_nack(rest[-1][0].delivery_tag, requeue=True)
    again = drain(cch, q, 1)
    assert again[0][2] == b"direct" and again[0][0].redelivered
    cch.basic_ack(again[0][0].delivery_tag, multiple=True)
    cch.cancel()
    wait_until(lambda: och.queue_declare(q, passive=True).method.message_count == 0,
               what="queue on worker 0 to be empty")
    assert amqp.metric_sum("sluice_amqp_messages_settled_total") >= 51
    owner.close()
    other.close()


def test_cross_worker_get_purge_delete_and_close_requeues(amqp):
    owner = connect_on(amqp, 0)
    other = connect_on(amqp, 1)
    och = owner.channel()
    q = och.queue_declare("xw.get").method.queue
    for i in range(4):
        och.basic_publish("", q, str(i).encode())
    # ordered after the publishes on their connection: all four are in
    assert och.queue_declare(q, passive=True).method.message_count == 4
    ch = other.channel()
    method, _, body = ch.basic_get(q)
    assert body == b"0" and method.message_count == 3
    method2, _, body2 = ch.basic_get(q, auto_ack=True)
    assert body2 == b"1"
    # the unacked get goes back to the queue when the channel closes
    ch.close()
    ch = other.channel()
    m, _, b = ch.basic_get(q, auto_ack=True)
    assert b == b"0" and m.redelivered
    assert ch.queue_purge(q).method.message_count == 2
    assert ch.basic_get(q) == (None, None, None)
    och.basic_publish("", q, b"x")
    # ordered after the publish on its own connection: the queue holds it
    assert och.queue_declare(q, passive=True).method.message_count == 1
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_delete(q, if_empty=True)
    assert ei.value.reply_code == 406
    ch = other.channel()
    assert ch.queue_delete(q).method.message_count == 1
    # gone from every worker's routing table once delete-ok arrived
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        och.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404
    owner.close()
    other.close()


def test_cross_worker_unacked_requeued_when_consumer_connection_closes(amqp):
    owner = connect_on(amqp, 0)
    och = owner.channel()
    q = och.queue_declare("xw.close").method.queue
    for i in range(3):
        och.basic_publish("", q, str(i).encode())
    other = connect_on(amqp, 1)
    cch = other.channel()
    got = drain(cch, q, 3)
    assert [b for _, _, b in got] == [b"0", b"1", b"2"]
    other.close()  # unacked: back to the queue on worker 0, redelivered
    again = drain(och, q, 3)
    assert [b for _, _, b in again] == [b"0", b"1", b"2"]
    assert all(m.redelivered for m, _, _ in again)
    och.basic_ack(again[-1][0].delivery_tag, multiple=True)
    owner.close()


def test_cross_worker_exclusive_auto_delete_and_cancel_notify(amqp):
    owner = connect_on(amqp, 0)
    other = connect_on(amqp, 1)
    och = owner.channel()
    xq = och.queue_declare("", exclusive=True).method.queue
    ch = other.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_consume(xq, lambda *a: None)
    assert ei.value.reply_code == 405
    ch = other.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_get(xq)
    assert ei.value.reply_code == 405
    # auto-delete: the last consumer, on the other worker, takes it away
    aq = och.queue_declare("xw.auto", auto_delete=True).method.queue
    ch = other.channel()
    tag = ch.basic_consume(aq, lambda *a: None)
    ch.basic_cancel(tag)
    def gone(name):
        c = owner.channel()
        try:
            c.queue_declare(name, passive=True)
            c.close()
            return False
        except pika.exceptions.ChannelClosedByBroker as e:
            assert e.reply_code == 404
            return True
    wait_until(lambda: gone(aq), what="auto-delete queue to go")
    # a consumer on worker 1 is told when the queue on worker 0 is deleted
    dq = och.queue_declare("xw.del").method.queue
    cancelled = []
    ch = other.channel()
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    tag = ch.basic_consume(dq, lambda *a: None)
    och.queue_delete(dq)
    wait_until(lambda: (other.process_data_events(time_limit=0.05), cancelled)[1],
               what="server basic.cancel on worker 1")
    assert cancelled == [tag]
    # the exclusive queue goes with its owner, on every worker
    owner.close()
    def xq_gone():
        c = other.channel()
        try:
            c.queue_declare(xq, passive=True)
            c.close()
            return False
        except pika.exceptions.ChannelClosedByBroker as e:
            return e.reply_code == 404
    wait_until(xq_gone, what="exclusive queue to go with its owner")
    other.close()


# ---- durability ---------------------------------------------------------------

def test_durable_queue_unacked_persistent_messages_survive_sigkill(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("dur.q", durable=True).method.queue
    tq = ch.queue_declare("dur.nondurable").method.queue
    ch.exchange_declare("dur.ex", exchange_type="topic", durable=True)
    ch.exchange_declare("dur.ex-transient", exchange_type="fanout")
    ch.queue_bind(q, "dur.ex", routing_key="a.#")
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(20):
        # each returns once confirmed, i.e. once fsynced
        ch.basic_publish("", q, str(i).encode(), properties=persistent)
    ch.basic_publish("", q, b"transient")
    ch.basic_publish("", tq, b"in a non-durable queue", properties=persistent)
    got = drain(ch, q, 21)
    tags = {body: method.delivery_tag for method, _, body in got}
    for i in list(range(8)) + [12]:
        ch.basic_ack(tags[str(i).encode()])
    ch.basic_reject(tags[b"15"], requeue=False)
    # The acks are recorded before this message in the queue's log, so its
    # confirm (after fsync) makes them durable too.
    ch.basic_publish("", q, b"marker", properties=persistent)
    amqp.kill()
    amqp.start()
    conn = connect(amqp)
    ch = conn.channel()
    # the queue, exchange and binding come back from the metadata log; the
    # queue's own log brings back what was unacked
    expected = [str(i).encode() for i in (8, 9, 10, 11, 13, 14, 16, 17, 18, 19)] + [b"marker"]
    assert ch.queue_declare(q, passive=True).method.message_count == len(expected)
    ch.exchange_declare("dur.ex", passive=True)
    ch.confirm_delivery()
    ch.basic_publish("dur.ex", "a.b.c", b"bound", properties=persistent, mandatory=True)
    expected.append(b"bound")
    again = drain(ch, q, len(expected))
    assert [body for _, _, body in again] == expected
    # recovered ones are marked redelivered; the one published since is not
    assert [method.redelivered for method, _, _ in again] == [True] * (len(expected) - 1) + [False]
    ch.basic_ack(again[-1][0].delivery_tag, multiple=True)
    for declare in (lambda c: c.queue_declare(tq, passive=True),
                    lambda c: c.exchange_declare("dur.ex-transient", passive=True)):
        c = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            declare(c)
        assert ei.value.reply_code == 404
    # deleting the durable queue deletes its stored definition and binding
    ch.queue_delete(q)
    amqp.kill()
    amqp.start()
    conn = connect(amqp)
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.queue_declare(q, passive=True)
    assert ei.value.reply_code == 404
    ch = conn.channel()
    ch.exchange_declare("dur.ex", passive=True)
    conn.close()


def test_durable_queue_on_another_worker_confirms_after_fsync_and_recovers(amqp):
    owner = connect_on(amqp, 0)
    q = owner.channel().queue_declare("dur.x", durable=True).method.queue
    other = connect_on(amqp, 1)
    ch = other.channel()
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(10):
        ch.basic_publish("", q, str(i).encode(), properties=persistent)
    got = drain(ch, q, 10)
    ch.basic_ack(got[3][0].delivery_tag, multiple=True)  # 0..3, settled on worker 0
    ch.basic_publish("", q, b"marker", properties=persistent)
    amqp.kill()
    amqp.start()
    conn = connect(amqp)
    ch = conn.channel()
    expected = [str(i).encode() for i in range(4, 10)] + [b"marker"]
    assert ch.queue_declare(q, passive=True).method.message_count == len(expected)
    assert [b for _, _, b in drain(ch, q, len(expected), ack=True)] == expected
    conn.close()


# ---- queue arguments: TTL, max-length, dead-lettering ------------------------

def closed_with(ch_factory, fn, code):
    ch = ch_factory()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        fn(ch)
    assert ei.value.reply_code == code, ei.value
    return ei.value


def test_invalid_and_inequivalent_queue_arguments_are_406(amqp):
    conn = connect(amqp)
    for args in ({"x-max-length": -1}, {"x-message-ttl": "soon"}, {"x-overflow": "bogus"},
                 {"x-dead-letter-routing-key": "k"}):
        e = closed_with(conn.channel, lambda ch: ch.queue_declare("args.bad", arguments=args), 406)
        assert list(args)[0] in e.reply_text
    ch = conn.channel()
    ch.queue_declare("args.q", arguments={"x-max-length": 5, "x-unknown": 1})
    ch.queue_declare("args.q", arguments={"x-max-length": 5})  # unknown ones are ignored
    e = closed_with(conn.channel, lambda c: c.queue_declare("args.q", arguments={"x-max-length": 6}), 406)
    assert "x-max-length" in e.reply_text
    conn.close()


def test_message_ttl_per_queue_and_per_message_never_delivered(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("ttl.q", arguments={"x-message-ttl": 100}).method.queue
    ch.basic_publish("", q, b"short-lived")
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    wait_until(lambda: ch.queue_declare(q, passive=True).method.message_count == 0,
               what="queue TTL to expire the message")
    assert ch.basic_get(q) == (None, None, None)
    q2 = ch.queue_declare("ttl.per-message").method.queue
    ch.basic_publish("", q2, b"expires", properties=pika.BasicProperties(expiration="50"))
    ch.basic_publish("", q2, b"stays")
    wait_until(lambda: ch.queue_declare(q2, passive=True).method.message_count == 1,
               what="per-message TTL")
    assert ch.basic_get(q2, auto_ack=True)[2] == b"stays"
    conn.close()


def test_dead_letter_on_reject_across_workers_with_x_death(amqp):
    owner = connect_on(amqp, 0)
    other = connect_on(amqp, 1)
    och = owner.channel()
    och.exchange_declare("dlx.ex", exchange_type="fanout")
    work = och.queue_declare("dlx.work", arguments={"x-dead-letter-exchange": "dlx.ex"}).method.queue
    dch = other.channel()
    dead = dch.queue_declare("dlx.dead").method.queue  # lives on worker 1
    dch.queue_bind(dead, "dlx.ex")
    och.basic_publish("", work, b"bad", properties=pika.BasicProperties(headers={"h": "v"}))
    cch = other.channel()  # consumer on worker 1, queue on worker 0
    method, _, body = drain(cch, work, 1)[0]
    cch.basic_reject(method.delivery_tag, requeue=False)
    cch.cancel()
    def arrived():
        return dch.queue_declare(dead, passive=True).method.message_count == 1
    wait_until(arrived, what="the dead-lettered copy")
    method, props, body = dch.basic_get(dead, auto_ack=True)
    assert body == b"bad" and method.exchange == "dlx.ex" and method.routing_key == work
    h = props.headers
    assert h["h"] == "v"
    (death,) = h["x-death"]
    assert death["count"] == 1 and death["reason"] == "rejected" and death["queue"] == work
    assert death["exchange"] == "" and death["routing-keys"] == [work]
    assert h["x-first-death-reason"] == "rejected" and h["x-first-death-queue"] == work
    assert och.queue_declare(work, passive=True).method.message_count == 0
    owner.close()
    other.close()


def test_dead_letter_on_expiry_and_max_length_and_ttl_cycle_dropped(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    sink = ch.queue_declare("dl.sink").method.queue
    q = ch.queue_declare("dl.ttl", arguments={
        "x-message-ttl": 30, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": sink}).method.queue
    ch.basic_publish("", q, b"old")
    wait_until(lambda: ch.queue_declare(sink, passive=True).method.message_count == 1,
               what="expired message dead-lettered")
    method, props, body = ch.basic_get(sink, auto_ack=True)
    assert body == b"old" and method.routing_key == sink
    assert props.headers["x-death"][0]["reason"] == "expired"
    # max-length 2, drop-head: the oldest go to the sink, reason maxlen
    m = ch.queue_declare("dl.max", arguments={
        "x-max-length": 2, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": sink}).method.queue
    for i in range(5):
        ch.basic_publish("", m, str(i).encode())
    assert [ch.basic_get(m, auto_ack=True)[2] for _ in range(2)] == [b"3", b"4"]
    dropped = [ch.basic_get(sink, auto_ack=True) for _ in range(3)]
    assert [b for _, _, b in dropped] == [b"0", b"1", b"2"]
    assert all(p.headers["x-death"][0]["reason"] == "maxlen" for _, p, _ in dropped)
    # a queue dead-lettering expired messages to itself: dropped after one
    # round (a cycle without a rejection), never looping
    loop = ch.queue_declare("dl.loop", arguments={
        "x-message-ttl": 20, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "dl.loop"}).method.queue
    ch.basic_publish("", loop, b"round")
    wait_until(lambda: ch.queue_declare(loop, passive=True).method.message_count == 0,
               what="the looping message to be dropped")
    # and it stays gone (a loop would bring it back every 20 ms)
    for _ in range(5):
        conn.process_data_events(time_limit=0.05)
        assert ch.queue_declare(loop, passive=True).method.message_count == 0
    conn.close()


def test_max_length_reject_publish_nacks_the_confirm(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("rp.q", arguments={"x-max-length": 2,
                                            "x-overflow": "reject-publish"}).method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"1")
    ch.basic_publish("", q, b"2")
    with pytest.raises(pika.exceptions.NackError):
        ch.basic_publish("", q, b"3")
    assert ch.queue_declare(q, passive=True).method.message_count == 2
    conn.close()


def test_priority_queue_delivers_highest_first_and_requeues_within_level(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    closed_with(conn.channel, lambda c: c.queue_declare("prio.bad", arguments={"x-max-priority": 300}), 406)
    q = ch.queue_declare("prio.q", arguments={"x-max-priority": 5}).method.queue
    for body, prio in ((b"low1", 1), (b"none", None), (b"high", 5), (b"low2", 1),
                       (b"over", 9), (b"mid", 3)):
        ch.basic_publish("", q, body, properties=pika.BasicProperties(priority=prio))
    # 9 counts as the maximum, 5; equal levels keep publish order
    order = [b"high", b"over", b"mid", b"low1", b"low2", b"none"]
    got = [ch.basic_get(q) for _ in range(6)]
    assert [b for _, _, b in got] == order
    # a requeued message goes back to the front of its own level
    ch.basic_nack(got[2][0].delivery_tag, requeue=True)   # mid
    ch.basic_nack(got[3][0].delivery_tag, requeue=True)   # low1
    ch.basic_publish("", q, b"top", properties=pika.BasicProperties(priority=4))
    ch.basic_publish("", q, b"mid2", properties=pika.BasicProperties(priority=3))
    rest = [ch.basic_get(q, auto_ack=True)[2] for _ in range(4)]
    assert rest == [b"top", b"mid", b"mid2", b"low1"]
    conn.close()


def test_delayed_message_exchange_routes_when_due(amqp):
    conn = connect(amqp)
    closed_with(conn.channel, lambda c: c.exchange_declare("delay.bad", "x-delayed-message"), 406)
    ch = conn.channel()
    ch.exchange_declare("delay.ex", "x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    q = ch.queue_declare("delay.q").method.queue
    ch.queue_bind(q, "delay.ex", routing_key="k")
    ch.confirm_delivery()
    def pub(body, delay):
        headers = {"x-delay": delay} if delay is not None else {}
        ch.basic_publish("delay.ex", "k", body, properties=pika.BasicProperties(headers=headers))
    pub(b"late", 600)
    pub(b"early", 150)
    pub(b"now", None)
    # held by the exchange: only the undelayed one is in the queue yet
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"now"
    got = [b for _, _, b in drain(ch, q, 2, ack=True)]
    assert got == [b"early", b"late"]
    ch.cancel()
    # a different type on redeclare is refused; the exchange is durable
    closed_with(conn.channel, lambda c: c.exchange_declare("delay.ex", "direct", durable=True), 406)
    conn.close()
    amqp.kill()
    amqp.start()
    conn = connect(amqp)
    conn.channel().exchange_declare("delay.ex", passive=True)
    conn.close()


@pytest.mark.parametrize("placement", ["local", "cross_worker"])
def test_durable_large_persistent_messages_survive_sigkill_byte_identical(amqp, placement):
    """Persistent messages over the 2 MiB storage batch limit (5 MiB and
    20 MiB) are stored in pieces: confirmed only once every piece is
    fsynced, and after SIGKILL each unacked one comes back whole and once,
    an acked one never. cross_worker: the publisher is on the other worker
    (its confirm waits for the queue worker's appends)."""
    import os
    owner = connect_on(amqp, 0)
    q = owner.channel().queue_declare("dur.big", durable=True).method.queue
    pub = connect_on(amqp, 1) if placement == "cross_worker" else owner
    ch = pub.channel()
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2, headers={"n": 1})
    bodies = [os.urandom(5 << 20), b"small", os.urandom(20 << 20), os.urandom((2 << 20) - 200),
              os.urandom(5 << 20)]
    for b in bodies:
        # returns once confirmed: every piece is durable
        ch.basic_publish("", q, b, properties=persistent)
    assert amqp.metric_sum("sluice_amqp_persist_split_total") >= 3
    # the 20 MiB one outgrows the log's 4 MiB staging ring: its later pieces
    # waited for room across loop iterations, its confirm for the last one
    assert amqp.metric_sum("sluice_amqp_persist_spilled_total") > 0
    cons = owner.channel()
    got = drain(cons, q, len(bodies), timeout=20)
    assert [body for _, _, body in got] == bodies
    cons.basic_ack(got[0][0].delivery_tag)  # the first 5 MiB one is done
    # its ack record precedes this message in the log: durable with its confirm
    ch.basic_publish("", q, b"marker", properties=persistent)
    amqp.kill()
    amqp.start()
    conn = connect(amqp)
    ch = conn.channel()
    expected = bodies[1:] + [b"marker"]
    assert ch.queue_declare(q, passive=True).method.message_count == len(expected)
    again = drain(ch, q, len(expected), timeout=20)
    assert [body for _, _, body in again] == expected
    assert all(method.redelivered for method, _, _ in again)
    assert all(props.headers == {"n": 1} and props.delivery_mode == 2 for _, props, _ in again)
    ch.basic_ack(again[-1][0].delivery_tag, multiple=True)
    conn.close()


def test_durable_log_trimmed_once_everything_is_settled_and_stays_correct(amqp):
    conn = connect(amqp)
    ch = conn.channel()
    q = ch.queue_declare("dur.trim", durable=True).method.queue
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    for i in range(5):
        ch.basic_publish("", q, str(i).encode(), properties=persistent)
    for method, _, _ in drain(ch, q, 5, ack=True)[-1:]:
        ch.basic_ack(method.delivery_tag)
    ch.cancel()
    wait_until(lambda: amqp.metric_sum("sluice_amqp_durable_log_trims_total") >= 1,
               what="the settled log to be trimmed")
    ch.basic_publish("", q, b"after", properties=persistent)
    amqp.kill()
    amqp.start()
    conn = connect(amqp)
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    assert ch.basic_get(q, auto_ack=True)[2] == b"after"
    conn.close()


def test_x_expires_deletes_an_unused_queue_but_not_a_consumed_one(amqp):
    conn = connect(amqp)
    closed_with(conn.channel, lambda c: c.queue_declare("exp.bad", arguments={"x-expires": 0}), 406)
    ch = conn.channel()
    q = ch.queue_declare("exp.q", arguments={"x-expires": 150}).method.queue
    kept = ch.queue_declare("exp.kept", arguments={"x-expires": 150}).method.queue
    ch.basic_consume(kept, lambda *a: None)
    # polled through the metrics: a passive declare would renew the lease
    wait_until(lambda: amqp.metric_sum("sluice_amqp_queues") == 1,
               what="the unused queue to expire")
    closed_with(conn.channel, lambda c: c.queue_declare(q, passive=True), 404)
    # the one with a consumer is still there
    assert conn.channel().queue_declare(kept, passive=True).method.consumer_count == 1
    conn.close()


def test_cross_worker_consumer_that_stops_reading_gets_everything_in_order(make_sluiced):
    """Deliveries to a consumer on another worker wait in its stub while its
    output is at the cap (64 KiB here; window and credit across the hop),
    then all arrive, in order, none twice."""
    amqp = make_sluiced(workers="2", listeners={"amqp": "127.0.0.1:0"},
                        extra={"limits": {"pending_response_bytes_max": "65536"}}).start()
    owner = connect_on(amqp, 0)
    och = owner.channel()
    q = och.queue_declare("xw.slow").method.queue
    # a raw consumer on worker 1 that does not read for a while
    port = amqp.port("amqp")
    for _ in range(64):
        sock = raw_handshake(port)
        peer_port = sock.getsockname()[1]
        conns = amqp.api("/api/v1/connections")["connections"]
        if any(c["peer"].endswith(f":{peer_port}") and c["worker"] == 1 for c in conns):
            break
        sock.close()
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    assert read_method(sock)[1:3] == (20, 11)
    consume = struct.pack(">H", 0) + shortstr(q.encode()) + shortstr(b"slow") + b"\x02" + struct.pack(">I", 0)
    sock.sendall(frame(1, 1, method(60, 20, consume)))
    assert read_method(sock)[1:3] == (60, 21)
    n, size = 400, 16384
    och.confirm_delivery()
    for i in range(n):
        och.basic_publish("", q, struct.pack(">I", i) + b"x" * (size - 4))
    bodies = []
    body = b""
    while len(bodies) < n:
        ftype, ch, payload = read_frame(sock)
        if ftype == 3:
            body += payload
            if len(body) == size:
                bodies.append(struct.unpack(">I", body[:4])[0])
                body = b""
    assert bodies == list(range(n))
    sock.close()
    owner.close()


def test_headers_exchange_x_match_all_any_and_with_x(amqp):
    owner = connect_on(amqp, 0)
    other = connect_on(amqp, 1)
    ch = owner.channel()
    ch.exchange_declare("hdr.ex", "headers", durable=True)
    qall = ch.queue_declare("hdr.all").method.queue
    qany = other.channel().queue_declare("hdr.any").method.queue  # on worker 1
    qx = ch.queue_declare("hdr.x").method.queue
    ch.queue_bind(qall, "hdr.ex", arguments={"x-match": "all", "format": "pdf", "size": 3})
    ch.queue_bind(qany, "hdr.ex", arguments={"x-match": "any", "format": "pdf", "type": "report"})
    ch.queue_bind(qx, "hdr.ex", arguments={"x-match": "all-with-x", "x-tenant": "a"})
    ch.confirm_delivery()
    def pub(body, headers):
        ch.basic_publish("hdr.ex", "", body, properties=pika.BasicProperties(headers=headers))
    pub(b"both", {"format": "pdf", "size": 3})       # all + any
    pub(b"any-only", {"type": "report", "size": 4})   # any
    pub(b"none", {"format": "zip"})
    pub(b"x", {"x-tenant": "a"})                     # with-x only
    pub(b"no-headers", None)
    def bodies(q):
        out = []
        while True:
            m = ch.basic_get(q, auto_ack=True)
            if m[0] is None:
                return out
            out.append(m[2])
    assert bodies(qall) == [b"both"]
    assert bodies(qany) == [b"both", b"any-only"]
    assert bodies(qx) == [b"x"]
    # unbinding needs the same arguments
    ch.queue_unbind(qall, "hdr.ex", arguments={"x-match": "all", "format": "pdf", "size": 3})
    pub(b"both", {"format": "pdf", "size": 3})
    assert bodies(qall) == []
    # a durable binding keeps its arguments across a restart
    qd = ch.queue_declare("hdr.durable", durable=True).method.queue
    ch.queue_bind(qd, "hdr.ex", arguments={"kind": "keep"})
    owner.close()
    other.close()
    amqp.kill()
    amqp.start()
    conn = connect(amqp)
    ch = conn.channel()
    ch.confirm_delivery()
    pub(b"kept", {"kind": "keep"})
    pub(b"other", {"kind": "drop"})
    assert bodies(qd) == [b"kept"]
    conn.close()


def test_fanout_to_queues_that_dead_letter_while_routing(amqp):
    """Dead-lettering from inside a publish's routing (max-length drop-head)
    routes again while the first routing is still handing out copies:
    every queue still gets its copy."""
    conn = connect(amqp)
    ch = conn.channel()
    sink = ch.queue_declare("nest.sink").method.queue
    ch.exchange_declare("nest.fan", "fanout")
    qs = []
    for i in range(3):
        q = ch.queue_declare(f"nest.q{i}", arguments={
            "x-max-length": 1, "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": sink}).method.queue
        ch.queue_bind(q, "nest.fan")
        qs.append(q)
    ch.confirm_delivery()
    ch.basic_publish("nest.fan", "", b"first")
    ch.basic_publish("nest.fan", "", b"second")
    for q in qs:
        assert [ch.basic_get(q, auto_ack=True)[2], ch.basic_get(q)[0]] == [b"second", None]
    assert [ch.basic_get(sink, auto_ack=True)[2] for _ in range(3)] == [b"first"] * 3
    assert ch.basic_get(sink)[0] is None
    conn.close()


def test_global_qos_counts_deliveries_from_every_worker(amqp):
    """basic.qos global=1 limits the channel's unacked deliveries together,
    whether their queues live on the channel's worker or another."""
    owner = connect_on(amqp, 0)
    consumer = connect_on(amqp, 1)
    och = owner.channel()
    remote_q = och.queue_declare("gq.remote").method.queue  # worker 0
    ch = consumer.channel()
    local_q = ch.queue_declare("gq.local").method.queue     # worker 1
    for i in range(5):
        och.basic_publish("", remote_q, b"r%d" % i)
        ch.basic_publish("", local_q, b"l%d" % i)
    assert och.queue_declare(remote_q, passive=True).method.message_count == 5
    ch.basic_qos(prefetch_count=3, global_qos=True)
    got = []
    ch.basic_consume(remote_q, lambda c, m, p, b: got.append(m))
    ch.basic_consume(local_q, lambda c, m, p, b: got.append(m))
    wait_until(lambda: (consumer.process_data_events(time_limit=0.05), len(got) >= 3)[1],
               what="three deliveries")
    consumer.process_data_events(time_limit=0.3)
    assert len(got) == 3  # never more than the channel's global prefetch
    ch.basic_ack(got[0].delivery_tag)
    wait_until(lambda: (consumer.process_data_events(time_limit=0.05), len(got) >= 4)[1],
               what="one more after an ack")
    consumer.process_data_events(time_limit=0.3)
    assert len(got) == 4
    ch.basic_ack(got[-1].delivery_tag, multiple=True)
    wait_until(lambda: (consumer.process_data_events(time_limit=0.05), len(got) >= 7)[1],
               what="three more after acking all")
    owner.close()
    consumer.close()


def test_fanout_copies_on_one_worker_share_a_body_and_outlive_each_other(amqp):
    """A fanout to three queues on the publisher's worker and one on the
    other: the local copies share one body. Each queue's copy lives on its
    own (acked, requeued, purged, dead-lettered, its queue deleted, sent to
    a consumer on the other worker) in any order, and every reader sees
    the bytes that were published. The held-bytes gauge shows one body per
    worker, not one per queue."""
    import os
    owner = connect_on(amqp, 0)
    ch = owner.channel()
    ch.exchange_declare("share.fan", exchange_type="fanout")
    ch.queue_declare("share.dlq")
    ch.queue_declare("share.a", arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "share.dlq"})
    for q in ("share.a", "share.b", "share.c"):
        if q != "share.a":
            ch.queue_declare(q)
        ch.queue_bind(q, "share.fan")
    other = connect_on(amqp, 1)
    och = other.channel()
    och.queue_declare("share.remote")
    och.queue_bind("share.remote", "share.fan")
    before = amqp.metric_sum("sluice_amqp_held_bytes")
    pub = owner.channel()
    pub.confirm_delivery()
    bodies = [os.urandom(1 << 20) for _ in range(4)]
    for b in bodies:
        pub.basic_publish("share.fan", "", b)
    held = amqp.metric_sum("sluice_amqp_held_bytes") - before
    # 4 bodies here + 4 on the other worker, not 16
    assert 8 << 20 <= held < 9 << 20, held
    # share.a: reject the first two (dead-lettered: a new message), ack the rest
    ca = owner.channel()
    got = drain(ca, "share.a", 4)
    assert [b for _, _, b in got] == bodies
    for m, _, _ in got[:2]:
        ca.basic_reject(m.delivery_tag, requeue=False)
    ca.basic_ack(got[3][0].delivery_tag, multiple=True)
    # share.b: purged while the others still hold the bodies
    assert ch.queue_purge("share.b").method.message_count == 4
    # share.c: read by a consumer on the other worker, requeued, read again
    c2 = other.channel()
    first = drain(c2, "share.c", 4)
    assert [b for _, _, b in first] == bodies
    c2.basic_nack(first[-1][0].delivery_tag, multiple=True, requeue=True)
    again = drain(c2, "share.c", 4, timeout=10)
    assert [b for _, _, b in again] == bodies and all(m.redelivered for m, _, _ in again)
    c2.basic_ack(again[-1][0].delivery_tag, multiple=True)
    for conn, q, want in ((owner, "share.dlq", bodies[:2]), (other, "share.remote", bodies)):
        c = conn.channel()
        got = drain(c, q, len(want))
        assert [b for _, _, b in got] == want
        c.basic_ack(got[-1][0].delivery_tag, multiple=True)
    ch.queue_delete("share.a")
    wait_until(lambda: amqp.metric_sum("sluice_amqp_held_bytes") - before < 1 << 20,
               what="every shared body to be freed")
    owner.close()
    other.close()
