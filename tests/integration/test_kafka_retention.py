"""Kafka topic retention and topic configs, as Kafka users expect: CreateTopics
configs (segment.bytes, segment.ms, retention.bytes, retention.ms) applied, validated
(INVALID_CONFIG) and durable across a restart; DescribeConfigs reporting the
values and their sources; the broker's [kafka] defaults for topics without
their own; and retention actually moving the log start (ListOffsets earliest,
OFFSET_OUT_OF_RANGE below it, old segment files gone, /metrics). Real
clients (confluent-kafka-python) in subprocesses with hard timeouts; the
broker checks retention every 100 ms here; every wait polls a condition
with a deadline."""
import os
import struct

from harness import wait_until
from test_kafka import (bootstrap, fetch_v4, frame, list_offsets_v1, raw_conn, recv_frame, run_py,
                        start, uvarint)

CHECK_MS = "100"
MIB = 1 << 20

# Creates the topics given as JSON {name: {config}} (one partition each;
# config null: the topic exists already) and
# produces `mib` MiB of 16 KiB records to each (acks=all), optionally with a
# record timestamp `ts` (ms) instead of now.
CREATE_AND_PRODUCE = r"""
import json, sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
b, topics, mib, ts = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
a = AdminClient({'bootstrap.servers': b})
new = [NewTopic(t, num_partitions=1, replication_factor=1, config=c)
       for t, c in topics.items() if c is not None]
for t, f in (a.create_topics(new) if new else {}).items():
    f.result(30)
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 5})
n = int(mib * 64)
for t in topics:
    for i in range(n):
        kw = {'timestamp': ts} if ts > 0 else {}
        while True:
            try:
                p.produce(t, bytes([i % 251]) * 16384, partition=0, **kw)
                break
            except BufferError:
                p.poll(0.1)
assert p.flush(60) == 0
print("ok", n)
"""

# DescribeConfigs of the named topics: {topic: {key: [value, source, is_default]}}.
DESCRIBE = r"""
import json, sys
from confluent_kafka.admin import AdminClient, ConfigResource
b, names = sys.argv[1], sys.argv[2].split(',')
a = AdminClient({'bootstrap.servers': b})
out = {}
for r, f in a.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, n)
                                for n in names]).items():
    out[r.name] = {k: [v.value, int(getattr(v.source, 'value', v.source)), bool(v.is_default)]
                   for k, v in f.result(30).items()}
print(json.dumps(out))
"""

# CreateTopics with a bad config: INVALID_CONFIG per topic, nothing created,
# while a good topic of the same request is created.
BAD_CONFIGS = r"""
import sys
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
bad = {'bad-ms': {'retention.ms': 'abc'}, 'bad-ms2': {'retention.ms': '-2'},
       'bad-seg': {'segment.bytes': '1000'}, 'bad-seg2': {'segment.bytes': '2147483648'},
       'bad-segms': {'segment.ms': '0'},
       'bad-bytes': {'retention.bytes': '1g'}, 'bad-compact': {'cleanup.policy': 'compact'},
       'bad-ts': {'message.timestamp.type': 'Sometime'}}
topics = [NewTopic(t, num_partitions=1, replication_factor=1, config=c) for t, c in bad.items()]
topics.append(NewTopic('good', num_partitions=1, replication_factor=1,
                       config={'retention.ms': '60000'}))
for t, f in a.create_topics(topics).items():
    if t == 'good':
        f.result(30)
        continue
    try:
        f.result(30)
        raise AssertionError("created with a bad config: " + t)
    except Exception as e:
        err = e.args[0]
        assert err.code() == KafkaError.INVALID_CONFIG, (t, err)
md = a.list_topics(timeout=10).topics
assert 'good' in md and not (set(bad) & set(md)), sorted(md)
print("ok")
"""

