"""AMQP flow control and durability under failure: resource alarms
(connection.blocked / unblocked), coalesced publisher confirms, and SIGKILL
restarts of durable queues (delayed messages, logs trimmed while some of
them is unacked, messages over the storage batch limit, and a restart under
load with publishers and consumers on both workers)."""
import os
import signal
import socket
import struct
import threading
import time

import pika
from harness import alarm_timeout, wait_until
import pytest

from test_amqp import connect, connect_on, drain, frame, longstr, method, read_frame, shortstr

TEST_TIMEOUT_S = 60


@pytest.fixture(autouse=True)
def hard_timeout():
    with alarm_timeout(TEST_TIMEOUT_S):
        yield


def alarm(s, kind):
    return s.metrics().get(f'sluice_amqp_alarm{{kind="{kind}"}}')


# ---- resource alarms ----------------------------------------------------------

def test_memory_alarm_blocks_publisher_until_consumer_drains(make_sluiced):
    s = make_sluiced(workers="2", listeners={"amqp": "127.0.0.1:0"},
                     extra={"limits": {"amqp_memory_high_watermark_bytes": "4096"}}).start()
    assert alarm(s, "memory") == 0
    pub = connect(s)
    events = []
    pub.add_on_connection_blocked_callback(lambda c, m: events.append(("blocked", m.method.reason)))
    pub.add_on_connection_unblocked_callback(lambda c, m: events.append(("unblocked", None)))
    pch = pub.channel()
    q = pch.queue_declare("alarm.q").method.queue
    body = b"x" * 1024
    for _ in range(5):  # 5 KiB held, over the 4 KiB watermark
        pch.basic_publish("", q, body)
    wait_until(lambda: alarm(s, "memory") == 1, what="memory alarm raised")
    # the next publish is read, then the connection is blocked and told so
    pch.basic_publish("", q, b"last read")
    wait_until(lambda: (pub.process_data_events(0.05), events)[1], what="connection.blocked")
    assert events == [("blocked", "low on memory")]
    # not read while blocked: this publish stays in the socket
    pch.basic_publish("", q, b"held back")
    cons = connect(s)
    cch = cons.channel()
    pub.process_data_events(0.2)
    assert cch.queue_declare(q, passive=True).method.message_count == 6
    # consumers keep being served; draining clears the alarm
    got = [b for _, _, b in drain(cch, q, 6, ack=True)]
    assert got[-1] == b"last read"
    cch.cancel()
    wait_until(lambda: alarm(s, "memory") == 0, what="memory alarm cleared")
    wait_until(lambda: (pub.process_data_events(0.05), len(events) == 2)[1],
               what="connection.unblocked")
    assert events[1] == ("unblocked", None)
    wait_until(lambda: cch.queue_declare(q, passive=True).method.message_count == 1,
               what="the held-back publish read after unblocking")
    pch.basic_publish("", q, b"after")
    assert [b for _, _, b in drain(cch, q, 2, ack=True)] == [b"held back", b"after"]
    pub.close()
    cons.close()


def test_memory_alarm_counts_unacked_deliveries(make_sluiced):
    """Messages delivered and not yet acked are still in memory: with no
    message ready at all, unacked deliveries alone raise the alarm, and the
    acks clear it."""
    s = make_sluiced(workers="2", listeners={"amqp": "127.0.0.1:0"},
                     extra={"limits": {"amqp_memory_high_watermark_bytes": "4096"}}).start()
    cons = connect(s)
    cch = cons.channel()
    q = cch.queue_declare("unacked.q").method.queue
    got = []
    cch.basic_consume(q, lambda ch, m, p, b: got.append(m.delivery_tag), auto_ack=False)
    pub = connect(s)
    pch = pub.channel()
    for _ in range(5):  # 5 KiB, every one delivered at once and left unacked
        pch.basic_publish("", q, b"u" * 1024)
    wait_until(lambda: (cons.process_data_events(0.05), len(got) == 5)[1],
               what="all five delivered")
    wait_until(lambda: alarm(s, "memory") == 1, what="memory alarm raised by unacked messages")
    assert cch.queue_declare(q, passive=True).method.message_count == 0  # none ready
    cch.basic_ack(got[-1], multiple=True)
    wait_until(lambda: (cons.process_data_events(0.05), alarm(s, "memory") == 0)[1],
               what="memory alarm cleared by the acks")
    pub.close()
    cons.close()


