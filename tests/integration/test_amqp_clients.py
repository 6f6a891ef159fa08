"""AMQP 0-9-1 with real clients other than pika: amqp091-go programs
(clients/amqpgo, Debian's golang-github-rabbitmq-amqp091-go-dev),
rabbitmq-c's amqp-tools and sluice-bench's own AMQP client, on every backend.
sluiced runs two workers; the amqp091-go programs place their connections on
both through the admin API (SLUICE_ADMIN), so a scenario's queues, publishes
and deliveries cross workers."""
import json
import os
import shutil
import signal
import subprocess

import pika
import pytest

from harness import alarm_timeout, wait_until

TEST_TIMEOUT_S = 60
AMQP_GO_CLIENT = os.environ.get("AMQP_GO_CLIENT")
SLUICE_BENCH = os.environ.get("SLUICE_BENCH")
GO_SCENARIOS = ["declare_bind", "exchange_types", "publish_consume_ack", "nack_reject", "nack_multiple",
                "basic_get", "confirms", "mandatory_return", "prefetch", "channel_errors", "heartbeats",
                "close", "tx", "frame_max_4096", "cancel_notify", "exclusive", "recover", "many_channels",
                "exchange_admin",
                # the queue features (clients/amqpgo/features.go)
                "dlx_x_death", "dlx_reject_cycle", "ttl", "max_length", "priority", "delayed_exchange", "headers_exchange"]
WORKERS = 2


@pytest.fixture(autouse=True)
def hard_timeout():
    with alarm_timeout(TEST_TIMEOUT_S):
        yield


@pytest.fixture
def amqp(make_sluiced, request):
    failed_before = request.session.testsfailed
    s = make_sluiced(workers=str(WORKERS), listeners={"amqp": "127.0.0.1:0"}).start()
    yield s
    # The harness leaves every temp dir behind; on a shared machine thousands
    # of them filled the disk. Keep the dir (and its sluiced.log) only when
    # the test failed (its call-phase failure is counted before teardown).
    s.kill()
    if request.session.testsfailed == failed_before:
        shutil.rmtree(s.tmp, ignore_errors=True)


def url(s):
    # Not ".../": rabbitmq-c reads a trailing slash as vhost "".
    return f"amqp://guest:guest@127.0.0.1:{s.port('amqp')}"


def sluiced_tail(s):
    return f"\n--- sluiced log ---\n{s.log_text()[-3000:]}"


# ---- amqp091-go -----------------------------------------------------------


needs_go = pytest.mark.skipif(not AMQP_GO_CLIENT, reason="amqp091-go client not built (no Go or package)")


def go_env(s):
    return dict(os.environ, SLUICE_ADMIN=f"http://127.0.0.1:{s.port('admin')}", SLUICE_WORKERS=str(WORKERS))


def run_go(s, scenario, *args, timeout=TEST_TIMEOUT_S - 10):
    p = subprocess.run([AMQP_GO_CLIENT, url(s), scenario, *args], capture_output=True, text=True,
                       timeout=timeout, env=go_env(s))
    assert p.returncode == 0, f"{scenario}: {p.stdout}{p.stderr}{sluiced_tail(s)}"
    assert p.stdout.strip().endswith(f"ok {scenario}")
    return p.stdout


def workers_used(s):
    return {c["worker"] for c in s.api("/api/v1/connections")["connections"] if c["protocol"] == "amqp"}


@needs_go
@pytest.mark.parametrize("scenario", GO_SCENARIOS)
def test_amqpgo_scenario(amqp, scenario):
    run_go(amqp, scenario)
    # The broker survived and every connection the client opened is gone.
    assert amqp.proc.poll() is None
    wait_until(lambda: amqp.metric_sum("sluice_connections") == 0, what="clients to be gone")


@needs_go
def test_amqpgo_x_death_time_is_wall_clock(amqp):
    run_go(amqp, "dlx_x_death_time")