# Reads the partition to the high watermark, from the beginning or (argv[3]
# "0") from offset 0, which retention removed: the fetch there is
# OFFSET_OUT_OF_RANGE and auto.offset.reset=earliest moves the consumer to
# the log start. Prints "earliest hw first count".
CONSUME_FROM_EARLIEST = r"""
import sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
b, t, at = sys.argv[1], sys.argv[2], sys.argv[3]
c = Consumer({'bootstrap.servers': b, 'group.id': 'ret', 'enable.auto.commit': False,
              'fetch.wait.max.ms': 100, 'auto.offset.reset': 'earliest'})
lo, hi = c.get_watermark_offsets(TopicPartition(t, 0), timeout=10)
c.assign([TopicPartition(t, 0, OFFSET_BEGINNING if at == 'beginning' else int(at))])
first, n, deadline = None, 0, time.time() + 60
while n < hi - lo:
    m = c.poll(0.5)
    assert time.time() < deadline, (n, lo, hi)
    if m is None or m.error():
        continue
    first = m.offset() if first is None else first
    n += 1
c.close()
print(lo, hi, first, n)
"""


def topic_dir(s):
    """The one partition directory of the broker's one topic."""
    topics = os.path.join(s.data_dir, "topics")
    dirs = os.listdir(topics)
    assert len(dirs) == 1, dirs
    return os.path.join(topics, dirs[0])


def earliest(c, topic, corr):
    c.sendall(list_offsets_v1(topic, 0, -2, corr))
    r = recv_frame(c)
    (nlen,) = struct.unpack(">h", r[8:10])
    p = 10 + nlen + 4
    idx, err, _, offset = struct.unpack(">ihqq", r[p:p + 22])
    assert (idx, err) == (0, 0), (idx, err)
    return offset


def fetch_error(c, topic, offset, corr):
    c.sendall(fetch_v4(topic, 0, offset, corr))
    r = recv_frame(c)
    (nlen,) = struct.unpack(">h", r[12:14])
    off = 14 + nlen + 4
    idx, err, hw = struct.unpack(">ihq", r[off:off + 14])
    return err


def produce(s, topics, mib, ts=0):
    import json
    assert run_py(CREATE_AND_PRODUCE, bootstrap(s), json.dumps(topics), str(mib),
                  str(ts)).startswith(b"ok")


def describe(s, *names):
    import json
    return json.loads(run_py(DESCRIBE, bootstrap(s), ",".join(names)))


def assert_retention_moved_start(s, topic):
    """Retention moved the log start past 0: ListOffsets earliest, the old
    segment's files gone, a fetch below the start is OFFSET_OUT_OF_RANGE
    (1), and a consumer from the beginning starts at the new start and
    reads every record above it."""
    c = raw_conn(s)
    d = topic_dir(s)
    wait_until(lambda: earliest(c, topic, 1) > 0, 30, "ListOffsets earliest past 0")
    wait_until(lambda: not os.path.exists(os.path.join(d, "%020d.log" % 0)), 30,
               "the first segment's file to go")
    start_offset = earliest(c, topic, 2)
    assert not os.path.exists(os.path.join(d, "%020d.index" % 0))
    assert fetch_error(c, topic, 0, 3) == 1
    assert fetch_error(c, topic, start_offset - 1, 4) == 1
    assert fetch_error(c, topic, start_offset, 5) == 0
    c.close()
    for at in ("beginning", "0"):
        lo, hi, first, n = map(int, run_py(CONSUME_FROM_EARLIEST, bootstrap(s), topic, at).split())
        assert lo >= start_offset and first == lo and n == hi - lo, (at, start_offset, lo, hi,
                                                                      first, n)
    m = s.metrics()
    assert s.metric_sum("sluice_kafka_log_segments_deleted_total") >= 1
    key = 'sluice_kafka_partition_log_start_offset{topic="%s",partition="0"}' % topic
    wait_until(lambda: s.metrics().get(key, -1) >= start_offset, 10, "the published log start")
    return start_offset, m


def test_topic_retention_bytes_deletes_old_segments(make_sluiced):
    s = start(make_sluiced, extra={"kafka": {"retention_check_interval_ms": CHECK_MS}})
    produce(s, {"ret": {"segment.bytes": str(MIB), "retention.bytes": str(MIB)}}, 3.5)
    assert_retention_moved_start(s, "ret")
    # What is left is about retention.bytes plus the segment being written.
    d = topic_dir(s)
    logs = [f for f in os.listdir(d) if f.endswith(".log")]
    assert 1 <= len(logs) <= 3, logs


