"""NATS with the real clients: nats.c (libnats) and nats.go, each scenario
on every backend, with connections placed on both workers."""
import os
import subprocess

import pytest

from harness import Sluiced, wait_until

CLIENTS = {k: v for k, v in {"c": os.environ.get("NATS_C_CLIENT"),
                             "go": os.environ.get("NATS_GO_CLIENT")}.items() if v}
SCENARIOS = ["pubsub", "wildcards", "queue_groups", "request_reply", "no_responders", "headers",
             "flush_rounds"]


@pytest.fixture(params=sorted(CLIENTS))
def client(request):
    return CLIENTS[request.param]


def run_client(client, s, scenario, timeout=120):
    url = f"nats://127.0.0.1:{s.port('nats')}"
    p = subprocess.run([client, url, "2", scenario], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{scenario}: {p.stdout}{p.stderr}\n--- sluiced log ---\n{s.log_text()[-3000:]}"
    assert p.stdout.strip().endswith(f"ok {scenario}")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_client_scenario(make_sluiced, client, scenario):
    s = make_sluiced().start()
    run_client(client, s, scenario)
    # The broker is still healthy and nothing leaked on the connections.
    assert s.proc.poll() is None
    wait_until(lambda: s.metric_sum("sluice_connections") == 0, what="clients to be gone")


def test_client_ids_match_admin_api_workers(make_sluiced):
    """The clients locate connections by client_id % workers; the admin API
    must agree."""
    import socket
    import json
    s = make_sluiced().start()
    socks = []
    for _ in range(8):
        c = s.connect("nats")
        info = json.loads(c.makefile("rb").readline()[5:])
        socks.append((c, info["client_id"]))
    conns = {c["id"]: c["worker"] for c in s.api("/api/v1/connections")["connections"]}
    for _, cid in socks:
        assert conns[cid] == cid % 2


def test_client_reconnects_after_broker_restart(client, tmp_path):
    first = Sluiced(backend="uring").start()
    port = first.port("nats")
    url = f"nats://127.0.0.1:{port}"
    p = subprocess.Popen([client, url, "2", "reconnect"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        assert first.stop() == 0
        second = Sluiced(backend="uring", data_dir=first.data_dir,
                         listeners={"nats": f"127.0.0.1:{port}"}).start()
        p.stdin.write("go\n")
        p.stdin.flush()
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, out + err
        assert "ok reconnect" in out
        second.stop()
    finally:
        if p.poll() is None:
            p.kill()
        first.kill()
