"""Kafka protocol items beyond the basic produce/fetch path: idempotent
producers across a SIGKILL restart (producer state rebuilt from the log tail,
producer ids from a persisted high-water mark), and the admin APIs. Raw
sockets reach the edges clients cannot; real clients (confluent-kafka,
kafka-python, kcat) prove the rest. Every socket has a timeout; every client
runs in a subprocess with a hard timeout."""
import struct

from test_kafka import (batch_v2, bootstrap, frame, produce_result, produce_v3, raw_conn,
                        recv_frame, run_py, start)


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