def test_disk_alarm_blocks_publishers_but_serves_consumers(make_sluiced):
    # more free space required than any test machine has: the alarm is on
    s = make_sluiced(workers="2", listeners={"amqp": "127.0.0.1:0"},
                     extra={"limits": {"amqp_disk_free_limit_bytes": "1000g"}}).start()
    wait_until(lambda: alarm(s, "disk") == 1, what="disk alarm raised")
    pub = connect(s)
    reasons = []
    pub.add_on_connection_blocked_callback(lambda c, m: reasons.append(m.method.reason))
    pch = pub.channel()
    q = pch.queue_declare("disk.q").method.queue
    pch.basic_publish("", q, b"one")
    wait_until(lambda: (pub.process_data_events(0.05), reasons)[1], what="connection.blocked")
    assert reasons == ["low on disk"]
    cons = connect(s)
    cch = cons.channel()
    method_, _, body = cch.basic_get(q, auto_ack=True)
    assert body == b"one"
    # pub is not closed: its connection.close would not be read either
    # (as with RabbitMQ) until pika's blocked_connection_timeout
    cons.close()


def test_client_without_blocked_capability_is_paused_silently(make_sluiced):
    """A raw client that does not announce connection.blocked: never sent
    the method, but its publishes are not read while the alarm is on."""
    s = make_sluiced(workers="1", listeners={"amqp": "127.0.0.1:0"},
                     extra={"limits": {"amqp_disk_free_limit_bytes": "1000g"}}).start()
    wait_until(lambda: alarm(s, "disk") == 1, what="disk alarm raised")
    sock = raw_open(s, capabilities=False)
    publish_raw(sock, 1, b"raw.q", b"a")
    publish_raw(sock, 1, b"raw.q", b"b")
    sock.settimeout(0.5)
    with pytest.raises(socket.timeout):
        while True:  # only heartbeats may come; connection.blocked never
            ftype, ch, payload = read_frame(sock)
            assert ftype == 8, (ftype, payload[:4])
    cons = connect(s)
    cch = cons.channel()
    assert cch.queue_declare("raw.q", passive=True).method.message_count == 1
    cons.close()
    sock.close()


# ---- publisher confirms -------------------------------------------------------------

def read_confirms(sock, n):
    """basic.ack/nack frames until tag n is confirmed: [(kind, tag, multiple)]."""
    out = []
    while not out or out[-1][1] < n:
        ch, cls, mid, args = read_method_raw(sock)
        assert (cls, mid) in ((60, 80), (60, 120)), (cls, mid)
        tag, bits = struct.unpack(">QB", args[:9])
        out.append(("ack" if mid == 80 else "nack", tag, bool(bits & 1)))
    return out


def check_confirm_cover(confirms, n):
    """The confirms answer 1..n exactly once, in order."""
    answered = 0
    for kind, tag, multiple in confirms:
        assert tag > answered, confirms
        assert multiple or tag == answered + 1, confirms
        answered = tag
    assert answered == n


@pytest.mark.parametrize("persistent", [False, True], ids=["transient", "persistent"])
def test_confirms_decided_together_leave_as_one_ack_with_multiple(make_sluiced, persistent):
    s = make_sluiced(workers="1", listeners={"amqp": "127.0.0.1:0"}).start()
    sock = raw_open(s, confirm=True, queue=b"conf.q", durable=persistent)
    n = 200
    # one write: the broker reads them in one or a few chunks, and the
    # persistent ones reach the disk in one or a few group commits
    sock.sendall(b"".join(publish_frames(1, b"conf.q", b"m%d" % i, persistent=persistent)
                          for i in range(n)))
    confirms = read_confirms(sock, n)
    check_confirm_cover(confirms, n)
    assert all(kind == "ack" for kind, _, _ in confirms)
    if s.backend != "chaos":  # chaos hands the bytes over in small pieces
        assert len(confirms) <= 20, f"{len(confirms)} basic.ack frames for {n} publishes"
        assert confirms[-1][2], "the last ack covers several publishes (multiple=1)"
    sock.close()


