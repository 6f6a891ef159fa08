"""Kafka front-end with real clients (kcat, confluent-kafka-python, kafka-python)
and raw sockets: produce then consume back every message, several partitions
over both workers, auto-created topics, the ApiVersions v0 fallback, frames
over the cap and unsupported versions. Runs on every backend. Each client runs
in a subprocess with a hard timeout; raw sockets have timeouts too."""
import os
import shutil
import socket
import struct
import subprocess
import sys

import pytest

from harness import recv_until_closed, wait_until

CLIENT_TIMEOUT = 90
PY = "/usr/bin/python3"


def start(make_sluiced, **kw):
    s = make_sluiced(listeners={"kafka": "127.0.0.1:0"}, **kw)
    return s.start()


def bootstrap(s):
    return f"127.0.0.1:{s.port('kafka')}"


def run(args, stdin=None):
    p = subprocess.run(args, input=stdin, capture_output=True, timeout=CLIENT_TIMEOUT)
    assert p.returncode == 0, (args, p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    return p.stdout


def run_py(code, *args):
    return run([PY, "-c", code, *args])


# ---- raw protocol -----------------------------------------------------------


def uvarint(n):
    """Unsigned varint, as the flexible versions' compact lengths use."""
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def frame(api_key, version, corr, body=b"", client_id=b"raw", flexible=False):
    hdr = struct.pack(">hhi", api_key, version, corr) + struct.pack(">h", len(client_id)) + client_id
    if flexible:
        hdr += b"\x00"
    payload = hdr + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        d = sock.recv(n - len(buf))
        if not d:
            raise EOFError(buf)
        buf += d
    return buf


def recv_frame(sock):
    (n,) = struct.unpack(">i", recv_exact(sock, 4))
    return recv_exact(sock, n)


def raw_conn(s):
    c = socket.create_connection(("127.0.0.1", s.port("kafka")), timeout=10)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def test_api_versions_fallback_keeps_connection(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    # A version from the future: a v0 answer with UNSUPPORTED_VERSION naming
    # ApiVersions, header without tagged fields, connection kept open.
    c.sendall(frame(18, 99, 7, b"\x00", flexible=True))
    r = recv_frame(c)
    corr, err, n = struct.unpack(">ihi", r[:10])
    assert (corr, err, n) == (7, 35, 1)
    key, vmin, vmax = struct.unpack(">hhh", r[10:16])
    assert key == 18 and vmin == 0 and vmax >= 3
    # Retry with v0 on the same connection: the full table.
    c.sendall(frame(18, 0, 8))
    r = recv_frame(c)
    corr, err, n = struct.unpack(">ihi", r[:10])
    assert corr == 8 and err == 0 and n >= 5
    keys = {struct.unpack(">hhh", r[10 + 6 * i:16 + 6 * i])[0] for i in range(n)}
    assert {0, 1, 2, 3, 18} <= keys
    c.close()


def test_api_versions_v3_header_is_v0(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    body = b"\x07sluice\x041-0\x00"  # compact strings + tagged fields
    c.sendall(frame(18, 3, 9, body, flexible=True))
    r = recv_frame(c)
    corr, err = struct.unpack(">ih", r[:6])
    assert corr == 9 and err == 0
    c.close()


def test_unsupported_version_closes(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    c.sendall(frame(0, 0, 1, b"\x00\x01\x00\x00\x03\xe8\x00\x00\x00\x00"))  # Produce v0
    data, _ = recv_until_closed(c, timeout=10)
    assert data == b""


def test_oversized_frame_refused(make_sluiced):
    s = start(make_sluiced, extra={"limits": {"frame_bytes_max": "16k"}})
    c = raw_conn(s)
    # Only the size prefix is sent: the refusal cannot depend on buffering.
    c.sendall(struct.pack(">i", 16 * 1024 + 1))
    data, _ = recv_until_closed(c, timeout=10)
    assert data == b""
    # A frame at the cap is still read (an ApiVersions padded with a client id).
    c = raw_conn(s)
    cid = b"x" * (16 * 1024 - 10)
    c.sendall(frame(18, 0, 3, b"", client_id=cid))
    r = recv_frame(c)
    assert struct.unpack(">ih", r[:6]) == (3, 0)
    c.close()


def test_idle_connection_closed(make_sluiced):
    s = start(make_sluiced, extra={"kafka": {"connections_max_idle_ms": "300"}})
    c = raw_conn(s)
    c.sendall(frame(18, 0, 1))
    assert struct.unpack(">ih", recv_frame(c)[:6]) == (1, 0)
    data, secs = recv_until_closed(c, timeout=10)
    assert data == b"" and 0.2 < secs < 5


def test_pipelined_requests_answered_in_order(make_sluiced):
    s = start(make_sluiced, extra={"limits": {"inflight_requests_max": "4"}})
    c = raw_conn(s)
    # 300 requests in one write, far over the in-flight cap: reading pauses
    # and resumes; answers come back complete and in request order.
    reqs = b"".join(frame(18, 0, i, b"") if i % 2 else frame(3, 1, i, b"\xff\xff\xff\xff")
                    for i in range(300))
    c.sendall(reqs)
    for i in range(300):
        r = recv_frame(c)
        assert struct.unpack(">i", r[:4])[0] == i
    c.close()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def batch_v2(producer_id, epoch, seq, value=b"v"):
    rec = b"\x00\x00\x00\x01" + bytes([2 * len(value)]) + value + b"\x00"
    rec = bytes([2 * len(rec)]) + rec
    tail = struct.pack(">hiqqqhii", 0, 0, 1700000000000, 1700000000000, producer_id, epoch, seq, 1) + rec
    head = struct.pack(">qiib", 0, 4 + 1 + 4 + len(tail), -1, 2)
    return head + struct.pack(">I", crc32c(tail)) + tail


def produce_v3(topic, batch, corr):
    t = topic.encode()
    body = struct.pack(">hhi", -1, -1, 10000) + struct.pack(">ih", 1, len(t)) + t
    body += struct.pack(">iii", 1, 0, len(batch)) + batch
    return frame(0, 3, corr, body)


def produce_result(r):
    # v3: [name, [index, error, base_offset, log_append_time]], throttle
    (nlen,) = struct.unpack(">h", r[8:10])
    off = 10 + nlen + 4
    _, err, base = struct.unpack(">ihq", r[off:off + 14])
    return err, base


def test_idempotent_producer_sequences(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    pid = 123456789
    steps = [(0, 0, (0, 0)),    # first batch
             (0, 0, (0, 0)),    # the same again: a duplicate, answered with its offset
             (0, 5, (45, -1)),  # a gap: OUT_OF_ORDER_SEQUENCE_NUMBER
             (0, 1, (0, 1)),    # the next one
             (1, 0, (0, 2)),    # a bumped epoch starts over (KIP-360)
             (0, 2, (47, -1))]  # the old epoch is fenced: INVALID_PRODUCER_EPOCH
    for i, (epoch, seq, want) in enumerate(steps):
        c.sendall(produce_v3("idem", batch_v2(pid, epoch, seq), i))
        r = recv_frame(c)
        assert struct.unpack(">i", r[:4])[0] == i
        assert produce_result(r) == want, (i, produce_result(r))
    c.close()


def test_pipelined_produces_to_a_new_topic_keep_their_order(make_sluiced):
    # Each request names a topic that does not exist yet: every one waits
    # for its creation. They must still be appended in request order (Kafka
    # handles a connection's requests one at a time).
    s = start(make_sluiced)
    c = raw_conn(s)
    c.sendall(b"".join(produce_v3("fresh", batch_v2(-1, -1, -1, b"p%d" % i), i) for i in range(6)))
    for i in range(6):
        r = recv_frame(c)
        assert struct.unpack(">i", r[:4])[0] == i
        assert produce_result(r) == (0, i), (i, produce_result(r))
    c.close()


_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ (0x82F63B78 if _c & 1 else 0)
    _CRC_TABLE.append(_c)


def crc32c_fast(data):
    crc = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def big_batch(value):
    """A v2 batch of one record whose value is `value` (any size)."""
    body = b"\x00\x00\x00" + b"\x01" + zigzag(len(value)) + value + b"\x00"
    rec = zigzag(len(body)) + body
    tail = struct.pack(">hiqqqhii", 0, 0, 1700000000000, 1700000000000, -1, -1, -1, 1) + rec
    head = struct.pack(">qiib", 0, 4 + 1 + 4 + len(tail), -1, 2)
    return head + struct.pack(">I", crc32c_fast(tail)) + tail


def zigzag(n):
    return uvarint((n << 1) ^ (n >> 63))


def test_large_frames_received_in_place(make_sluiced, backend):
    # Produce requests larger than a receive buffer (64 KiB) switch the
    # connection to receiving in place: frames are dispatched where they
    # land in a 1 MiB pool buffer, and a frame cut by a buffer's end moves to
    # the next one. 48 of 33-150 KiB, in one write far over the in-flight
    # cap (reading pauses with whole frames waiting in the buffer), with
    # small requests between them: every answer in order, every value back
    # intact, and (kernel backends) the frames counted as received in place
    # with some moved across buffers.
    s = start(make_sluiced, extra={"limits": {"inflight_requests_max": "4"}})
    c = raw_conn(s)
    sizes = [33 * 1024 + (i * 7919) % (117 * 1024) for i in range(48)]
    values = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    reqs = []
    for i, v in enumerate(values):
        reqs.append(produce_v3("inplace", big_batch(v), 2 * i))
        reqs.append(frame(18, 0, 2 * i + 1))  # a small one between
    c.sendall(b"".join(reqs))
    for i in range(len(values)):
        r = recv_frame(c)
        assert struct.unpack(">i", r[:4])[0] == 2 * i
        assert produce_result(r) == (0, i), (i, produce_result(r))
        r = recv_frame(c)
        assert struct.unpack(">ih", r[:6]) == (2 * i + 1, 0)
    got = []
    corr = 1000
    while len(got) < len(values):
        c.sendall(fetch_v4("inplace", 0, len(got), corr))
        got += fetched_values(recv_frame(c))
        corr += 1
    assert [len(v) for v in got] == sizes
    assert got == values
    in_place = s.metric_sum("sluice_kafka_frames_in_place_total")
    moved = s.metric_sum("sluice_kafka_in_place_moved_bytes_total")
    if backend == "chaos":
        assert in_place == 0  # the chaos layer splits input: no direct receives
    else:
        assert in_place >= len(values) - 1 and moved > 0, (in_place, moved)
    # A bad size prefix while receiving in place (the last frame was large)
    # closes that connection only, as in the buffered path.
    c.sendall(produce_v3("inplace", big_batch(b"z" * 40000), 5000))
    assert produce_result(recv_frame(c)) == (0, len(values))
    c.sendall(struct.pack(">i", 0x7FFFFFFF))
    data, _ = recv_until_closed(c, timeout=10)
    assert data == b""
    c2 = raw_conn(s)
    c2.sendall(fetch_v4("inplace", 0, len(values), 1))
    assert fetched_values(recv_frame(c2)) == [b"z" * 40000]
    c2.close()


def large_in_use(s):
    """Large pool buffers in use, all workers."""
    return sum(v for k, v in s.metrics().items()
               if k.startswith("sluice_pool_in_use{") and 'class="large"' in k)


def test_quiet_in_place_connection_gives_its_buffer_back(make_sluiced, backend):
    # A connection receiving in place keeps a large buffer armed for its next
    # frame; once it has been quiet for a second, the receive is cancelled
    # and the buffer goes back to the pool. It then produces again (back
    # through receive buffers, then in place) with nothing lost.
    s = start(make_sluiced)
    c = raw_conn(s)
    values = [bytes([97 + i]) * (100 * 1024) for i in range(4)]
    c.sendall(b"".join(produce_v3("quiet", big_batch(v), i) for i, v in enumerate(values[:3])))
    for i in range(3):
        assert produce_result(recv_frame(c)) == (0, i)
    if backend != "chaos":  # the chaos layer never receives in place
        assert large_in_use(s) >= 1
    wait_until(lambda: large_in_use(s) == 0, timeout=10, what="the in-place buffer released")
    c.sendall(produce_v3("quiet", big_batch(values[3]), 3))
    assert produce_result(recv_frame(c)) == (0, 3)
    got = []
    while len(got) < 4:
        c.sendall(fetch_v4("quiet", 0, len(got), 100 + len(got)))
        got += fetched_values(recv_frame(c))
    assert got == values
    c.close()


def fetched_values(r):
    """Values of the records in a Fetch v4 response for one partition."""
    (nlen,) = struct.unpack(">h", r[12:14])
    off = 14 + nlen + 4 + 4 + 2 + 8 + 8
    (naborted,) = struct.unpack(">i", r[off:off + 4])
    off += 4 + max(naborted, 0) * 16
    (rlen,) = struct.unpack(">i", r[off:off + 4])
    off += 4
    end = off + max(rlen, 0)
    out = []
    while end - off >= 61:
        blen = struct.unpack(">i", r[off + 8:off + 12])[0]
        if off + 12 + blen > end:
            break  # a partial batch at the end (KIP-74)
        p = off + 61
        nrec = struct.unpack(">i", r[off + 57:off + 61])[0]
        for _ in range(nrec):
            _, p = read_varint(r, p)  # record length
            p += 1  # attributes
            _, p = read_varint(r, p)  # timestamp delta
            _, p = read_varint(r, p)  # offset delta
            klen, p = read_varint(r, p)
            p += max(klen, 0)
            vlen, p = read_varint(r, p)
            out.append(r[p:p + vlen])
            p += vlen
            nh, p = read_varint(r, p)
            assert nh == 0
        off += 12 + blen
    return out


def read_uvarint(buf, off):
    n = shift = 0
    while True:
        b = buf[off]
        off += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, off


def read_varint(buf, off):
    """Zigzag varint, as record fields use."""
    n, off = read_uvarint(buf, off)
    return (n >> 1) ^ -(n & 1), off


def fetch_v4(topic, partition, offset, corr, max_wait=0):
    t = topic.encode()
    body = struct.pack(">iiiib", -1, max_wait, 1, 1 << 20, 0) + struct.pack(">ih", 1, len(t)) + t
    body += struct.pack(">iiqi", 1, partition, offset, 1 << 20)
    return frame(1, 4, corr, body)


def list_offsets_v1(topic, partition, ts, corr):
    t = topic.encode()
    body = struct.pack(">i", -1) + struct.pack(">ih", 1, len(t)) + t + struct.pack(">iiq", 1, partition, ts)
    return frame(2, 1, corr, body)


def test_fetch_out_of_range_and_list_offsets(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    for i in range(3):  # three batches at offsets 0, 1, 2 (auto-creates "lo")
        c.sendall(produce_v3("lo", batch_v2(-1, -1, -1, b"x%d" % i), i))
        assert produce_result(recv_frame(c)) == (0, i)
    # Fetch past the high watermark: OFFSET_OUT_OF_RANGE, HW reported.
    c.sendall(fetch_v4("lo", 0, 1000, 10))
    r = recv_frame(c)
    (nlen,) = struct.unpack(">h", r[12:14])
    off = 14 + nlen + 4
    idx, err, hw = struct.unpack(">ihq", r[off:off + 14])
    assert (idx, err, hw) == (0, 1, 3)
    # Fetch at the HW with no wait: no error, no records.
    c.sendall(fetch_v4("lo", 0, 3, 11))
    r = recv_frame(c)
    idx, err, hw = struct.unpack(">ihq", r[off:off + 14])
    assert (idx, err, hw) == (0, 0, 3)
    # ListOffsets: earliest, latest (= HW), by timestamp, past the newest.
    for corr, ts, want in [(20, -2, 0), (21, -1, 3), (22, 1700000000000, 0), (23, 1800000000000, -1)]:
        c.sendall(list_offsets_v1("lo", 0, ts, corr))
        r = recv_frame(c)
        (nlen,) = struct.unpack(">h", r[8:10])
        p = 10 + nlen + 4
        idx, err, _, offset = struct.unpack(">ihqq", r[p:p + 22])
        assert (corr, idx, err, offset) == (corr, 0, 0, want)
    c.close()


LONG_POLL = r"""
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic('lp', num_partitions=2, replication_factor=1)]).items():
    f.result(30)
c = Consumer({'bootstrap.servers': b, 'group.id': 'x', 'fetch.wait.max.ms': 10000,
              'fetch.min.bytes': 1})
c.assign([TopicPartition('lp', i, 0) for i in range(2)])
for _ in range(10):  # let the consumer settle into its long poll
    c.poll(0.1)
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 0})
worst = 0
for part in (0, 1, 0, 1):  # partitions on both workers
    t0 = time.time()
    p.produce('lp', b'ping', partition=part)
    assert p.flush(10) == 0
    m = None
    while m is None or m.error():
        m = c.poll(0.05)
        assert time.time() - t0 < 8, "woken by the timeout, not by the append"
    worst = max(worst, time.time() - t0)
c.close()
print("ok", worst)
"""


def test_long_poll_woken_by_append(make_sluiced):
    s = start(make_sluiced)
    out = run_py(LONG_POLL, bootstrap(s))
    assert out.startswith(b"ok"), out
    print("worst produce-to-consume seconds:", out.split()[1].decode())
    assert float(out.split()[1]) < 2.0, out


IDEMPOTENT = r"""
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
b, n = sys.argv[1], int(sys.argv[2])
p = Producer({'bootstrap.servers': b, 'enable.idempotence': True, 'linger.ms': 2})
acked = []
def cb(err, m):
    assert err is None, err
    acked.append(m.value())
for i in range(n):
    p.produce('idp', b'%d' % i, partition=i % 3, on_delivery=cb)
assert p.flush(60) == 0 and len(acked) == n
c = Consumer({'bootstrap.servers': b, 'group.id': 'x', 'fetch.wait.max.ms': 100})
c.assign([TopicPartition('idp', i, 0) for i in range(3)])
got = []
deadline = time.time() + 30
while len(got) < n and time.time() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        got.append(m.value())
c.close()
assert sorted(got) == sorted(acked), (len(got), n)
print("ok")
"""


def test_confluent_idempotent_producer(make_sluiced):
    s = start(make_sluiced, extra={"kafka": {"default_partitions": "3"}})
    assert run_py(IDEMPOTENT, bootstrap(s), "3000").startswith(b"ok")


# ---- kcat --------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("kcat"), reason="kcat not installed")
def test_kcat_produce_consume_list(make_sluiced):
    s = start(make_sluiced)
    b = bootstrap(s)
    msgs = [f"message-{i}" for i in range(500)]
    run(["kcat", "-b", b, "-t", "kc", "-P", "-X", "acks=all"], stdin=("\n".join(msgs) + "\n").encode())
    out = run(["kcat", "-b", b, "-t", "kc", "-C", "-e", "-o", "beginning", "-q"])
    assert out.decode().split("\n")[:-1] == msgs
    meta = run(["kcat", "-b", b, "-L"]).decode()
    assert 'topic "kc" with 1 partitions' in meta
    assert f"broker 0 at 127.0.0.1:{s.port('kafka')}" in meta
    assert "0.0.0.0" not in meta


@pytest.mark.skipif(not shutil.which("kcat"), reason="kcat not installed")
def test_auto_create_default_partitions_and_off(make_sluiced):
    s = start(make_sluiced, extra={"kafka": {"default_partitions": "3"}})
    b = bootstrap(s)
    run(["kcat", "-b", b, "-t", "three", "-P"], stdin=b"x\n")
    assert 'topic "three" with 3 partitions' in run(["kcat", "-b", b, "-L", "-t", "three"]).decode()
    s2 = start(make_sluiced, extra={"kafka": {"auto_create_topics": "false"}})
    meta = run(["kcat", "-b", bootstrap(s2), "-L", "-t", "nope"]).decode()
    assert "Broker: Unknown topic or partition" in meta, meta


# ---- confluent-kafka-python -----------------------------------------------------

CONFLUENT = r"""
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b, topic, parts, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic(topic, num_partitions=parts, replication_factor=1)]).items():
    f.result(30)
md = a.list_topics(topic, timeout=30)
assert len(md.topics[topic].partitions) == parts, md.topics[topic].partitions
acked = []
def cb(err, m):
    assert err is None, err
    acked.append((m.partition(), m.offset(), m.value()))
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 5})
for i in range(n):
    p.produce(topic, value=b'v%d' % i, key=b'k%d' % i, partition=i % parts, on_delivery=cb)
assert p.flush(60) == 0
assert len(acked) == n
c = Consumer({'bootstrap.servers': b, 'group.id': 'unused', 'enable.auto.commit': False,
              'fetch.wait.max.ms': 100})
c.assign([TopicPartition(topic, i, 0) for i in range(parts)])
got = {}
deadline = time.time() + 60
while len(got) < n and time.time() < deadline:
    m = c.poll(0.2)
    if m is None:
        continue
    assert not m.error(), m.error()
    got[(m.partition(), m.offset())] = m.value()
c.close()
assert sorted(got.items()) == sorted(((pp, o), v) for pp, o, v in acked), (len(got), n)
print("ok", len(got))
"""


def test_confluent_partitions_roundtrip(make_sluiced):
    s = start(make_sluiced)
    out = run_py(CONFLUENT, bootstrap(s), "multi", "6", "3000")
    assert out.startswith(b"ok 3000")


# ---- kafka-python ---------------------------------------------------------------

KAFKA_PYTHON = r"""
import sys
from kafka import KafkaProducer, KafkaConsumer, TopicPartition
b, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = KafkaProducer(bootstrap_servers=b, acks='all')
fs = [p.send(topic, b'x%d' % i) for i in range(n)]
offs = [f.get(timeout=30).offset for f in fs]
assert offs == list(range(n)), offs[:10]
p.close()
c = KafkaConsumer(bootstrap_servers=b, auto_offset_reset='earliest', consumer_timeout_ms=5000)
c.assign([TopicPartition(topic, 0)])
vals = [m.value for m in c]
assert vals == [b'x%d' % i for i in range(n)], len(vals)
print("ok", len(vals))
"""


def test_kafka_python_autocreate_roundtrip(make_sluiced):
    s = start(make_sluiced)
    out = run_py(KAFKA_PYTHON, bootstrap(s), "kp", "300")
    assert out.startswith(b"ok 300")


# ---- consumer groups ---------------------------------------------------------------

@pytest.mark.skipif(not shutil.which("kcat"), reason="kcat not installed")
def test_kcat_group_resumes_from_committed_offset(make_sluiced):
    s = start(make_sluiced)
    b = bootstrap(s)
    run(["kcat", "-b", b, "-t", "kg", "-P"], stdin=b"".join(b"m%d\n" % i for i in range(100)))
    out = run(["kcat", "-b", b, "-G", "kgrp", "kg", "-e", "-q", "-X", "auto.offset.reset=earliest"])
    assert out.decode().split("\n")[:-1] == ["m%d" % i for i in range(100)]
    run(["kcat", "-b", b, "-t", "kg", "-P"], stdin=b"late\n")
    out = run(["kcat", "-b", b, "-G", "kgrp", "kg", "-e", "-q", "-X", "auto.offset.reset=earliest"])
    assert out == b"late\n"


CONFLUENT_GROUP = r"""
import sys, time, threading
from confluent_kafka import Producer, Consumer
from confluent_kafka.admin import AdminClient, NewTopic
b, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)]).items():
    f.result(30)
seen = set(); lock = threading.Lock(); assigned = {}
stop = threading.Event()
def run(k):
    def on_assign(c, parts):
        with lock:
            assigned[k] = sorted(p.partition for p in parts)
    c = Consumer({'bootstrap.servers': b, 'group.id': 'g-' + topic, 'auto.offset.reset': 'earliest',
                  'session.timeout.ms': 6000, 'heartbeat.interval.ms': 200, 'fetch.wait.max.ms': 100})
    c.subscribe([topic], on_assign=on_assign)
    while not stop.is_set():
        m = c.poll(0.1)
        if m is None or m.error():
            continue
        with lock:
            seen.add(int(m.value()))
    c.close()
ts = [threading.Thread(target=run, args=(k,)) for k in range(3)]
for t in ts: t.start()
def balanced():
    with lock:
        return len(assigned) == 3 and all(assigned.values()) and sorted(sum(assigned.values(), [])) == list(range(6))
deadline = time.time() + 60
while time.time() < deadline and not balanced():
    time.sleep(0.05)
assert balanced(), assigned
p = Producer({'bootstrap.servers': b, 'acks': 'all'})
for i in range(n):
    p.produce(topic, value=b'%d' % i, partition=i % 6)
assert p.flush(30) == 0
while time.time() < deadline and len(seen) < n:
    time.sleep(0.05)
stop.set()
for t in ts: t.join(30)
assert len(seen) == n, len(seen)
print("ok", len(seen), assigned)
"""


def test_confluent_group_of_three_splits_partitions(make_sluiced):
    s = start(make_sluiced)
    out = run_py(CONFLUENT_GROUP, bootstrap(s), "grp3", "600")
    assert out.startswith(b"ok 600")


REBALANCE_ON_LEAVE = r"""
import sys, time, threading
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic('rb', num_partitions=6, replication_factor=1)]).items():
    f.result(30)
lock = threading.Lock()
assigned = {}
stops = [threading.Event() for _ in range(3)]
def run(k):
    def on_assign(c, parts):
        with lock:
            assigned[k] = sorted(p.partition for p in parts)
    def on_revoke(c, parts):
        with lock:
            assigned[k] = []
    c = Consumer({'bootstrap.servers': b, 'group.id': 'rbg', 'session.timeout.ms': 6000,
                  'heartbeat.interval.ms': 200})
    c.subscribe(['rb'], on_assign=on_assign, on_revoke=on_revoke)
    while not stops[k].is_set():
        c.poll(0.1)
    c.close()  # LeaveGroup
ts = [threading.Thread(target=run, args=(k,)) for k in range(3)]
for t in ts: t.start()
def covered(members):
    with lock:
        parts = [p for k in members for p in assigned.get(k, [])]
        return sorted(parts) == list(range(6)) and all(assigned.get(k) for k in members)
deadline = time.time() + 60
while time.time() < deadline and not covered([0, 1, 2]):
    time.sleep(0.05)
assert covered([0, 1, 2]), assigned
stops[2].set()
ts[2].join(30)
while time.time() < deadline and not covered([0, 1]):
    time.sleep(0.05)
assert covered([0, 1]), assigned
for k in (0, 1): stops[k].set()
for t in ts: t.join(30)
print("ok")
"""


def test_group_rebalances_when_a_member_leaves(make_sluiced):
    s = start(make_sluiced)
    assert run_py(REBALANCE_ON_LEAVE, bootstrap(s)).startswith(b"ok")


STATIC_MEMBER = r"""
import sys, time
from confluent_kafka import Consumer, Producer
b = sys.argv[1]
p = Producer({'bootstrap.servers': b})
p.produce('st', b'x')
assert p.flush(30) == 0
def member():
    c = Consumer({'bootstrap.servers': b, 'group.id': 'stg', 'group.instance.id': 'inst-1',
                  'session.timeout.ms': 30000, 'heartbeat.interval.ms': 200})
    c.subscribe(['st'])
    t0 = time.time()
    while not c.assignment():
        c.poll(0.05)
        assert time.time() - t0 < 15, "static member not reassigned before its session ended"
    return c
member().close()  # a static member leaves no LeaveGroup behind
member().close()  # the same instance comes back at once
print("ok")
"""


def test_static_member_rejoins_without_waiting_for_its_session(make_sluiced):
    s = start(make_sluiced)
    assert run_py(STATIC_MEMBER, bootstrap(s)).startswith(b"ok")


KAFKA_PYTHON_GROUP = r"""
import sys
from kafka import KafkaProducer, KafkaConsumer
b, topic, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = KafkaProducer(bootstrap_servers=b, acks='all')
for i in range(n):
    p.send(topic, b'%d' % i)
p.flush(30)
def consume():
    c = KafkaConsumer(topic, bootstrap_servers=b, group_id='kpg', auto_offset_reset='earliest',
                      enable_auto_commit=False, consumer_timeout_ms=4000)
    vals = [int(m.value) for m in c]
    c.commit()
    c.close()
    return vals
first = consume()
assert sorted(first) == list(range(n)), len(first)
for i in range(n, n + 10):
    p.send(topic, b'%d' % i)
p.flush(30)
second = consume()
assert second == list(range(n, n + 10)), second
print("ok")
"""


def test_kafka_python_group_commit_and_resume(make_sluiced):
    s = start(make_sluiced)
    out = run_py(KAFKA_PYTHON_GROUP, bootstrap(s), "kpg", "100")
    assert out.startswith(b"ok")


LIST_GROUPS = r"""
import sys, time
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
b = sys.argv[1]
p = Producer({'bootstrap.servers': b})
p.produce('lgt', b'x')
assert p.flush(30) == 0
c = Consumer({'bootstrap.servers': b, 'group.id': 'lg1', 'session.timeout.ms': 6000})
c.subscribe(['lgt'])
deadline = time.time() + 30
while time.time() < deadline and not c.assignment():
    c.poll(0.1)
gs = AdminClient({'bootstrap.servers': b}).list_groups(timeout=10)
g = [x for x in gs if x.id == 'lg1'][0]
assert (g.state, g.protocol_type, g.protocol) == ('Stable', 'consumer', 'range'), g
assert len(g.members) == 1 and g.members[0].assignment, g.members
c.close()
print("ok")
"""


def test_list_and_describe_groups(make_sluiced):
    s = start(make_sluiced)
    assert run_py(LIST_GROUPS, bootstrap(s)).startswith(b"ok")


DESCRIBE_CONFIGS = r"""
import sys
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic('cfgt', num_partitions=2, replication_factor=1)]).items():
    f.result(30)
for r, f in a.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, 'cfgt')]).items():
    cfg = {k: v.value for k, v in f.result(30).items()}
assert cfg['cleanup.policy'] == 'delete', cfg
assert int(cfg['retention.ms']) > 0 and int(cfg['segment.bytes']) > 0, cfg
print("ok")
"""


def test_describe_topic_configs(make_sluiced):
    s = start(make_sluiced)
    assert run_py(DESCRIBE_CONFIGS, bootstrap(s)).startswith(b"ok")


DELETE_TOPIC = r"""
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
def create():
    for t, f in a.create_topics([NewTopic('gone', num_partitions=4, replication_factor=1)]).items():
        f.result(30)
create()
p = Producer({'bootstrap.servers': b, 'acks': 'all'})
for i in range(40):
    p.produce('gone', b'old', partition=i % 4)
assert p.flush(30) == 0
for t, f in a.delete_topics(['gone']).items():
    f.result(30)
assert 'gone' not in a.list_topics(timeout=10).topics
for t, f in a.delete_topics(['gone']).items():
    try:
        f.result(30)
        raise AssertionError("deleted twice")
    except Exception as e:
        assert 'UNKNOWN_TOPIC' in str(e), e
create()
c = Consumer({'bootstrap.servers': b, 'group.id': 'x', 'fetch.wait.max.ms': 100})
lo, hi = c.get_watermark_offsets(TopicPartition('gone', 0), timeout=10)
assert (lo, hi) == (0, 0), (lo, hi)
c.close()
print("ok")
"""


def test_delete_topic_then_recreate_empty(make_sluiced):
    s = start(make_sluiced)
    assert run_py(DELETE_TOPIC, bootstrap(s)).startswith(b"ok")
    # Only the re-created topic's 4 partition directories remain.
    assert len(os.listdir(os.path.join(s.data_dir, "topics"))) == 4


# ---- restarts ----------------------------------------------------------------------

PRODUCE_ACKED = r"""
import sys, json
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
b, topic, parts, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
a = AdminClient({'bootstrap.servers': b})
from confluent_kafka import KafkaException
for t, f in a.create_topics([NewTopic(topic, num_partitions=parts, replication_factor=1)]).items():
    try:
        f.result(30)
    except KafkaException as e:
        assert e.args[0].code() == 36, e  # TOPIC_ALREADY_EXISTS after a restart
acked = []
def cb(err, m):
    if err is None:
        acked.append([m.partition(), m.offset(), m.value().decode()])
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 2})
for i in range(n):
    p.produce(topic, value=b'r%d' % i, partition=i % parts, on_delivery=cb)
assert p.flush(60) == 0
print(json.dumps(acked))
"""

CONSUME_ALL = r"""
import sys, json, time
from confluent_kafka import Consumer, TopicPartition
b, topic, parts, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Consumer({'bootstrap.servers': b, 'group.id': 'unused', 'enable.auto.commit': False,
              'fetch.wait.max.ms': 100})
c.assign([TopicPartition(topic, i, 0) for i in range(parts)])
got = []
deadline = time.time() + 60
while len(got) < n and time.time() < deadline:
    m = c.poll(0.2)
    if m is not None and not m.error():
        got.append([m.partition(), m.offset(), m.value().decode()])
c.close()
print(json.dumps(got))
"""


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_acked_messages_survive_restart(make_sluiced, how):
    import json

    s = start(make_sluiced)
    acked = json.loads(run_py(PRODUCE_ACKED, bootstrap(s), "dur", "4", "2000"))
    assert len(acked) == 2000
    topics_dir = os.path.join(s.data_dir, "topics")
    dirs = sorted(os.listdir(topics_dir))
    if how == "sigkill":
        s.kill()
    else:
        assert s.stop() == 0
    s.start()
    # Same topic UUIDs (partition directories are named by them).
    assert sorted(os.listdir(topics_dir)) == dirs
    got = json.loads(run_py(CONSUME_ALL, bootstrap(s), "dur", "4", "2000"))
    assert sorted(map(tuple, got)) == sorted(map(tuple, acked))
    # New appends continue after the recovered offsets.
    more = json.loads(run_py(PRODUCE_ACKED, bootstrap(s), "dur", "4", "8"))
    hw = {}
    for p, o, _ in acked:
        hw[p] = max(hw.get(p, -1), o)
    assert all(o > hw[p] for p, o, _ in more)


GROUP_STEP = r"""
import sys
from kafka import KafkaProducer, KafkaConsumer
b, topic, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
p = KafkaProducer(bootstrap_servers=b, acks='all')
for i in range(first, first + n):
    p.send(topic, b'%d' % i)
p.flush(30)
p.close()
c = KafkaConsumer(topic, bootstrap_servers=b, group_id='crash', auto_offset_reset='earliest',
                  enable_auto_commit=False, consumer_timeout_ms=4000)
vals = [int(m.value) for m in c]
c.commit()
c.close()
assert vals == list(range(first, first + n)), vals
print("ok")
"""


def test_committed_offsets_survive_sigkill(make_sluiced):
    s = start(make_sluiced)
    assert run_py(GROUP_STEP, bootstrap(s), "crashg", "0", "50").startswith(b"ok")
    s.kill()
    s.start()
    # Only what was produced after the commit is consumed again.
    assert run_py(GROUP_STEP, bootstrap(s), "crashg", "50", "5").startswith(b"ok")


# ---- fetch data path: memory window, read-ahead cache, disk -----------------

READ_PATHS = r"""
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b, n = sys.argv[1], int(sys.argv[2])
fetch = int(sys.argv[3]) if len(sys.argv) > 3 else 65536
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic('rp', num_partitions=1, replication_factor=1)]).items():
    f.result(30)
# Batches of about 16 KiB, so a 64 KiB fetch is several of them.
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 5, 'batch.size': 16384})
for i in range(n):
    p.produce('rp', b'%08d' % i + b'x' * 992, partition=0)
    if i % 1000 == 999:
        p.poll(0)
assert p.flush(60) == 0
# Small fetches: many per disk read, so the read-ahead cache must answer.
c = Consumer({'bootstrap.servers': b, 'group.id': 'rp', 'fetch.wait.max.ms': 100,
              'max.partition.fetch.bytes': fetch, 'fetch.max.bytes': fetch,
              'message.max.bytes': 65536,
              'queued.max.messages.kbytes': max(1024, 2 * fetch // 1024)})
c.assign([TopicPartition('rp', 0, 0)])
want = 0
deadline = time.time() + 60
while want < n and time.time() < deadline:
    m = c.poll(0.2)
    if m is None or m.error():
        continue
    assert m.offset() == want and m.value()[:8] == b'%08d' % want, (m.offset(), want)
    want += 1
c.close()
assert want == n, (want, n)
print("ok")
"""


def test_fetch_reads_from_memory_cache_and_disk(make_sluiced):
    """12 MB on one partition (three times the 4 MiB memory window), read
    back in order with 64 KiB fetches: the old part comes from disk 4 MiB at
    a time (many fetches per disk read), the next range read ahead while the
    consumer is in the second half of the last, the newest from memory; every
    record arrives once, in order, with its own value."""
    # The disk path: the recent-data cache (test_kafka_cache.py) off.
    s = start(make_sluiced, extra={"kafka": {"cache_bytes": "0"}})
    out = run_py(READ_PATHS, bootstrap(s), "12000")
    assert out.startswith(b"ok"), out
    disk = s.metric_sum("sluice_kafka_fetch_reads_disk_total")
    cache = s.metric_sum("sluice_kafka_fetch_reads_cache_total")
    mem = s.metric_sum("sluice_kafka_fetch_reads_mem_total")
    ahead = s.metric_sum("sluice_kafka_fetch_reads_ahead_total")
    print("reads: disk", disk, "cache", cache, "mem", mem, "ahead", ahead)
    assert disk > 0 and mem > 0, (disk, cache, mem)
    # 4 MiB per disk read, 64 KiB per fetch: far more cache hits than reads.
    assert cache > 4 * (disk + ahead), (disk, cache, mem, ahead)
    # The second 4 MiB was read before the consumer asked for it.
    assert ahead >= 1, (disk, cache, mem, ahead)


def test_fetch_large_answers_across_read_ahead_caches(make_sluiced):
    """The same 12 MB read with 1 MiB fetches: answers start in one 4 MiB
    cache and run on into the next one read ahead (two deep), and none may
    lose, repeat or reorder a record at those seams."""
    # The disk path: the recent-data cache (test_kafka_cache.py) off.
    s = start(make_sluiced, extra={"kafka": {"cache_bytes": "0"}})
    out = run_py(READ_PATHS, bootstrap(s), "12000", str(1 << 20))
    assert out.startswith(b"ok"), out
    disk = s.metric_sum("sluice_kafka_fetch_reads_disk_total")
    cache = s.metric_sum("sluice_kafka_fetch_reads_cache_total")
    ahead = s.metric_sum("sluice_kafka_fetch_reads_ahead_total")
    print("reads: disk", disk, "cache", cache, "ahead", ahead)
    # 12 MB is three caches: the first read by a fetch, the others ahead.
    assert ahead >= 2 and cache > 0, (disk, cache, ahead)
