"""The Kafka recent-data cache ([kafka] cache_bytes): a consumer catching up
on a topic far beyond storage's 4 MiB memory window reads from the
written-through cache, not from disk; a tiny budget falls back to disk reads
and stays correct; after a restart (cache empty) the same bytes come from
disk; a deleted and re-created topic never gets the old topic's bytes. Real
clients (confluent-kafka) and raw Fetch requests, every client in a
subprocess or socket with a hard timeout."""
import struct

from test_kafka import CLIENT_TIMEOUT, bootstrap, frame, raw_conn, recv_frame, run_py, start

FILL = r"""
import sys
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
b, topic, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
a = AdminClient({'bootstrap.servers': b})
for t, f in a.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]).items():
    f.result(30)
# Batches of about 16 KiB; 1000-byte values carry their index and a tag.
p = Producer({'bootstrap.servers': b, 'acks': 'all', 'linger.ms': 5, 'batch.size': 16384})
for i in range(n):
    p.produce(topic, tag + b'%08d' % i + b'x' * 989, partition=0)
    if i % 1000 == 999:
        p.poll(0)
assert p.flush(60) == 0
print("ok")
"""

CONSUME = r"""
import sys, time
from confluent_kafka import Consumer, TopicPartition
b, topic, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
fetch = 1 << 20
c = Consumer({'bootstrap.servers': b, 'group.id': 'cc', 'fetch.wait.max.ms': 100,
              'max.partition.fetch.bytes': fetch, 'fetch.max.bytes': fetch,
              'queued.max.messages.kbytes': 2048})
c.assign([TopicPartition(topic, 0, 0)])
want = 0
deadline = time.time() + 60
while want < n and time.time() < deadline:
    m = c.poll(0.2)
    if m is None or m.error():
        continue
    assert m.offset() == want, (m.offset(), want)
    assert m.value()[:len(tag) + 8] == tag + b'%08d' % want, (m.value()[:20], want)
    want += 1
c.close()
assert want == n, (want, n)
print("ok")
"""

N = 24000  # ~24 MB on one partition: six times the 4 MiB memory window


def fill(s, topic, n=N, tag="a"):
    assert run_py(FILL, bootstrap(s), topic, str(n), tag).startswith(b"ok")


def consume(s, topic, n=N, tag="a"):
    assert run_py(CONSUME, bootstrap(s), topic, str(n), tag).startswith(b"ok")


def reads(s):
    return {k: s.metric_sum("sluice_kafka_" + k) for k in (
        "fetch_reads_disk_total", "fetch_reads_ahead_total", "fetch_reads_cache_total",
        "fetch_reads_mem_total", "cache_hits_total", "cache_evictions_total", "cache_bytes")}


def fetch_v4(topic, offset, corr):
    t = topic.encode()
    body = struct.pack(">iiiib", -1, 0, 1, 1 << 20, 0) + struct.pack(">ih", 1, len(t)) + t
    body += struct.pack(">iiqi", 1, 0, offset, 1 << 20)
    return frame(1, 4, corr, body)


def fetch_all_raw(s, topic):
    """Every whole batch of partition 0 as the broker sends it (raw Fetch v4,
    1 MiB answers), and the high watermark."""
    c = raw_conn(s)
    c.settimeout(CLIENT_TIMEOUT)
    out, offset, hw, corr = bytearray(), 0, None, 0
    while hw is None or offset < hw:
        corr += 1
        c.sendall(fetch_v4(topic, offset, corr))
        r = recv_frame(c)
        (nlen,) = struct.unpack(">h", r[12:14])
        p = 14 + nlen + 4
        _, err, hw, _ = struct.unpack(">ihqq", r[p:p + 22])
        assert err == 0, err
        p += 22
        (naborted,) = struct.unpack(">i", r[p:p + 4])
        p += 4 + 16 * max(naborted, 0)
        (rlen,) = struct.unpack(">i", r[p:p + 4])
        recs = r[p + 4:p + 4 + max(rlen, 0)]
        pos = 0
        while pos + 61 <= len(recs):
            base, blen = struct.unpack(">qi", recs[pos:pos + 12])
            if pos + 12 + blen > len(recs):
                break  # a partial last batch: fetched again from its start
            (delta,) = struct.unpack(">i", recs[pos + 23:pos + 27])
            assert base == offset, (base, offset)
            out += recs[pos:pos + 12 + blen]
            offset = base + delta + 1
            pos += 12 + blen
        assert pos > 0 or offset >= hw, "no progress"
    c.close()
    return bytes(out), hw