# From the beginning to the high watermark: offsets only increase (a
# retention reset skips forward), and every value is the one produced at
# that offset: CREATE_AND_PRODUCE's record i of a round of `per` records is
# 16 KiB of byte i % 251.
CONSUME_CHECK_VALUES = r"""
import sys, time
from confluent_kafka import Consumer, TopicPartition, OFFSET_BEGINNING
b, t, per = sys.argv[1], sys.argv[2], int(sys.argv[3])
c = Consumer({'bootstrap.servers': b, 'group.id': 'rc', 'enable.auto.commit': False,
              'fetch.wait.max.ms': 100, 'auto.offset.reset': 'earliest'})
lo, hi = c.get_watermark_offsets(TopicPartition(t, 0), timeout=10)
c.assign([TopicPartition(t, 0, OFFSET_BEGINNING)])
last, n, deadline = -1, 0, time.time() + 60
while last < hi - 1:
    assert time.time() < deadline, (last, n, lo, hi)
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    assert m.offset() > last, (m.offset(), last)
    assert m.value() == bytes([(m.offset() % per) % 251]) * 16384, m.offset()
    last, n = m.offset(), n + 1
c.close()
print(lo, hi, n)
"""


def recycle_run(make_sluiced, recycle):
    """Retention deletes segments of a 1 MiB-segment topic; a second round
    of produce rolls new segments. Returns (spare files seen, new segments
    written over a deleted one's file)."""
    extra = {"kafka": {"retention_check_interval_ms": CHECK_MS}}
    if recycle is not None:
        extra["server"] = {"recycle_segments": str(recycle)}
    s = start(make_sluiced, extra=extra)
    cfg = {"segment.bytes": str(MIB), "retention.bytes": str(MIB)}
    produce(s, {"rec": cfg}, 3.5)
    assert_retention_moved_start(s, "rec")
    d = topic_dir(s)
    spares = [f for f in os.listdir(d) if f.startswith("recycle-")]
    produce(s, {"rec": None}, 3.5)
    wait_until(lambda: s.metric_sum("sluice_kafka_log_segments_deleted_total") >= 4, 30,
               "retention of the second round")
    reused = s.metric_sum("sluice_kafka_log_segments_reused_total")
    # what is served from the log start on is what was produced there (a
    # reused file's old batches past the appends never are); retention may
    # still move the start meanwhile, which only skips forward
    lo, hi, n = map(int, run_py(CONSUME_CHECK_VALUES, bootstrap(s), "rec", "224").split())
    assert hi > lo and n >= 1, (lo, hi, n)
    return spares, reused


def test_retention_recycles_segment_files(make_sluiced):
    spares, reused = recycle_run(make_sluiced, None)  # the default: 2
    assert spares and all(f.endswith(".seg") for f in spares), spares
    assert reused >= 1, reused


def test_recycle_segments_zero_unlinks(make_sluiced):
    spares, reused = recycle_run(make_sluiced, 0)
    assert spares == [] and reused == 0, (spares, reused)


def test_roll_whose_rename_a_crash_took_back_is_adopted(make_sluiced):
    """A roll writes to an open spare at once and renames it to the new
    segment's name alongside. Here the crash comes after the tail
    segment's writes but "before" its rename was durable: sluiced is
    killed and the tail file is put back under a spare's name. At the next
    start the partition adopts it as that segment: every acknowledged
    record is back, values intact, and the spare name is gone."""
    extra = {"kafka": {"retention_check_interval_ms": CHECK_MS}}
    s = start(make_sluiced, extra=extra)
    cfg = {"segment.bytes": str(MIB), "retention.bytes": str(4 * MIB)}
    produce(s, {"rec": cfg}, 3.5)
    lo, hi, n = map(int, run_py(CONSUME_CHECK_VALUES, bootstrap(s), "rec", "224").split())
    assert hi > lo and n >= 1, (lo, hi, n)
    s.kill()
    d = topic_dir(s)
    bases = sorted(int(f[:20]) for f in os.listdir(d) if f.endswith(".log"))
    assert len(bases) >= 2, bases
    tail = "%020d" % bases[-1]
    os.rename(os.path.join(d, tail + ".log"), os.path.join(d, "recycle-3.seg"))
    for ext in (".index", ".timeindex"):
        if os.path.exists(os.path.join(d, tail + ext)):
            os.unlink(os.path.join(d, tail + ext))
    s.start()
    wait_until(lambda: s.metric_sum("sluice_kafka_log_segments_adopted_total") >= 1, 30,
               "the spare adopted")
    assert os.path.exists(os.path.join(d, tail + ".log"))
    assert not os.path.exists(os.path.join(d, "recycle-3.seg"))
    lo2, hi2, n2 = map(int, run_py(CONSUME_CHECK_VALUES, bootstrap(s), "rec", "224").split())
    assert hi2 == hi and lo2 <= hi2 and n2 == hi2 - lo2, (lo, hi, lo2, hi2, n2)