def test_nacks_stay_individual_between_coalesced_acks(make_sluiced):
    """x-overflow reject-publish: each refused publish gets its own
    basic.nack, in order, and no multiple ack spans one."""
    s = make_sluiced(workers="1", listeners={"amqp": "127.0.0.1:0"}).start()
    conn = connect(s)
    conn.channel().queue_declare("conf.full", arguments={"x-max-length": 3,
                                                          "x-overflow": "reject-publish"})
    sock = raw_open(s, confirm=True, queue=b"conf.other")
    n = 30
    # every third publish (tags 1, 4, .., 28) goes to the full queue: the
    # first three fit, the other seven are refused
    sock.sendall(b"".join(publish_frames(1, b"conf.full" if i % 3 == 0 else b"conf.other", b"x")
                          for i in range(n)))
    confirms = read_confirms(sock, n)
    check_confirm_cover(confirms, n)
    nacks = [(tag, multiple) for kind, tag, multiple in confirms if kind == "nack"]
    assert nacks == [(t, False) for t in (10, 13, 16, 19, 22, 25, 28)], confirms
    if s.backend != "chaos":
        assert any(kind == "ack" and multiple for kind, _, multiple in confirms), confirms
    conn.close()
    sock.close()


# ---- durable queues across SIGKILL ----------------------------------------------

def queue_segments(s, name):
    d = os.path.join(s.data_dir, "amqp", "q-" + name.encode().hex())
    return sorted(f for f in os.listdir(d) if f.endswith(".log"))


def test_durable_log_trimmed_below_lowest_unacked_while_queue_not_empty(make_sluiced):
    s = make_sluiced(workers="1", listeners={"amqp": "127.0.0.1:0"}).start()
    conn = connect(s)
    ch = conn.channel()
    q = ch.queue_declare("trim.q", durable=True).method.queue
    ch.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    body = b"t" * (512 << 10)
    n = 40  # 20 MiB: three 8 MiB segments
    for i in range(n):
        ch.basic_publish("", q, b"%03d" % i + body, properties=persistent)
    assert len(queue_segments(s, q)) >= 3
    ch.basic_qos(prefetch_count=n - 1)
    got = drain(ch, q, n - 1)
    for method_, _, _ in got[:n - 2]:
        ch.basic_ack(method_.delivery_tag)
    # message n-2 stays unacked and n-1 ready: the queue is never empty,
    # yet the segments below the lowest live offset go
    wait_until(lambda: len(queue_segments(s, q)) == 1, what="segments below the unacked one deleted")
    assert s.metric_sum("sluice_amqp_durable_log_trims_total") >= 1
    s.kill()
    s.start()
    conn = connect(s)
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 2
    back = drain(ch, q, 2, ack=True)
    assert [b[:3] for _, _, b in back] == [b"%03d" % (n - 2), b"%03d" % (n - 1)]
    assert back[0][0].redelivered
    conn.close()