def test_catch_up_consumer_reads_from_cache_not_disk(make_sluiced):
    """Within the budget, a consumer starting at offset 0 after the topic
    left the memory window reads every record once, in order, and never
    waits for the disk."""
    s = start(make_sluiced, extra={"kafka": {"cache_bytes": "64m"}})
    fill(s, "cc")
    consume(s, "cc")
    r = reads(s)
    print(r)
    assert r["fetch_reads_disk_total"] == 0 and r["fetch_reads_ahead_total"] == 0, r
    assert r["cache_hits_total"] > 0 and r["fetch_reads_cache_total"] > 0, r
    assert r["cache_evictions_total"] == 0, r
    # Blocks were allocated for what was written, within the budget.
    assert 24e6 <= r["cache_bytes"] <= 64 << 20, r


def test_tiny_cache_falls_back_to_disk(make_sluiced):
    """Two 2 MiB blocks for 24 MB: old blocks are evicted, the consumer
    reads them from disk, and every record still arrives once in order."""
    s = start(make_sluiced, extra={"kafka": {"cache_bytes": "4m"}})
    fill(s, "tc")
    consume(s, "tc")
    r = reads(s)
    print(r)
    assert r["fetch_reads_disk_total"] + r["fetch_reads_ahead_total"] > 0, r
    assert r["cache_evictions_total"] > 0, r
    assert r["cache_bytes"] <= 4 << 20, r


def test_cache_off_reads_from_disk(make_sluiced):
    """cache_bytes = 0 turns write-through off: nothing is held, the old part
    of the topic comes from disk."""
    s = start(make_sluiced, extra={"kafka": {"cache_bytes": "0"}})
    fill(s, "oc", 12000)
    consume(s, "oc", 12000)
    r = reads(s)
    assert r["cache_bytes"] == 0 and r["cache_hits_total"] == 0, r
    assert r["fetch_reads_disk_total"] + r["fetch_reads_ahead_total"] > 0, r


def test_cached_bytes_identical_to_disk_after_restart(make_sluiced):
    """What a Fetch gets from the cache is byte for byte what it gets from
    disk after a restart (baseOffset and partitionLeaderEpoch stamped as
    storage stamps them), whole batches up to the high watermark."""
    s = start(make_sluiced, extra={"kafka": {"cache_bytes": "64m"}})
    fill(s, "bi")
    cached, hw = fetch_all_raw(s, "bi")
    r = reads(s)
    assert r["fetch_reads_disk_total"] == 0 and r["cache_hits_total"] > 0, r
    assert hw == N
    assert s.stop() == 0
    s.start()
    on_disk, hw2 = fetch_all_raw(s, "bi")
    r = reads(s)
    assert r["fetch_reads_disk_total"] > 0 and r["cache_hits_total"] == 0, r
    assert hw2 == hw and len(on_disk) == len(cached)
    assert on_disk == cached
    # and a client reads it all from disk, in order
    consume(s, "bi")


def test_deleted_topic_cache_freed_and_never_served(make_sluiced):
    """Delete a cached topic: its blocks' memory goes back; the re-created
    topic (same name, same offsets) is read with its own bytes only."""
    s = start(make_sluiced, extra={"kafka": {"cache_bytes": "64m"}})
    fill(s, "dt", 12000, "old")
    assert reads(s)["cache_bytes"] > 0
    out = run_py(r"""
import sys
from confluent_kafka.admin import AdminClient
a = AdminClient({'bootstrap.servers': sys.argv[1]})
for t, f in a.delete_topics(['dt']).items():
    f.result(30)
print("ok")
""", bootstrap(s))
    assert out.startswith(b"ok")
    assert reads(s)["cache_bytes"] == 0
    fill(s, "dt", 12000, "new")
    consume(s, "dt", 12000, "new")
    r = reads(s)
    assert r["cache_hits_total"] > 0 and r["fetch_reads_disk_total"] == 0, r