def test_topic_retention_ms_deletes_old_segments(make_sluiced):
    s = start(make_sluiced, extra={"kafka": {"retention_check_interval_ms": CHECK_MS}})
    # Records stamped a day ago in a topic keeping an hour: every closed
    # segment is past retention.ms (the one being written always stays).
    import time
    day_ago_ms = int(time.time() * 1000) - 86400 * 1000
    produce(s, {"old": {"segment.bytes": str(MIB), "retention.ms": "3600000"}}, 2.5, day_ago_ms)
    assert_retention_moved_start(s, "old")


# A slow topic: one record at a time, stamped a day ago, into a topic that
# keeps an hour and closes a segment once it is 50 ms old; produced until
# ListOffsets earliest moves (the first segment closed by age and removed by
# time), with a deadline. Prints the earliest offset and the records sent.
SLOW_TOPIC = r"""
import sys, time
from confluent_kafka import Producer, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic('slow', num_partitions=1, replication_factor=1,
                                      config={'segment.ms': '50',
                                              'retention.ms': '3600000'})]).items():
    f.result(30)
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 0})
c = Consumer({'bootstrap.servers': b, 'group.id': 'slow'})
day_ago = int(time.time() * 1000) - 86400 * 1000
deadline, n, lo = time.time() + 30, 0, 0
while lo == 0:
    assert time.time() < deadline, ("earliest never moved", n)
    p.produce('slow', b'x', partition=0, timestamp=day_ago)
    assert p.flush(10) == 0
    n += 1
    lo, hi = c.get_watermark_offsets(TopicPartition('slow', 0), timeout=10)
c.close()
print(lo, n)
"""


def test_segment_ms_closes_slow_segments_for_time_retention(make_sluiced):
    # Without segment.ms a topic under 256 MiB never closes its segment, so
    # retention.ms would never remove anything from it.
    s = start(make_sluiced, extra={"kafka": {"retention_check_interval_ms": CHECK_MS}})
    lo, n = map(int, run_py(SLOW_TOPIC, bootstrap(s)).split())
    assert 0 < lo < n, (lo, n)
    c = raw_conn(s)
    assert fetch_error(c, "slow", 0, 1) == 1
    c.close()
    assert s.metric_sum("sluice_kafka_log_segments_deleted_total") >= 1


def test_broker_default_retention_for_topics_without_their_own(make_sluiced):
    s = start(make_sluiced, extra={"kafka": {"retention_check_interval_ms": CHECK_MS,
                                             "segment_bytes": "1m", "retention_bytes": "1m"}})
    produce(s, {"plain": {}}, 3.5)
    assert_retention_moved_start(s, "plain")


def test_unlimited_retention_keeps_everything(make_sluiced):
    # The same load without limits: the start stays at 0 across many
    # retention checks and every segment stays.
    s = start(make_sluiced, extra={"kafka": {"retention_check_interval_ms": CHECK_MS,
                                             "segment_bytes": "1m"}})
    produce(s, {"keep": {"retention.ms": "-1"}}, 3.5)
    d = topic_dir(s)
    c = raw_conn(s)
    key = 'sluice_kafka_partition_log_start_offset{topic="keep",partition="0"}'
    wait_until(lambda: s.metrics().get(key) == 0, 10, "the published log start")
    assert earliest(c, "keep", 1) == 0
    assert fetch_error(c, "keep", 0, 2) == 0
    assert len([f for f in os.listdir(d) if f.endswith(".log")]) >= 3
    assert s.metric_sum("sluice_kafka_log_segments_deleted_total") == 0
    c.close()


