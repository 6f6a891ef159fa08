#!/usr/bin/python3
"""Turns tests/bench/amqp.sh's JSON lines into the `## AMQP` section of
tests/bench/RESULTS.md, replacing only that section (up to the next `## `).
The hand-written analysis in bench_amqp_analysis.md is appended verbatim."""
import json
import os
import sys

CONFIGS = {
    "one": "1 core each: the broker (every thread; the Erlang VM then runs one scheduler, "
           "sluiced one worker) pinned to CPU 0, sluice-bench pinned to CPU 1",
    "two": "nothing pinned: both brokers as installed (RabbitMQ one scheduler per vCPU, sluiced "
           "one worker per vCPU, so 2 each), sluice-bench on the same 2 vCPUs",
}
MODE_TEXT = {
    "confirm": "persistent publish, confirms",
    "consume": "consume, manual acks",
    "pubsub": "transient pub -> consume",
    "fanout": "fan-out 1 -> N queues",
}


def size_text(n):
    return f"{n // 1024} KiB" if n >= 1024 else f"{n} B"


def num(x):
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    return f"{x:.0f}"


def us(x):
    return f"{x / 1000:.1f} ms" if x >= 10000 else f"{x:.0f} us"


def better(a, b):
    """Best of repeated runs: other work on the machine only slows a run down."""
    if a is None or a.get("failed"):
        return b
    if b.get("failed"):
        return a
    return b if b["msgs_per_s"] > a["msgs_per_s"] else a


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            k = (r.get("cfg", "one"), r["mode"], r["size"], r["broker"])
            rows[k] = better(rows.get(k), r)
    return rows


def cell(r):
    return "failed" if r is None or r.get("failed") else num(r["msgs_per_s"])


def ratio(s, q, key="msgs_per_s"):
    if not s or not q or s.get("failed") or q.get("failed") or not q.get(key):
        return "-"
    return f"{s[key] / q[key]:.2f}"


def per_cpu(r):
    if not r or r.get("failed") or not r.get("broker_cpu_s"):
        return 0
    return (r["recv_msgs"] or r["pub_msgs"]) / r["broker_cpu_s"]


def table(rows, cfg, modes, sizes):
    out = ["| workload | size | sluiced msgs/s | RabbitMQ msgs/s | ratio | sluiced msgs per broker "
           "CPU-s | RabbitMQ msgs per broker CPU-s | confirm p50 sluiced / RabbitMQ | confirm p99 "
           "sluiced / RabbitMQ | p99 ratio |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for m in modes:
        for sz in sizes:
            s, q = rows.get((cfg, m, sz, "sluiced")), rows.get((cfg, m, sz, "rabbitmq"))
            if s is None and q is None:
                continue
            lat = ["", "", ""]
            if m == "confirm" and s and q and not s.get("failed") and not q.get("failed"):
                lat = [f"{us(s['p50_us'])} / {us(q['p50_us'])}",
                       f"{us(s['p99_us'])} / {us(q['p99_us'])}",
                       f"{s['p99_us'] / q['p99_us']:.2f}" if q["p99_us"] else "-"]
            pc_s, pc_q = per_cpu(s), per_cpu(q)
            out.append(f"| {MODE_TEXT.get(m, m)} | {size_text(sz)} | {cell(s)} | {cell(q)} | "
                       f"{ratio(s, q)} | {num(pc_s) if pc_s else '-'} | {num(pc_q) if pc_q else '-'} | "
                       + " | ".join(lat) + " |")
    return out


def section(rows):
    env = os.environ.get
    cfgs = [c for c in CONFIGS if any(k[0] == c for k in rows)]
    modes = [m for m in ["confirm", "consume", "pubsub", "fanout"] if any(k[1] == m for k in rows)]
    sizes = sorted({k[2] for k in rows})
    lost = [f"{k[0]}: {k[3]} {k[1]} {size_text(k[2])}" for k, r in sorted(rows.items())
            if r.get("failed") or r.get("lost_msgs")]
    out = ["## AMQP", "",
           f"Issue 7, `tools/sluice-bench` AMQP modes against sluiced and rabbitmq-server "
           f"{env('RABBITMQ_VERSION', '?')} on the same machine in one run. Measured "
           f"{env('STARTED', '?')} at commit {env('COMMIT', '?')}; {env('NCPU', '?')} vCPUs, "
           f"kernel {env('KERNEL', '?')}, load average after the run {env('LOAD', '?')} "
           f"(the machine is shared with other builds: treat ratios as indicative).", "",
           "```", env("CMD", "tests/bench/amqp.sh"), "```", "",
           "How the runs are set up:",
           "- **sluiced runs at its defaults**: one worker per CPU it may run on (2 in the "
           "unpinned layout, 1 when pinned to CPU 0), queues on any worker (a publish crosses "
           "to the queue's worker when they differ), data dir on the root disk (ext4).",
           "- **Both brokers persist**: sluiced appends each persistent message to its durable "
           "queue's log and confirms it only after the group-committed fdatasync that covers "
           "it; RabbitMQ fsyncs persistent messages in durable queues before confirming them.",
           "- RabbitMQ runs as root under a temp dir on the root disk (ext4), default "
           "settings, classic queues. Each CPU layout below starts both brokers afresh.",
           f"- Each row is the best of {env('REPEAT', '?')} runs of {env('SECS', '?')} s "
           "(a run also ends when every confirm or delivery has arrived, so it may be longer).",
           f"- persistent publish, confirms: delivery mode 2 into a durable queue nobody "
           f"consumes, at most {env('INFLIGHT', '?')} unconfirmed, at most "
           f"{int(env('MAX_BYTES', '0')) >> 20} MiB per run; msgs/s counts confirmed messages; "
           "latency is from the write() that sent a message to the confirm that covered it "
           "(both brokers coalesce confirms with multiple=1).",
           f"- consume, manual acks: one publisher, one consumer with prefetch "
           f"{env('PREFETCH', '?')} acking with one basic.ack multiple=1 per read; transient "
           "messages. transient pub -> consume: the same with a no-ack consumer. fan-out: a "
           f"fanout exchange bound to {env('FANOUT', '?')} queues, one no-ack consumer each; "
           "msgs/s counts deliveries (all consumers together). The publisher stays at most "
           "8 MiB ahead of the slowest consumer.",
           "- ratio is sluiced / RabbitMQ throughput; p99 ratio is sluiced p99 / RabbitMQ p99 "
           "(the target is 0.5 or less at 10x throughput on the persistent row, and ahead "
           "(ratio > 1) on every other row).",
           "- Runs that lost messages or failed: " + (", ".join(lost) if lost else "none") + ".",
           ""]
    for cfg in cfgs:
        out += [f"### {CONFIGS[cfg]}", ""] + table(rows, cfg, modes, sizes) + [""]
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_amqp_analysis.md")
    if os.path.exists(analysis):
        out += [open(analysis).read().rstrip(), ""]
    return "\n".join(out) + "\n"


def replace_section(path, text):
    old = open(path).read() if os.path.exists(path) else "# Benchmark results\n\n"
    lines = old.splitlines(keepends=True)
    start = next((i for i, l in enumerate(lines) if l.rstrip() == "## AMQP"), None)
    if start is None:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")),
                   len(lines))
        tail = "".join(lines[end:])
        new = "".join(lines[:start]) + text + ("\n" + tail if tail else "")
    with open(path, "w") as f:
        f.write(new)


if __name__ == "__main__":
    replace_section(sys.argv[2], section(load(sys.argv[1])))