def test_headers_unbind_with_reordered_arguments(amqp):
    conn, ch = pika_channel(amqp)
    try:
        ch.exchange_declare("hdr.order", "headers")
        ch.queue_declare("hdr.order.q")
        ch.queue_bind("hdr.order.q", "hdr.order", arguments={"x-match": "all", "format": "pdf", "size": 3})
        ch.confirm_delivery()
        pdf = pika.BasicProperties(headers={"format": "pdf", "size": 3})
        # the binding routes before it is removed
        ch.basic_publish("hdr.order", "", b"m", properties=pdf)
        assert ch.queue_declare("hdr.order.q", passive=True).method.message_count == 1
        ch.queue_purge("hdr.order.q")
        ch.queue_unbind("hdr.order.q", "hdr.order", arguments={"size": 3, "format": "pdf", "x-match": "all"})
        ch.basic_publish("hdr.order", "", b"m", properties=pdf)
        assert ch.queue_declare("hdr.order.q", passive=True).method.message_count == 0
    finally:
        conn.close()


@needs_go
def test_amqpgo_places_connections_on_both_workers(amqp):
    """The placement the scenarios rely on: a durable_load run (which stops
    only when the broker goes) holds connections on worker 0 and worker 1."""
    log = os.path.join(amqp.tmp, "placement.log")
    p = subprocess.Popen([AMQP_GO_CLIENT, url(amqp), "durable_load", log], env=go_env(amqp),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: workers_used(amqp) == set(range(WORKERS)), what="connections on every worker")
    finally:
        p.kill()
        p.wait()


def confirmed_in(log):
    try:
        with open(log) as f:
            return sum(1 for line in f if line.startswith("c "))
    except FileNotFoundError:
        return 0


@needs_go
def test_amqpgo_durable_queue_survives_sigkill_under_load(amqp):
    """amqp091-go publishes persistent messages with confirms into a durable
    queue on the other worker while consuming (acking even ids, holding odd
    ones) when sluiced is SIGKILLed. After the restart every confirmed
    message that was not acknowledged is delivered, none twice, and any
    acknowledged one that comes back is marked redelivered."""
    log = os.path.join(amqp.tmp, "durable.log")
    p = subprocess.Popen([AMQP_GO_CLIENT, url(amqp), "durable_load", log], env=go_env(amqp),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: p.poll() is not None or confirmed_in(log) >= 3000, timeout=30,
                   what="3000 confirmed persistent publishes")
        assert p.poll() is None, f"durable_load ended early: {p.communicate()}{sluiced_tail(amqp)}"
        amqp.kill()
        out, err = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 0, f"{out}{err}"
    amqp.start()
    out = run_go(amqp, "durable_verify", log)
    assert "recovered" in out



@needs_go
def test_amqpgo_large_persistent_messages_survive_sigkill(amqp):
    """amqp091-go publishes persistent 5 MiB, 20 MiB and 3 MiB messages with
    confirms into a durable queue on the other worker (stored in pieces),
    acks the first; after SIGKILL the rest come back byte for byte, once."""
    run_go(amqp, "durable_large")
    amqp.kill()
    amqp.start()
    run_go(amqp, "durable_large_verify")


# ---- rabbitmq-c amqp-tools -------------------------------------------------

needs_tools = pytest.mark.skipif(not shutil.which("amqp-consume"), reason="amqp-tools not installed")


def tool(s, *args, check=True, input=None):
    return subprocess.run(list(args) + ["-u", url(s)], check=check, capture_output=True, timeout=10,
                          input=input)


def pika_channel(s):
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=s.port("amqp"), socket_timeout=10, connection_attempts=1))
    return conn, conn.channel()