def test_describe_configs_values_sources_and_restart(make_sluiced):
    s = start(make_sluiced, extra={"kafka": {"retention_bytes": "10m"}})
    produce(s, {"own": {"segment.bytes": str(2 * MIB), "retention.bytes": str(3 * MIB),
                        "retention.ms": "3600000", "message.timestamp.type": "LogAppendTime",
                        "segment.ms": "600000"},
                "plain": {}}, 0)
    TOPIC, STATIC, DEFAULT = 1, 4, 5

    def check(want_plain_bytes):
        got = describe(s, "own", "plain")
        own, plain = got["own"], got["plain"]
        assert own["segment.bytes"][:2] == [str(2 * MIB), TOPIC], own
        assert own["retention.bytes"][:2] == [str(3 * MIB), TOPIC], own
        assert own["retention.ms"][:2] == ["3600000", TOPIC], own
        assert own["message.timestamp.type"][:2] == ["LogAppendTime", TOPIC], own
        assert own["segment.ms"][:2] == ["600000", TOPIC], own
        assert not own["retention.ms"][2]
        assert plain["segment.bytes"][:2] == [str(256 * MIB), DEFAULT], plain
        assert plain["retention.ms"][:2] == [str(7 * 86400 * 1000), DEFAULT], plain
        assert plain["segment.ms"][:2] == [str(7 * 86400 * 1000), DEFAULT], plain
        assert plain["retention.ms"][2] and not own["segment.bytes"][2]
        assert plain["retention.bytes"][:2] == [str(want_plain_bytes), STATIC], plain
        assert plain["cleanup.policy"][0] == "delete", plain
        assert plain["message.timestamp.type"][:2] == ["CreateTime", DEFAULT], plain

    check(10 * MIB)
    # The topic's own values are in the metadata log: they survive a crash.
    s.kill()
    s.start()
    check(10 * MIB)
    # A topic without its own value follows the broker's default when that
    # changes; one with its own keeps it.
    s.stop()
    s.sections["kafka"]["retention_bytes"] = "20m"
    s.write_conf()
    s.start()
    check(20 * MIB)


def test_create_topics_bad_config_is_invalid_config(make_sluiced):
    s = start(make_sluiced)
    assert run_py(BAD_CONFIGS, bootstrap(s)).startswith(b"ok")
    # and nothing of them reached the disk
    assert len(os.listdir(os.path.join(s.data_dir, "topics"))) == 1


# ---- CreateTopics v5 on a raw socket (KIP-525: the answer carries the
# created topic's configs; no Debian client sends v5) ------------------------

