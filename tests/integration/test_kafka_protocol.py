"""Kafka protocol items beyond the basic produce/fetch path: idempotent
producers across a SIGKILL restart (producer state rebuilt from the log tail,
producer ids from a persisted high-water mark), and the admin APIs. Raw
sockets reach the edges clients cannot; real clients (confluent-kafka,
kafka-python, kcat) prove the rest. Every socket has a timeout; every client
runs in a subprocess with a hard timeout."""
import os
import struct

from test_kafka import (CONSUME_ALL, batch_v2, bootstrap, frame, produce_result, produce_v3,
                        raw_conn, read_uvarint, recv_frame, run_py, start, uvarint)


def init_producer_id_v0(corr):
    return frame(22, 0, corr, struct.pack(">hi", -1, 60000))


def init_producer_id(c, corr):
    c.sendall(init_producer_id_v0(corr))
    r = recv_frame(c)
    assert struct.unpack(">i", r[:4])[0] == corr
    _throttle, err, pid, epoch = struct.unpack(">ihqh", r[4:20])
    assert err == 0
    return pid, epoch


def produce(c, topic, batch, corr):
    c.sendall(produce_v3(topic, batch, corr))
    r = recv_frame(c)
    assert struct.unpack(">i", r[:4])[0] == corr
    return produce_result(r)