def test_durable_delayed_messages_survive_sigkill_and_fire_when_due(make_sluiced):
    s = make_sluiced(workers="2", listeners={"amqp": "127.0.0.1:0"}).start()
    conn = connect(s)
    ch = conn.channel()
    ch.exchange_declare("delay.dur", exchange_type="x-delayed-message", durable=True,
                        arguments={"x-delayed-type": "direct"})
    q = ch.queue_declare("delay.dq", durable=True).method.queue
    ch.queue_bind(q, "delay.dur", routing_key="k")
    ch.confirm_delivery()

    def props(delay_ms, mode=2):
        return pika.BasicProperties(delivery_mode=mode, headers={"x-delay": delay_ms})

    # released before the kill, consumed and acked: must not come back
    ch.basic_publish("delay.dur", "k", b"early", properties=props(50))
    (method_, _, body), = drain(ch, q, 1)
    assert body == b"early"
    ch.basic_ack(method_.delivery_tag)
    ch.cancel()
    # held across the kill: confirmed once stored
    t0 = time.monotonic()
    ch.basic_publish("delay.dur", "k", b"late", properties=props(2500))
    ch.basic_publish("delay.dur", "k", b"later", properties=props(3000))
    ch.basic_publish("delay.dur", "k", b"transient", properties=props(2500, mode=1))
    # the ack of "early" reaches the disk before this confirm
    ch.basic_publish("", q, b"marker", properties=pika.BasicProperties(delivery_mode=2))
    s.kill()
    s.start()
    conn = connect(s)
    ch = conn.channel()
    got = drain(ch, q, 3, ack=True)
    elapsed = time.monotonic() - t0
    assert [b for _, _, b in got] == [b"marker", b"late", b"later"]
    ch.basic_ack(got[-1][0].delivery_tag)
    assert elapsed >= 2.4, f"fired after {elapsed:.2f}s, before its delay"
    assert not got[1][0].redelivered  # never delivered before: it was held
    ch.cancel()
    ch.confirm_delivery()
    ch.basic_publish("", q, b"marker2", properties=pika.BasicProperties(delivery_mode=2))
    # released and acked: the delayed log does not bring them back again
    s.kill()
    s.start()
    conn = connect(s)
    ch = conn.channel()
    assert ch.queue_declare(q, passive=True).method.message_count == 1
    method_, _, body = ch.basic_get(q, auto_ack=True)
    assert body == b"marker2"
    assert ch.queue_declare(q, passive=True).method.message_count == 0
    conn.close()


def test_sigkill_under_load_loses_no_confirmed_message(make_sluiced):
    """Publishers with confirms and consumers acking, on both workers (so
    forwarded publishes, remote consumers and settlements crossing workers
    are all in flight), SIGKILL mid-stream: after the restart every
    confirmed message is either back in its queue or was delivered before
    (an ack may not have reached the disk: those come back redelivered),
    nothing is back twice, and nothing delivered before comes back without
    redelivered=True."""
    s = make_sluiced(workers="2", listeners={"amqp": "127.0.0.1:0"}).start()
    queues = []
    for w in (0, 1):  # one durable queue living on each worker
        c = connect_on(s, w)
        queues.append(c.channel().queue_declare(f"load.q{w}", durable=True).method.queue)
        c.close()
    persistent = pika.BasicProperties(delivery_mode=2)
    stop = threading.Event()
    confirmed, delivered, acked, errors = set(), set(), set(), []
    lock = threading.Lock()

    def publisher(w):
        try:
            conn = connect_on(s, w)
            ch = conn.channel()
            ch.confirm_delivery()
            i = 0
            while not stop.is_set():
                body = f"p{w}-{i}".encode()
                ch.basic_publish("", queues[i % 2], body, properties=persistent)
                with lock:
                    confirmed.add(body)
                i += 1
        except (pika.exceptions.AMQPError, OSError) as e:
            if not stop.is_set():
                errors.append(e)
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    def consumer(w):
        try:
            conn = connect_on(s, w)
            ch = conn.channel()
            ch.basic_qos(prefetch_count=1000)

            def on_msg(ch_, method_, props, body):
                with lock:
                    delivered.add(body)
                # only every other message is acked: the rest stays unacked
                # until the kill and must come back
                if hash(body) % 2:
                    ch_.basic_ack(method_.delivery_tag)
                    with lock:
                        acked.add(body)

            for q in queues:
                ch.basic_consume(q, on_msg)
            while not stop.is_set():
                conn.process_data_events(0.05)
        except (pika.exceptions.AMQPError, OSError) as e:
            if not stop.is_set():
                errors.append(e)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=f, args=(w,), daemon=True)
               for f in (publisher, consumer) for w in (0, 1)]
    for t in threads:
        t.start()
    wait_until(lambda: len(confirmed) >= 400 and len(delivered) >= 200 or errors, timeout=30,
               what="load running")
    assert not errors, errors
    stop.set()
    s.kill()  # SIGKILL mid-stream (the clients notice only after it)
    for t in threads:
        t.join(15)
    assert not errors, errors
    with lock:
        confirmed_, delivered_, acked_ = set(confirmed), set(delivered), set(acked)
    s.start()
    conn = connect(s)
    back = {}
    for q in queues:
        ch = conn.channel()
        n = ch.queue_declare(q, passive=True).method.message_count
        if n:
            for method_, _, body in drain(ch, q, n, ack=True):
                assert body not in back, f"{body} came back twice"
                back[body] = method_.redelivered
                # published by our publishers, confirmed or not yet
                assert body.startswith(b"p"), body
    # Only an acknowledgement may make a confirmed message go: delivered but
    # unacked ones must come back too.
    lost = confirmed_ - acked_ - set(back)
    assert not lost, f"{len(lost)} confirmed messages lost, e.g. {sorted(lost)[:5]}"
    for body, redelivered in back.items():
        if body in delivered_:
            assert redelivered, f"{body} delivered before the kill, back without redelivered"
    assert len(confirmed_) >= 400
    conn.close()