def consumers_on(s, queue):
    """Consumer count of queue, or None while it does not exist."""
    conn, ch = pika_channel(s)
    try:
        return ch.queue_declare(queue, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404
        return None
    finally:
        conn.close()


@needs_tools
def test_amqp_tools_declare_publish_get_delete(amqp):
    assert tool(amqp, "amqp-declare-queue", "-q", "t1").stdout.strip() == b"t1"
    # A server-named queue: amqp-declare-queue prints the generated name.
    assert tool(amqp, "amqp-declare-queue", "-q", "").stdout.startswith(b"amq.gen-")
    # -l: every stdin line is its own message; -p/-C/-H set properties.
    tool(amqp, "amqp-publish", "-r", "t1", "-l", "-p", "-C", "text/plain", "-H", "k: v",
         input=b"line one\nline two\n")
    conn, ch = pika_channel(amqp)
    try:
        method, props, body = ch.basic_get("t1", auto_ack=False)
        assert body == b"line one\n" and method.message_count == 1
        assert props.delivery_mode == 2 and props.content_type == "text/plain"
        assert props.headers == {"k": "v"}
        ch.basic_reject(method.delivery_tag, requeue=True)
    finally:
        conn.close()
    # The requeued message comes first again, then the second line.
    assert tool(amqp, "amqp-get", "-q", "t1").stdout == b"line one\n"
    assert tool(amqp, "amqp-get", "-q", "t1").stdout == b"line two\n"
    # An empty queue: amqp-get exits non-zero.
    assert tool(amqp, "amqp-get", "-q", "t1", check=False).returncode != 0
    tool(amqp, "amqp-delete-queue", "-q", "t1")
    r = tool(amqp, "amqp-get", "-q", "t1", check=False)
    assert r.returncode != 0 and b"404" in r.stderr + r.stdout


@needs_tools
def test_amqp_tools_durable_round_trip_across_restart(amqp):
    """A durable queue and a persistent message (amqp-publish -p) outlive a
    restart; a transient message and a non-durable queue do not."""
    tool(amqp, "amqp-declare-queue", "-q", "tools.durable", "-d")
    tool(amqp, "amqp-declare-queue", "-q", "tools.transient")
    tool(amqp, "amqp-publish", "-r", "tools.durable", "-p", "-b", "kept")
    tool(amqp, "amqp-publish", "-r", "tools.durable", "-b", "transient")
    tool(amqp, "amqp-publish", "-r", "tools.transient", "-p", "-b", "gone")
    # amqp-publish does not wait for confirms: make sure both are queued
    # before the restart (a graceful one: nothing unconfirmed is at stake).
    conn, ch = pika_channel(amqp)
    try:
        wait_until(lambda: ch.queue_declare("tools.durable", passive=True).method.message_count == 2,
                   what="both messages queued")
    finally:
        conn.close()
    assert amqp.stop() == 0
    amqp.start()
    assert tool(amqp, "amqp-get", "-q", "tools.durable").stdout == b"kept"
    assert tool(amqp, "amqp-get", "-q", "tools.durable", check=False).returncode != 0
    r = tool(amqp, "amqp-get", "-q", "tools.transient", check=False)
    assert r.returncode != 0 and b"404" in r.stderr + r.stdout


@needs_tools
def test_amqp_tools_redeclare_mismatch_is_406(amqp):
    tool(amqp, "amqp-declare-queue", "-q", "dur", "-d")
    r = tool(amqp, "amqp-declare-queue", "-q", "dur", check=False)
    assert r.returncode != 0 and b"406" in r.stderr + r.stdout, r


@needs_tools
def test_amqp_tools_consume_with_prefetch_and_binding(amqp):
    """amqp-consume declares "logs" (auto-delete, as rabbitmq-c does whenever
    -e is given), binds it to a topic exchange, takes messages one at a time
    (-p 1, each acked after the command ran) and stops after -c 3; the queue
    goes with its last consumer."""
    consumer = subprocess.Popen(
        ["amqp-consume", "-u", url(amqp), "-q", "logs", "-e", "amq.topic", "-r", "logs.#", "-p", "1",
         "-c", "3", "--", "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: consumers_on(amqp, "logs") == 1, what="amqp-consume to subscribe")
        for key, body in [("logs.a", b"first|"), ("other", b"unrouted|"), ("logs.b.c", b"second|"),
                          ("logs", b"third|")]:
            tool(amqp, "amqp-publish", "-e", "amq.topic", "-r", key, "-b", body)
        out, err = consumer.communicate(timeout=20)
    finally:
        consumer.kill()
    assert consumer.returncode == 0, err
    assert out == b"first|second|third|"
    wait_until(lambda: consumers_on(amqp, "logs") is None, what="the auto-delete queue to go")


@needs_tools
def test_amqp_tools_consume_redeclare_mismatch_fails(amqp):
    """With -e, amqp-consume declares its queue auto-delete: against an
    existing plain queue that is a 406, as on RabbitMQ."""
    tool(amqp, "amqp-declare-queue", "-q", "plain")
    r = subprocess.run(["amqp-consume", "-u", url(amqp), "-q", "plain", "-e", "amq.topic", "-r", "k",
                        "-c", "1", "--", "cat"], capture_output=True, timeout=10)
    assert r.returncode != 0 and b"406" in r.stderr, r


@needs_tools
def test_amqp_tools_consume_no_ack_exclusive_queue(amqp):
    # rabbitmq-c splits -r at commas and binds nothing for an empty key, so
    # the fanout binding gets a (ignored) non-empty key.
    consumer = subprocess.Popen(
        ["amqp-consume", "-u", url(amqp), "-e", "amq.fanout", "-r", "any", "-x", "-A", "-c", "2", "--",
         "cat"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The exclusive server-named queue is bound once the consumer is up:
        # a mandatory publish to amq.fanout is routed, not returned, from then on.
        conn, ch = pika_channel(amqp)
        try:
            ch.confirm_delivery()

            def routed():
                try:
                    ch.basic_publish("amq.fanout", "", b"probe|", mandatory=True)
                    return True
                except pika.exceptions.UnroutableError:
                    return False

            wait_until(routed, what="amqp-consume's queue to be bound")
            ch.basic_publish("amq.fanout", "", b"payload|", mandatory=True)
        finally:
            conn.close()
        out, err = consumer.communicate(timeout=20)
    finally:
        consumer.kill()
    assert consumer.returncode == 0, err
    assert out == b"probe|payload|"
    assert b"Server provided queue name: amq.gen-" in err


# ---- sluice-bench's AMQP modes ----------------------------------------------


@pytest.mark.skipif(not SLUICE_BENCH, reason="SLUICE_BENCH not set")
@pytest.mark.parametrize("mode,size", [("confirm", 100), ("confirm", 20000), ("consume", 100),
                                       ("consume", 20000), ("pubsub", 100), ("fanout", 100),
                                       ("fanout", 20000)])
def test_sluice_bench_amqp_mode(amqp, mode, size):
    """The benchmark's client completes a counted run with nothing lost, so
    tests/bench/amqp.sh measures a working exchange; it tears down cleanly."""
    count = 3000 if size < 1000 else 300
    p = subprocess.Popen([SLUICE_BENCH, "amqp", mode, "--url", f"127.0.0.1:{amqp.port('amqp')}",
                          "--size", str(size), "--count", str(count), "--duration", "30", "-n", "3",
                          "--inflight", "64", "--prefetch", "16", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=TEST_TIMEOUT_S - 10)
    finally:
        p.kill()
    assert p.returncode == 0, f"{out}{err}{sluiced_tail(amqp)}"
    r = json.loads(out)
    consumers = {"confirm": 0, "fanout": 3}.get(mode, 1)
    assert r["pub_msgs"] == count and r["lost_msgs"] == 0
    assert r["recv_msgs"] == count * consumers
    if mode == "confirm":
        assert 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]
    # Its queues were deleted and its connections closed with close-ok.
    wait_until(lambda: amqp.metric_sum("sluice_connections") == 0, what="bench connections to close")
    conn, ch = pika_channel(amqp)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(f"sluice-bench-{p.pid}-0", passive=True)
        assert e.value.reply_code == 404
    finally:
        conn.close()