def test_idempotent_retry_after_sigkill_gets_original_offset(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    pid, epoch = init_producer_id(c, 1)
    assert epoch == 0
    for seq in range(4):
        assert produce(c, "idem", batch_v2(pid, epoch, seq, b"v%d" % seq), 10 + seq) == (0, seq)
    c.close()
    s.kill()
    s.start()
    c = raw_conn(s)
    # The producer's state came back from the log tail: a retry of a batch
    # acknowledged before the crash is a duplicate with its original offset.
    assert produce(c, "idem", batch_v2(pid, epoch, 2, b"v2"), 20) == (0, 2)
    assert produce(c, "idem", batch_v2(pid, epoch, 3, b"v3"), 21) == (0, 3)
    # A gap is still a gap, and the next batch follows on.
    assert produce(c, "idem", batch_v2(pid, epoch, 6), 22) == (45, -1)
    assert produce(c, "idem", batch_v2(pid, epoch, 4, b"v4"), 23) == (0, 4)
    # Producer ids are never issued twice across a crash.
    pid2, _ = init_producer_id(c, 24)
    assert pid2 > pid
    c.close()


def test_producer_ids_unique_across_restarts(make_sluiced):
    s = start(make_sluiced)
    seen = set()
    for rnd in range(3):
        c = raw_conn(s)
        ids = [init_producer_id(c, i)[0] for i in range(50)]
        c.close()
        assert len(set(ids)) == 50 and not (set(ids) & seen), (rnd, ids)
        seen |= set(ids)
        s.kill()
        s.start()


def meta_records(data_dir, rec_type):
    """Records of one type in the metadata log (storage/meta.c framing:
    u32 len = 4 + payload, u32 crc, u16 type, u16 version, payload)."""
    n = 0
    meta = os.path.join(data_dir, "meta")
    for name in sorted(os.listdir(meta)):
        if not name.endswith(".log"):
            continue
        with open(os.path.join(meta, name), "rb") as f:
            b = f.read()
        pos = 0
        while pos + 12 <= len(b):
            ln, _crc, typ = struct.unpack_from("<IIH", b, pos)
            if ln < 4 or pos + 8 + ln > len(b):
                break
            n += typ == rec_type
            pos += 8 + ln
    return n


META_REC_PRODUCER_IDS = 7


def test_init_producer_id_burst_writes_one_reservation(make_sluiced):
    """50 InitProducerId requests pipelined on one connection: each gets a
    distinct id, and the block reserved for the first covers the others,
    which wait for its record instead of writing one each."""
    s = start(make_sluiced)
    c = raw_conn(s)
    before = meta_records(s.data_dir, META_REC_PRODUCER_IDS)
    c.sendall(b"".join(init_producer_id_v0(100 + i) for i in range(50)))
    ids = []
    for i in range(50):
        r = recv_frame(c)
        assert struct.unpack(">i", r[:4])[0] == 100 + i
        _throttle, err, pid, epoch = struct.unpack(">ihqh", r[4:20])
        assert err == 0 and epoch == 0, (i, err, epoch)
        ids.append(pid)
    c.close()
    assert len(set(ids)) == 50, ids
    written = meta_records(s.data_dir, META_REC_PRODUCER_IDS) - before
    assert written == 1, written
    # ...and they stay unique across a crash.
    s.kill()
    s.start()
    c = raw_conn(s)
    assert init_producer_id(c, 1)[0] > max(ids)
    c.close()


CONFLUENT_IDEMPOTENT = r"""
import sys, json
from confluent_kafka import Producer
b, topic, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
acked = []
def cb(err, m):
    assert err is None, err
    acked.append(m.offset())
p = Producer({'bootstrap.servers': b, 'enable.idempotence': True, 'acks': 'all', 'linger.ms': 5})
for i in range(first, first + n):
    p.produce(topic, value=b'%d' % i, partition=0, on_delivery=cb)
assert p.flush(60) == 0
print(json.dumps(sorted(acked)))
"""


def test_confluent_idempotent_producer_after_sigkill(make_sluiced):
    import json

    s = start(make_sluiced)
    a = json.loads(run_py(CONFLUENT_IDEMPOTENT, bootstrap(s), "idemc", "0", "500"))
    assert a == list(range(500))
    s.kill()
    s.start()
    b = json.loads(run_py(CONFLUENT_IDEMPOTENT, bootstrap(s), "idemc", "500", "500"))
    assert b == list(range(500, 1000))


# ---- CreatePartitions --------------------------------------------------------

CONFLUENT_GROW = r"""
import sys, json
from confluent_kafka import Producer, Consumer, TopicPartition, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, NewPartitions
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
a.create_topics([NewTopic('grow', num_partitions=2, replication_factor=1)])['grow'].result(30)
p = Producer({'bootstrap.servers': b, 'acks': 'all'})
for i in range(20):
    p.produce('grow', value=b'old%d' % i, partition=i % 2)
assert p.flush(30) == 0
def code(f):
    try:
        f.result(30)
        return 0
    except KafkaException as e:
        return e.args[0].code()
out = {}
out['validate'] = code(a.create_partitions([NewPartitions('grow', 5)], validate_only=True)['grow'])
out['after_validate'] = len(a.list_topics('grow', timeout=10).topics['grow'].partitions)
out['shrink'] = code(a.create_partitions([NewPartitions('grow', 1)])['grow'])
out['same'] = code(a.create_partitions([NewPartitions('grow', 2)])['grow'])
out['unknown'] = code(a.create_partitions([NewPartitions('nope', 3)])['nope'])
out['grow'] = code(a.create_partitions([NewPartitions('grow', 5)])['grow'])
out['after_grow'] = len(a.list_topics('grow', timeout=10).topics['grow'].partitions)
p = Producer({'bootstrap.servers': b, 'acks': 'all'})  # sees the new partitions at once
for i in range(50):
    p.produce('grow', value=b'new%d' % i, partition=i % 5)
assert p.flush(30) == 0
print(json.dumps(out))
"""

def test_create_partitions_grows_topic(make_sluiced):
    import json

    s = start(make_sluiced)
    out = json.loads(run_py(CONFLUENT_GROW, bootstrap(s)))
    assert out == {"validate": 0, "after_validate": 2, "shrink": 37, "same": 37, "unknown": 3,
                   "grow": 0, "after_grow": 5}, out
    got = json.loads(run_py(CONSUME_ALL, bootstrap(s), "grow", "5", "70"))
    assert len(got) == 70
    assert {p for p, _, v in got if v.startswith("new")} == set(range(5))
    # The new partitions are durable: after a SIGKILL they are still there,
    # with their records, on the same workers' logs.
    s.kill()
    s.start()
    got2 = json.loads(run_py(CONSUME_ALL, bootstrap(s), "grow", "5", "70"))
    assert sorted(map(tuple, got2)) == sorted(map(tuple, got))


KAFKA_PYTHON_ADMIN = r"""
import sys, json
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewPartitions
from kafka.structs import OffsetAndMetadata
b = sys.argv[1]
a = KafkaAdminClient(bootstrap_servers=b)
p = KafkaProducer(bootstrap_servers=b, acks='all')
p.send('kpadmin', b'x').get(30)
p.close()
r = a.create_partitions({'kpadmin': NewPartitions(3)})
grow = [list(t) for t in r.topic_errors]
# one broker (node 0): an assignment to another is refused, [[0]] is fine
try:
    bad_assign = [list(t)[1] for t in
                  a.create_partitions({'kpadmin': NewPartitions(4, [[1]])}).topic_errors]
except Exception as e:  # kafka-python raises some topic errors
    bad_assign = [getattr(e, 'errno', repr(e))]
ok_assign = [list(t)[:2] for t in
             a.create_partitions({'kpadmin': NewPartitions(4, [[0]])}).topic_errors]
c = KafkaConsumer('kpadmin', bootstrap_servers=b, group_id='doomed', auto_offset_reset='earliest',
                  enable_auto_commit=False, consumer_timeout_ms=3000)
n = len(list(c))
c.commit()
c2 = KafkaConsumer(bootstrap_servers=b, group_id='kept', enable_auto_commit=False)
c2.commit({TopicPartition('kpadmin', 0): OffsetAndMetadata(1, '')})
c2.close()
busy = a.delete_consumer_groups(['doomed'])
c.close()
gone = a.delete_consumer_groups(['doomed', 'never-seen'])
print(json.dumps({'grow': grow, 'bad_assign': bad_assign, 'ok_assign': ok_assign,
                  'n': n, 'busy': [[g, e.errno] for g, e in busy],
                  'gone': [[g, e.errno] for g, e in gone]}))
"""


def test_kafka_python_create_partitions_and_delete_groups(make_sluiced):
    import json

    s = start(make_sluiced)
    out = json.loads(run_py(KAFKA_PYTHON_ADMIN, bootstrap(s)))
    assert out["grow"] == [["kpadmin", 0, None]], out
    assert out["bad_assign"] == [39], out  # INVALID_REPLICA_ASSIGNMENT
    assert out["ok_assign"] == [["kpadmin", 0]], out
    assert out["n"] == 1
    assert out["busy"] == [["doomed", 68]], out  # NON_EMPTY_GROUP while a member is in
    assert out["gone"] == [["doomed", 0], ["never-seen", 69]], out  # GROUP_ID_NOT_FOUND
    # The committed offsets went with the group, durably; another group's stay.
    for _ in range(2):
        assert json.loads(run_py(COMMITTED, bootstrap(s), "doomed")) is None
        assert json.loads(run_py(COMMITTED, bootstrap(s), "kept")) == 1
        s.kill()
        s.start()


COMMITTED = r"""
import sys, json
from kafka import KafkaConsumer, TopicPartition
c = KafkaConsumer(bootstrap_servers=sys.argv[1], group_id=sys.argv[2], enable_auto_commit=False)
print(json.dumps(c.committed(TopicPartition('kpadmin', 0))))
c.close()
"""


# ---- Fetch v13+ (topic ids) and KIP-227 sessions -------------------------------


def fetch_v13(topic_id, partition, offset, corr, session_id=0, epoch=-1, forget=(), parts=None):
    """parts: [(partition, offset)] of topic_id (default: the one given);
    forget: partitions of topic_id to drop from the session."""
    parts = [(partition, offset)] if parts is None else parts
    body = struct.pack(">iiiibii", -1, 0, 1, 1 << 20, 0, session_id, epoch)
    if parts:
        body += uvarint(2) + topic_id + uvarint(len(parts) + 1)
        for p, o in parts:
            body += struct.pack(">iiqiqi", p, -1, o, -1, -1, 1 << 20) + b"\x00"
        body += b"\x00"  # topic tagged fields
    else:
        body += uvarint(1)
    if forget:
        body += uvarint(2) + topic_id + uvarint(len(forget) + 1)
        body += b"".join(struct.pack(">i", p) for p in forget) + b"\x00"
    else:
        body += uvarint(1)
    body += uvarint(1) + b"\x00"  # rack "", tagged fields
    return frame(1, 13, corr, body, flexible=True)


def parse_fetch_v13(r):
    """(error, session_id, [(topic_id, partition, error, hw, records bytes)])"""
    off = 4 + 1  # correlation id, header tagged fields
    _throttle, err, session = struct.unpack(">ihi", r[off:off + 10])
    off += 10
    nt, off = read_uvarint(r, off)
    out = []
    for _ in range(nt - 1):
        tid = r[off:off + 16]
        off += 16
        np_, off = read_uvarint(r, off)
        for _ in range(np_ - 1):
            part, perr, hw, _lso, _ls = struct.unpack(">ihqqq", r[off:off + 30])
            off += 30
            na, off = read_uvarint(r, off)
            off += (na - 1) * 16 if na else 0
            off += 4  # preferred read replica
            nrec, off = read_uvarint(r, off)
            recs = r[off:off + nrec - 1] if nrec else b""
            off += max(nrec - 1, 0)
            _tags, off = read_uvarint(r, off)
            out.append((tid, part, perr, hw, recs))
        _tags, off = read_uvarint(r, off)
    return err, session, out


def topic_uuid(s, topic):
    """The topic id, from its partition directory name (<uuid hex>-<partition>);
    the test's only topic."""
    dirs = [d for d in os.listdir(os.path.join(s.data_dir, "topics")) if d.endswith("-0")]
    assert len(dirs) == 1, (topic, dirs)
    return bytes.fromhex(dirs[0][:-2])


def test_fetch_v13_by_topic_id(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    assert produce(c, "byid", batch_v2(-1, -1, -1, b"hello"), 1) == (0, 0)
    tid = topic_uuid(s, "byid")
    c.sendall(fetch_v13(tid, 0, 0, 2))
    err, session, parts = parse_fetch_v13(recv_frame(c))
    assert (err, session) == (0, 0)
    assert [(p[0], p[1], p[2], p[3]) for p in parts] == [(tid, 0, 0, 1)]
    assert b"hello" in parts[0][4]
    # An id no topic has: UNKNOWN_TOPIC_ID, echoed with that id.
    bogus = bytes(range(16))
    c.sendall(fetch_v13(bogus, 0, 0, 3))
    err, session, parts = parse_fetch_v13(recv_frame(c))
    assert err == 0 and [(p[0], p[2]) for p in parts] == [(bogus, 100)]
    # A known id, a partition it does not have.
    c.sendall(fetch_v13(tid, 7, 0, 4))
    _, _, parts = parse_fetch_v13(recv_frame(c))
    assert [p[2] for p in parts] == [3]
    c.close()


def test_fetch_sessions_incremental(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    assert produce(c, "sess", batch_v2(-1, -1, -1, b"x"), 1) == (0, 0)
    tid = topic_uuid(s, "sess")
    corr = iter(range(100, 1000))

    def fetch(**kw):
        kw.setdefault("parts", [])
        c.sendall(fetch_v13(tid, 0, 0, next(corr), **kw))
        return parse_fetch_v13(recv_frame(c))

    # Sessionless: a full answer, session 0.
    err, sid, parts = fetch(parts=[(0, 0)], session_id=0, epoch=-1)
    assert (err, sid, [p[1] for p in parts]) == (0, 0, [0])
    # Epoch 0 opens a session with the request's partitions: full answer.
    err, sid, parts = fetch(parts=[(0, 0)], session_id=0, epoch=0)
    assert err == 0 and sid != 0 and [p[1] for p in parts] == [0]
    # Incremental: the client names what changed (its offset moved to 1);
    # nothing new since, so no partitions at all.
    assert fetch(parts=[(0, 1)], session_id=sid, epoch=1) == (0, sid, [])
    # A new record: that partition comes back though the request named none.
    assert produce(c, "sess", batch_v2(-1, -1, -1, b"fresh"), 2) == (0, 1)
    err, sid2, parts = fetch(session_id=sid, epoch=2)
    assert (err, sid2, [(p[1], p[3]) for p in parts]) == (0, sid, [(0, 2)])
    assert b"fresh" in parts[0][4] and b"x" not in parts[0][4].replace(b"fresh", b"")
    # The client moved on (offset 2): quiet again.
    assert fetch(parts=[(0, 2)], session_id=sid, epoch=3) == (0, sid, [])
    # An epoch out of step, and an id this connection does not have.
    assert fetch(session_id=sid, epoch=3)[:2] == (71, 0)  # INVALID_FETCH_SESSION_EPOCH
    assert fetch(session_id=sid + 1, epoch=4)[:2] == (70, 0)  # FETCH_SESSION_ID_NOT_FOUND
    # Sessions belong to their connection.
    c2 = raw_conn(s)
    c2.sendall(fetch_v13(tid, 0, 0, 5, session_id=sid, epoch=4, parts=[]))
    assert parse_fetch_v13(recv_frame(c2))[:2] == (70, 0)
    c2.close()
    # A forgotten partition leaves the session: new records there stay quiet.
    assert fetch(session_id=sid, epoch=4, forget=[0]) == (0, sid, [])
    assert produce(c, "sess", batch_v2(-1, -1, -1, b"later"), 3) == (0, 2)
    assert fetch(session_id=sid, epoch=5) == (0, sid, [])
    # Adding it back answers it at once.
    err, _, parts = fetch(parts=[(0, 2)], session_id=sid, epoch=6)
    assert err == 0 and [(p[1], p[3]) for p in parts] == [(0, 3)] and b"later" in parts[0][4]
    # Epoch -1 closes the session: a sessionless answer, then the id is gone.
    err, sid3, parts = fetch(parts=[(0, 3)], session_id=sid, epoch=-1)
    assert (err, sid3, len(parts)) == (0, 0, 1)
    assert fetch(session_id=sid, epoch=7)[:2] == (70, 0)
    c.close()


def metadata_v12_by_id(topic_id, corr):
    body = uvarint(2) + topic_id + b"\x00" + b"\x00"  # one topic: id, null name, tags
    body += b"\x00\x00\x00"  # no auto-create, no authorized operations, tags
    return frame(3, 12, corr, body, flexible=True)


def parse_metadata_v12_first_topic(r):
    """(error, name or None, topic id) of the first topic."""
    off = 4 + 1 + 4  # correlation id, tags, throttle
    nb, off = read_uvarint(r, off)
    for _ in range(nb - 1):
        off += 4
        n, off = read_uvarint(r, off)
        off += n - 1 + 4
        n, off = read_uvarint(r, off)
        off += max(n - 1, 0)
        _tags, off = read_uvarint(r, off)
    n, off = read_uvarint(r, off)  # cluster id
    off += max(n - 1, 0) + 4  # controller id
    nt, off = read_uvarint(r, off)
    assert nt == 2
    (err,) = struct.unpack(">h", r[off:off + 2])
    off += 2
    n, off = read_uvarint(r, off)
    name = r[off:off + n - 1].decode() if n else None
    off += max(n - 1, 0)
    return err, name, r[off:off + 16]


def test_metadata_v12_by_topic_id(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    assert produce(c, "mdid", batch_v2(-1, -1, -1), 1) == (0, 0)
    tid = topic_uuid(s, "mdid")
    c.sendall(metadata_v12_by_id(tid, 2))
    assert parse_metadata_v12_first_topic(recv_frame(c)) == (0, "mdid", tid)
    bogus = bytes(range(16))
    c.sendall(metadata_v12_by_id(bogus, 3))
    assert parse_metadata_v12_first_topic(recv_frame(c)) == (100, None, bogus)
    c.close()


# ---- LogAppendTime topics ------------------------------------------------------

LOG_APPEND_TIME = r"""
import sys, json, time
from confluent_kafka import Producer, Consumer, TopicPartition, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource
b, step = sys.argv[1], sys.argv[2]
a = AdminClient({'bootstrap.servers': b})
out = {}
if step == 'create':
    fs = a.create_topics([
        NewTopic('lat', 1, 1, config={'message.timestamp.type': 'LogAppendTime'}),
        NewTopic('ct', 1, 1, config={'message.timestamp.type': 'CreateTime'}),
        NewTopic('badts', 1, 1, config={'message.timestamp.type': 'Sometimes'})])
    for t, f in fs.items():
        try:
            f.result(30)
            out[t] = 0
        except KafkaException as e:
            out[t] = e.args[0].code()
    t0 = int(time.time() * 1000)
    reports = []
    p = Producer({'bootstrap.servers': b, 'acks': 'all', 'api.version.request': True})
    for t in ('lat', 'ct'):
        for i in range(5):
            p.produce(t, value=b'v%d' % i, timestamp=1000 + i,
                      on_delivery=lambda err, m: reports.append([m.topic(), list(m.timestamp())]))
    assert p.flush(30) == 0
    out['t0'] = t0
    out['t1'] = int(time.time() * 1000)
    out['reports'] = sorted(reports)
got = {}
for t in ('lat', 'ct'):
    c = Consumer({'bootstrap.servers': b, 'group.id': 'x', 'check.crcs': True,
                  'enable.auto.commit': False})
    c.assign([TopicPartition(t, 0, 0)])
    got[t] = []
    deadline = time.time() + 30
    while len(got[t]) < 5 and time.time() < deadline:
        m = c.poll(0.2)
        if m is not None:
            assert not m.error(), m.error()
            got[t].append(list(m.timestamp()))
    c.close()
out['got'] = got
r = a.describe_configs([ConfigResource('topic', 'lat'), ConfigResource('topic', 'ct')])
out['config'] = {res.name: f.result(30)['message.timestamp.type'].value for res, f in r.items()}
print(json.dumps(out))
"""


def test_log_append_time_topic(make_sluiced):
    import json

    s = start(make_sluiced)
    out = json.loads(run_py(LOG_APPEND_TIME, bootstrap(s), "create"))
    assert (out["lat"], out["ct"], out["badts"]) == (0, 0, 40), out  # INVALID_CONFIG
    t0, t1 = out["t0"], out["t1"]
    # Produce responses carry the broker's append time (type 2 = LogAppendTime).
    lat = [ts for t, ts in out["reports"] if t == "lat"]
    assert len(lat) == 5 and all(tt == 2 and t0 <= v <= t1 for tt, v in lat), out
    for step in ("same run", "after SIGKILL"):
        # Fetched batches carry the stamp and a CRC that still checks out.
        assert len(out["got"]["lat"]) == 5
        assert all(tt == 2 and t0 <= v <= t1 for tt, v in out["got"]["lat"]), (step, out)
        assert out["got"]["ct"] == [[1, 1000 + i] for i in range(5)], (step, out)
        assert out["config"] == {"lat": "LogAppendTime", "ct": "CreateTime"}, (step, out)
        s.kill()
        s.start()
        out = dict(out, **json.loads(run_py(LOG_APPEND_TIME, bootstrap(s), "check")))


# ---- consumer lag in /metrics --------------------------------------------------

LAG_SETUP = r"""
import sys
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata
b = sys.argv[1]
KafkaAdminClient(bootstrap_servers=b).create_topics([NewTopic('lagt', 2, 1)])
p = KafkaProducer(bootstrap_servers=b, acks='all')
for i in range(30):
    p.send('lagt', b'%d' % i, partition=i % 2)  # 15 records per partition
p.flush(30)
p.close()
c = KafkaConsumer(bootstrap_servers=b, group_id='g"lag', enable_auto_commit=False)
c.commit({TopicPartition('lagt', 0): OffsetAndMetadata(4, ''),
          TopicPartition('lagt', 1): OffsetAndMetadata(15, '')})
c.close()
print("ok")
"""


def test_consumer_lag_in_metrics(make_sluiced):
    from harness import wait_until

    s = start(make_sluiced)
    assert run_py(LAG_SETUP, bootstrap(s)).startswith(b"ok")
    lbl = 'group="g\\"lag",topic="lagt"'
    want = {
        f'sluice_kafka_consumer_group_lag{{{lbl},partition="0"}}': 11.0,
        f'sluice_kafka_consumer_group_lag{{{lbl},partition="1"}}': 0.0,
        f'sluice_kafka_consumer_group_committed_offset{{{lbl},partition="0"}}': 4.0,
        'sluice_kafka_partition_high_watermark{topic="lagt",partition="0"}': 15.0,
        'sluice_kafka_partition_log_end_offset{topic="lagt",partition="1"}': 15.0,
    }

    def seen():
        m = s.metrics()
        return all(m.get(k) == v for k, v in want.items()) or None

    # The published watermark follows the acks: no fixed sleep, a deadline.
    wait_until(seen, timeout=10, what=f"lag metrics {want}")
    # The topic and the commits are metadata records not yet snapshotted.
    m = s.metrics()
    assert m["sluice_meta_log_bytes"] > 0 and m["sluice_meta_snapshots_total"] == 0
    # fsync topics (the default) get zeros written ahead of their tails
    assert s.metric_sum("sluice_kafka_log_zero_fill_bytes_total") > 0
    # After a restart the watermarks come from the recovered logs.
    s.kill()
    s.start()
    wait_until(seen, timeout=10, what=f"lag metrics after restart {want}")


# ---- placement when the worker count shrinks -----------------------------------


def test_restart_with_fewer_workers_replaces_partitions(make_sluiced):
    import json

    from test_kafka import PRODUCE_ACKED

    s = make_sluiced(listeners={"kafka": "127.0.0.1:0"}, workers="4").start()
    acked = json.loads(run_py(PRODUCE_ACKED, bootstrap(s), "shrink", "8", "400"))

    from harness import wait_until

    def placement():
        # The first topic snapshot goes out on the control loop's first
        # poll, which may come after the listeners are up: wait for it.
        def read():
            m = s.metrics()
            keys = [f'sluice_kafka_partition_worker{{topic="shrink",partition="{p}"}}'
                    for p in range(8)]
            return {p: int(m[k]) for p, k in enumerate(keys)} if all(k in m for k in keys) else None

        return wait_until(read, timeout=10, what="partition placement in /metrics")

    before = placement()
    assert sorted(before.values()) == [0, 0, 1, 1, 2, 2, 3, 3], before
    s.kill()
    s.sections["cores"]["worker_count"] = "2"
    s.write_conf()
    s.start()
    after = placement()
    # Partitions on workers that still exist stay; the others spread evenly.
    assert all(after[p] == w for p, w in before.items() if w < 2), (before, after)
    assert sorted(after.values()) == [0, 0, 0, 0, 1, 1, 1, 1], after
    # Every log is still found, and appends go on after the recovered offsets.
    got = json.loads(run_py(CONSUME_ALL, bootstrap(s), "shrink", "8", "400"))
    assert sorted(map(tuple, got)) == sorted(map(tuple, acked))
    more = json.loads(run_py(PRODUCE_ACKED, bootstrap(s), "shrink", "8", "16"))
    hw = {}
    for p, o, _ in acked:
        hw[p] = max(hw.get(p, -1), o)
    assert all(o > hw[p] for p, o, _ in more)
    # The new placement was recorded: more workers later do not move it back.
    s.kill()
    s.sections["cores"]["worker_count"] = "4"
    s.write_conf()
    s.start()
    assert placement() == after


def test_init_producer_id_with_current_id_gets_a_new_one(make_sluiced):
    # Kafka without a transactional id: always a new id at epoch 0, also
    # when a v3+ request names the producer's current id and epoch.
    s = start(make_sluiced)
    c = raw_conn(s)
    pid, epoch = init_producer_id(c, 1)
    body = b"\x00" + struct.pack(">iqh", 60000, pid, epoch) + b"\x00"
    c.sendall(frame(22, 4, 2, body, flexible=True))
    r = recv_frame(c)
    _throttle, err, pid2, epoch2 = struct.unpack(">ihqh", r[5:21])
    assert (err, epoch2) == (0, 0) and pid2 > pid
    c.close()


def test_create_partitions_duplicate_topic_is_invalid_request(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    assert produce(c, "dup", batch_v2(-1, -1, -1), 1) == (0, 0)

    def topic(name, count):
        return struct.pack(">h", len(name)) + name + struct.pack(">ii", count, -1)

    body = struct.pack(">i", 3) + topic(b"dup", 2) + topic(b"dup", 3) + topic(b"nope", 2)
    c.sendall(frame(37, 0, 2, body + struct.pack(">ib", 30000, 0)))
    r = recv_frame(c)
    (n,) = struct.unpack(">i", r[8:12])
    off, errs = 12, []
    for _ in range(n):
        (nl,) = struct.unpack(">h", r[off:off + 2])
        name = r[off + 2:off + 2 + nl].decode()
        off += 2 + nl
        (err, ml) = struct.unpack(">hh", r[off:off + 4])
        off += 4 + max(ml, 0)
        errs.append((name, err))
    # Both copies of a repeated topic: INVALID_REQUEST, and nothing grows.
    assert errs == [("dup", 42), ("dup", 42), ("nope", 3)], errs
    c.close()
    m = s.metrics()
    assert 'sluice_kafka_partition_worker{topic="dup",partition="1"}' not in m


# ---- consumer groups across a restart -----------------------------------------

def kstr(s):
    return struct.pack(">h", len(s)) + s


def join_group_v4(c, corr, group, member_id):
    """JoinGroup v4 (KIP-394 member ids): (error, generation, member id)."""
    proto = kstr(b"range") + struct.pack(">i", 0)
    body = kstr(group) + struct.pack(">ii", 6000, 6000) + kstr(member_id) + kstr(b"consumer")
    c.sendall(frame(11, 4, corr, body + struct.pack(">i", 1) + proto))
    r = recv_frame(c)
    assert struct.unpack(">i", r[:4])[0] == corr
    _throttle, err, gen = struct.unpack(">ihi", r[4:14])
    off = 14
    for _ in range(2):  # protocol name, leader
        (n,) = struct.unpack(">h", r[off:off + 2])
        off += 2 + max(n, 0)
    (n,) = struct.unpack(">h", r[off:off + 2])
    return err, gen, r[off + 2:off + 2 + n]


def join_new_member(c, corr, group):
    err, _, mid = join_group_v4(c, corr, group, b"")
    assert err == 79 and mid  # MEMBER_ID_REQUIRED, with the id to rejoin with
    err, gen, mid2 = join_group_v4(c, corr + 1, group, mid)
    assert (err, mid2) == (0, mid), (err, mid2)
    return mid, gen


def offset_commit_v2(c, corr, group, gen, member_id, topic, partition, offset):
    """OffsetCommit v2 of one partition: its error code."""
    body = kstr(group) + struct.pack(">i", gen) + kstr(member_id) + struct.pack(">q", -1)
    body += struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", 1)
    body += struct.pack(">iq", partition, offset) + kstr(b"")
    c.sendall(frame(8, 2, corr, body))
    r = recv_frame(c)
    assert struct.unpack(">i", r[:4])[0] == corr
    (n,) = struct.unpack(">h", r[8:10])
    off = 10 + n + 4
    idx, err = struct.unpack(">ih", r[off:off + 6])
    assert idx == partition
    return err


def offset_fetch_v1(c, corr, group, topic, partition):
    body = kstr(group) + struct.pack(">i", 1) + kstr(topic) + struct.pack(">ii", 1, partition)
    c.sendall(frame(9, 1, corr, body))
    r = recv_frame(c)
    assert struct.unpack(">i", r[:4])[0] == corr
    (n,) = struct.unpack(">h", r[8:10])
    off = 10 + n + 4
    idx, committed = struct.unpack(">iq", r[off:off + 12])
    assert idx == partition
    return committed


# Groups live in memory: after a SIGKILL, members rejoin. Member ids used to
# restart at "<client>-1", so a newcomer got the id a member from before the
# restart still held; that member's rejoin and its commits (same id, and a
# generation the new group soon reaches again) were taken for the
# newcomer's, two consumers shared one membership and one's commits moved
# the other's position back (test_kafka_librdkafka's group restart test).
def test_member_ids_unique_across_restart_and_old_ones_rejected(make_sluiced):
    s = start(make_sluiced)
    c = raw_conn(s)
    assert produce(c, "grpids", batch_v2(-1, -1, -1), 1) == (0, 0)
    old_id, old_gen = join_new_member(c, 2, b"g")
    assert offset_commit_v2(c, 4, b"g", old_gen, old_id, b"grpids", 0, 1) == 0
    c.close()
    s.kill()
    s.start()
    c = raw_conn(s)
    new_id, new_gen = join_new_member(c, 10, b"g")
    assert new_id != old_id
    assert offset_fetch_v1(c, 12, b"g", b"grpids", 0) == 1  # durable across the kill
    # The member from before the restart, with its old id and a generation
    # the new group also has: not a member, so its commit is refused...
    assert new_gen == old_gen
    assert offset_commit_v2(c, 13, b"g", old_gen, old_id, b"grpids", 0, 0) == 25  # UNKNOWN_MEMBER_ID
    assert offset_fetch_v1(c, 14, b"g", b"grpids", 0) == 1
    # ...and its JoinGroup with that id tells it to start over with an empty
    # id rather than making it the newcomer (or a second member of that id).
    assert join_group_v4(c, 15, b"g", old_id)[0] == 25
    assert join_group_v4(c, 16, b"g", b"made-up-1")[0] == 25
    # Nor may a commit outside the group (generation -1) overwrite the
    # offsets of a group that has members.
    assert offset_commit_v2(c, 18, b"g", -1, b"", b"grpids", 0, 0) == 25
    assert offset_fetch_v1(c, 19, b"g", b"grpids", 0) == 1
    # The newcomer is untouched: it commits with its own id and generation.
    assert offset_commit_v2(c, 17, b"g", new_gen, new_id, b"grpids", 0, 2) == 0
    assert offset_fetch_v1(c, 20, b"g", b"grpids", 0) == 2
    # A group without members takes commits from outside (assign() users).
    assert offset_commit_v2(c, 21, b"solo", -1, b"", b"grpids", 0, 1) == 0
    assert offset_fetch_v1(c, 22, b"solo", b"grpids", 0) == 1
    c.close()