def cstr(s):
    return b"\x00" if s is None else uvarint(len(s) + 1) + s.encode()


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)
        self.p += struct.calcsize(fmt)
        return v[0]

    def uvarint(self):
        n = shift = 0
        while True:
            c = self.b[self.p]
            self.p += 1
            n |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                return n

    def cstr(self):
        n = self.uvarint()
        if n == 0:
            return None
        s = self.b[self.p:self.p + n - 1].decode()
        self.p += n - 1
        return s

    def tags(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.p += self.uvarint()


def create_topics_v5(topics, corr):
    body = uvarint(len(topics) + 1)
    for name, configs in topics:
        body += cstr(name) + struct.pack(">ih", 1, 1) + uvarint(1)
        body += uvarint(len(configs) + 1)
        for k, v in configs.items():
            body += cstr(k) + cstr(v) + b"\x00"
        body += b"\x00"
    body += struct.pack(">ib", 30000, 0) + b"\x00"
    return frame(19, 5, corr, body, flexible=True)


def create_topics_v5_result(r):
    """{name: (error, message, {config: (value, source)} or None)}"""
    rd = Reader(r)
    rd.take(">i")  # correlation id
    rd.tags()
    rd.take(">i")  # throttle
    out = {}
    for _ in range(rd.uvarint() - 1):
        name, err, msg = rd.cstr(), rd.take(">h"), None
        msg = rd.cstr()
        rd.take(">i"), rd.take(">h")
        n, cfg = rd.uvarint(), None
        if n:
            cfg = {}
            for _ in range(n - 1):
                k, v = rd.cstr(), rd.cstr()
                rd.take(">b")
                src = rd.take(">b")
                rd.take(">b")
                rd.tags()
                cfg[k] = (v, src)
        rd.tags()
        out[name] = (err, msg, cfg)
    return out


def test_create_topics_v5_answers_configs_and_config_errors(make_sluiced):
    # Regression: a v5+ answer for a topic in error asked the codec for an
    # array of -1 elements (null configs) and the broker aborted.
    s = start(make_sluiced)
    c = raw_conn(s)
    c.sendall(create_topics_v5([("v5own", {"segment.bytes": "1048576", "retention.ms": "-1"}),
                                ("v5bad", {"segment.bytes": "1k"})], 1))
    got = create_topics_v5_result(recv_frame(c))
    err, msg, cfg = got["v5own"]
    assert (err, msg) == (0, None), got
    assert cfg["segment.bytes"] == ("1048576", 1) and cfg["retention.ms"] == ("-1", 1), cfg
    assert cfg["retention.bytes"] == ("-1", 5) and cfg["cleanup.policy"][0] == "delete", cfg
    err, msg, cfg = got["v5bad"]
    assert err == 40 and "segment.bytes" in msg and cfg is None, got
    c.close()


# kafka-python's admin client: CreateTopics with topic_configs (one bad),
# then DescribeConfigs of two keys only (the configuration_keys filter).
KAFKA_PYTHON_ADMIN = r"""
import sys
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
from kafka.errors import InvalidConfigurationError
b = sys.argv[1]
a = KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=30000)
r = a.create_topics([NewTopic('kp', 1, 1, topic_configs={'retention.bytes': '5242880',
                                                         'segment.bytes': '1048576'})],
                    timeout_ms=30000)
assert [t[:2] for t in r.topic_errors] == [('kp', 0)], r
try:
    a.create_topics([NewTopic('kpbad', 1, 1, topic_configs={'retention.ms': 'soon'})],
                    timeout_ms=30000)
    raise AssertionError("created with retention.ms=soon")
except InvalidConfigurationError:
    pass
r = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, 'kp',
                                       configs={'retention.bytes': None, 'segment.ms': None})])
res = (r[0] if isinstance(r, list) else r).resources
assert len(res) == 1 and res[0][0] == 0, res
got = {e[0]: e[1] for e in res[0][4]}
assert got == {'retention.bytes': '5242880', 'segment.ms': '604800000'}, got
a.close()
print("ok")
"""


def test_kafka_python_admin_topic_configs(make_sluiced):
    s = start(make_sluiced)
    assert run_py(KAFKA_PYTHON_ADMIN, bootstrap(s)).startswith(b"ok")


# DescribeConfigs of broker 0: the [kafka] keys by Kafka's names.
DESCRIBE_BROKER = r"""
import json, sys
from confluent_kafka.admin import AdminClient, ConfigResource
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
fs = a.describe_configs([ConfigResource(ConfigResource.Type.BROKER, '0')])
out = {k: [v.value, int(getattr(v.source, 'value', v.source))]
       for k, v in list(fs.values())[0].result(30).items()}
print(json.dumps(out))
"""


def pstr(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def describe_configs_v0(resources, corr):
    body = struct.pack(">i", len(resources))
    for rtype, name in resources:
        body += struct.pack(">b", rtype) + pstr(name) + struct.pack(">i", -1)
    return frame(32, 0, corr, body)


def describe_configs_v0_result(r):
    """[(error, type, name, {key: (value, is_default)})]"""
    p = 8  # correlation id, throttle
    (n,) = struct.unpack_from(">i", r, p)
    p += 4

    def rstr():
        nonlocal p
        (ln,) = struct.unpack_from(">h", r, p)
        p += 2
        if ln < 0:
            return None
        v = r[p:p + ln].decode()
        p += ln
        return v
    out = []
    for _ in range(n):
        (err,) = struct.unpack_from(">h", r, p)
        p += 2
        rstr()
        (rtype,) = struct.unpack_from(">b", r, p)
        p += 1
        name = rstr()
        (nc,) = struct.unpack_from(">i", r, p)
        p += 4
        cfg = {}
        for _ in range(max(nc, 0)):
            k, v = rstr(), rstr()
            _ro, dflt, _sens = struct.unpack_from(">bbb", r, p)
            p += 3
            cfg[k] = (v, bool(dflt))
        out.append((err, rtype, name, cfg))
    return out


def test_describe_broker_configs(make_sluiced):
    import json
    s = start(make_sluiced, extra={"kafka": {"retention_bytes": "1g",
                                             "retention_check_interval_ms": CHECK_MS}})
    got = json.loads(run_py(DESCRIBE_BROKER, bootstrap(s)))
    STATIC, DEFAULT = 4, 5
    assert got["log.retention.bytes"] == [str(1 << 30), STATIC], got
    assert got["log.retention.check.interval.ms"] == [CHECK_MS, STATIC], got
    assert got["log.retention.ms"] == [str(7 * 86400 * 1000), DEFAULT], got
    assert got["log.segment.bytes"] == [str(256 * MIB), DEFAULT], got
    assert got["log.roll.ms"] == [str(7 * 86400 * 1000), DEFAULT], got
    assert got["num.partitions"] == ["1", DEFAULT], got
    # v0 (is_default, no source), raw: broker 0, another broker id
    # (INVALID_REQUEST, as Kafka), a topic's own value and a default one.
    produce(s, {"v0t": {"retention.ms": "60000"}}, 0)
    c = raw_conn(s)
    c.sendall(describe_configs_v0([(4, "0"), (4, "7"), (2, "v0t"), (2, "nope")], 1))
    b0, b7, t, nope = describe_configs_v0_result(recv_frame(c))
    c.close()
    assert b0[0] == 0 and b0[3]["log.retention.bytes"] == (str(1 << 30), False), b0
    assert b0[3]["log.retention.ms"] == (str(7 * 86400 * 1000), True), b0
    assert b7[0] == 42 and b7[3] == {}, b7
    assert t[0] == 0 and t[3]["retention.ms"] == ("60000", False), t
    assert t[3]["segment.bytes"] == (str(256 * MIB), True), t
    assert nope[0] == 3, nope


# kafka-python asks for synonyms (DescribeConfigs v1+ include_synonyms):
# the topic's own value first, then the broker's, by Kafka's names.
KAFKA_PYTHON_SYNONYMS = r"""
import json, sys
from kafka.admin import KafkaAdminClient, NewTopic, ConfigResource, ConfigResourceType
b = sys.argv[1]
a = KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=30000)
a.create_topics([NewTopic('syn', 1, 1, topic_configs={'retention.bytes': '5242880'})],
                timeout_ms=30000)
out = {}
for rtype, name in ((ConfigResourceType.TOPIC, 'syn'), (ConfigResourceType.BROKER, '0')):
    r = a.describe_configs([ConfigResource(rtype, name)], include_synonyms=True)
    res = (r[0] if isinstance(r, list) else r).resources
    assert len(res) == 1 and res[0][0] == 0, res
    out[name] = {e[0]: [list(s) for s in e[5]] for e in res[0][4]}
a.close()
print(json.dumps(out))
"""


def test_describe_configs_synonyms(make_sluiced):
    import json
    s = start(make_sluiced, extra={"kafka": {"segment_bytes": "64m"}})
    got = json.loads(run_py(KAFKA_PYTHON_SYNONYMS, bootstrap(s)))
    TOPIC, STATIC, DEFAULT = 1, 4, 5
    syn, broker = got["syn"], got["0"]
    assert syn["retention.bytes"] == [["retention.bytes", "5242880", TOPIC],
                                      ["log.retention.bytes", "-1", DEFAULT]], syn
    assert syn["segment.bytes"] == [["log.segment.bytes", str(64 * MIB), STATIC]], syn
    assert syn["segment.ms"] == [["log.roll.ms", str(7 * 86400 * 1000), DEFAULT]], syn
    assert broker["log.segment.bytes"] == [["log.segment.bytes", str(64 * MIB), STATIC]], broker
