"""Rough cross-worker AMQP numbers with pika (client-bound: pika, not the
broker, is the limit; the AMQP benchmark against rabbitmq-server lives with
sluice-bench). Publisher on worker 1, queue and consumer on worker 0:
transient publish then no-ack consume; then persistent publishes to a
durable queue with confirms, one in flight (each waits for its fsync).

    SLUICED=build/control/sluiced /usr/bin/python3 tests/bench/amqp_crossworker_pika.py 20000
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import pika  # noqa: E402
from harness import Sluiced  # noqa: E402
import test_amqp as T  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
s = Sluiced(backend="uring", workers="2", listeners={"amqp": "127.0.0.1:0"}).start()
try:
    owner, pubc = T.connect_on(s, 0), T.connect_on(s, 1)
    och, pch = owner.channel(), pubc.channel()
    q = och.queue_declare("bench").method.queue
    body = b"x" * 100
    t0 = time.time()
    for _ in range(N):
        pch.basic_publish("", q, body)
    pch.queue_declare(q, passive=True)  # ordered after the publishes
    t1 = time.time()
    n = 0
    for _ in och.consume(q, auto_ack=True, inactivity_timeout=5):
        n += 1
        if n == N:
            break
    t2 = time.time()
    print(f"transient, 100 B, cross-worker: publish {N / (t1 - t0):.0f} msg/s, "
          f"consume {N / (t2 - t1):.0f} msg/s")
    dq = och.queue_declare("bench.durable", durable=True).method.queue
    pch.confirm_delivery()
    lat = []
    m = max(N // 10, 1)
    t0 = time.time()
    for _ in range(m):
        a = time.time()
        pch.basic_publish("", dq, body, properties=pika.BasicProperties(delivery_mode=2))
        lat.append(time.time() - a)
    t1 = time.time()
    lat.sort()
    print(f"persistent + confirm, one in flight, cross-worker: {m / (t1 - t0):.0f} msg/s, "
          f"p50 {lat[len(lat) // 2] * 1e3:.2f} ms, p99 {lat[int(len(lat) * .99)] * 1e3:.2f} ms")
finally:
    s.kill()