# ---- raw client helpers -----------------------------------------------------------

def table(entries):
    out = b""
    for k, tag, v in entries:
        out += shortstr(k) + tag + v
    return longstr(out)


def read_method_raw(sock):
    while True:
        ftype, ch, payload = read_frame(sock)
        if ftype == 1:
            cls, mid = struct.unpack(">HH", payload[:4])
            return ch, cls, mid, payload[4:]


def raw_open(s, capabilities=True, confirm=False, queue=b"raw.q", durable=False):
    """A connection with channel 1 open and `queue` declared."""
    sock = socket.create_connection(("127.0.0.1", s.port("amqp")), timeout=10)
    sock.sendall(b"AMQP\x00\x00\x09\x01")
    assert read_method_raw(sock)[1:3] == (10, 10)
    caps = table([(b"connection.blocked", b"t", b"\x01")]) if capabilities else table([])
    props = table([(b"capabilities", b"F", caps)])
    sock.sendall(frame(1, 0, method(10, 11, props + shortstr(b"PLAIN") +
                                    longstr(b"\x00guest\x00guest") + shortstr(b"en_US"))))
    assert read_method_raw(sock)[1:3] == (10, 30)
    sock.sendall(frame(1, 0, method(10, 31, struct.pack(">HIH", 2047, 131072, 0))))
    sock.sendall(frame(1, 0, method(10, 40, shortstr(b"/") + shortstr(b"") + b"\x00")))
    assert read_method_raw(sock)[1:3] == (10, 41)
    sock.sendall(frame(1, 1, method(20, 10, shortstr(b""))))
    assert read_method_raw(sock)[1:3] == (20, 11)
    sock.sendall(frame(1, 1, method(50, 10, b"\x00\x00" + shortstr(queue) +
                                    (b"\x02" if durable else b"\x00") +
                                    struct.pack(">I", 0))))
    assert read_method_raw(sock)[1:3] == (50, 11)
    if confirm:
        sock.sendall(frame(1, 1, method(85, 10, b"\x00")))
        assert read_method_raw(sock)[1:3] == (85, 11)
    return sock


def publish_frames(ch, rk, body, exchange=b"", persistent=False):
    props = struct.pack(">HB", 0x1000, 2) if persistent else struct.pack(">H", 0)
    return (frame(1, ch, method(60, 40, b"\x00\x00" + shortstr(exchange) + shortstr(rk) + b"\x00")) +
            frame(2, ch, struct.pack(">HHQ", 60, 0, len(body)) + props) + frame(3, ch, body))


def publish_raw(sock, ch, rk, body):
    sock.sendall(publish_frames(ch, rk, body))


def test_message_size_limit_from_config_gets_406(make_sluiced):
    """[limits] amqp_message_bytes_max caps a publish's body (RabbitMQ's
    max_message_size): one byte over is 406 on the channel, the limit itself
    goes through."""
    s = make_sluiced(workers="1", listeners={"amqp": "127.0.0.1:0"},
                     extra={"limits": {"amqp_message_bytes_max": "64k"}}).start()
    conn = connect(s)
    ch = conn.channel()
    q = ch.queue_declare("limit.q").method.queue
    ch.confirm_delivery()
    ch.basic_publish("", q, b"x" * 65536)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
        ch.basic_publish("", q, b"x" * 65537)
    assert ei.value.reply_code == 406 and "larger than max size 65536" in ei.value.reply_text
    assert conn.channel().queue_declare(q, passive=True).method.message_count == 1
    conn.close()
