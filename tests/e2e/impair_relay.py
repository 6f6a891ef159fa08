"""A two-port Ethernet relay that impairs each direction on its own: loss,
reordering and delay (with jitter), as netem on both sides of a link would
(this kernel has no sch_netem). It runs in its own network namespace
between two veth pairs, one towards the client, one towards sluiced's
af_packet port, so the impairment is independent of the code under test
and reaches sluiced's transmit path as well as its receive path.

    impair_relay.py IFACE_A IFACE_B LOSS_PER_MILLE REORDER_PER_MILLE DELAY_US JITTER_US SEED

prints "ready" once both packet sockets are bound, relays until SIGTERM,
then prints one line per direction: frames in, dropped, reordered, out."""
import collections
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
HOLD_MAX = 0.005  # a frame held for reordering goes after the next one, or after this


class Direction:
    """Frames from one port to the other: loss, then a FIFO of due times
    (jitter varies the delay but never the order, as netem's delay), then
    one-frame reordering (a frame waits until the next has gone)."""

    def __init__(self, name, out, rng, loss, reorder, delay, jitter):
        self.name, self.out, self.rng = name, out, rng
        self.loss, self.reorder, self.delay, self.jitter = loss, reorder, delay, jitter
        self.fifo = collections.deque()
        self.last_due = 0.0
        self.held = None
        self.held_until = 0.0
        self.frames_in = self.dropped = self.reordered = self.frames_out = 0

    def arrive(self, frame, now):
        self.frames_in += 1
        if self.rng.random() * 1000 < self.loss:
            self.dropped += 1
            return
        due = now + self.delay + self.rng.random() * self.jitter
        due = max(due, self.last_due)
        self.last_due = due
        self.fifo.append((due, frame))

    def send(self, frame):
        try:
            self.out.send(frame)
            self.frames_out += 1
        except OSError:
            self.dropped += 1  # a full socket buffer drops, as a link would

    def release(self, now):
        while self.fifo and self.fifo[0][0] <= now:
            frame = self.fifo.popleft()[1]
            if self.held is None and self.rng.random() * 1000 < self.reorder:
                self.held = frame
                self.held_until = now + HOLD_MAX
                self.reordered += 1
                continue
            self.send(frame)
            if self.held is not None:
                self.send(self.held)
                self.held = None
        if self.held is not None and now >= self.held_until:
            self.send(self.held)  # nothing followed soon: no reason to wait longer
            self.held = None

    def next_due(self):
        dues = ([self.fifo[0][0]] if self.fifo else []) + \
            ([self.held_until] if self.held is not None else [])
        return min(dues) if dues else None


def packet_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    s.bind((iface, 0))
    s.setblocking(False)
    return s


def main():
    a, b = sys.argv[1], sys.argv[2]
    loss, reorder = int(sys.argv[3]), int(sys.argv[4])
    delay, jitter = int(sys.argv[5]) / 1e6, int(sys.argv[6]) / 1e6
    seed = int(sys.argv[7])
    sa, sb = packet_socket(a), packet_socket(b)
    dirs = {sa.fileno(): (sa, Direction(f"{a}->{b}", sb, random.Random(seed), loss, reorder,
                                        delay, jitter)),
            sb.fileno(): (sb, Direction(f"{b}->{a}", sa, random.Random(seed + 1), loss, reorder,
                                        delay, jitter))}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    print("ready", flush=True)
    poller = select.poll()
    for fd in dirs:
        poller.register(fd, select.POLLIN)
    while not stop:
        now = time.monotonic()
        dues = [d.next_due() for _, d in dirs.values() if d.next_due() is not None]
        timeout_ms = 100 if not dues else max(0, (min(dues) - now) * 1000)
        try:
            events = poller.poll(timeout_ms)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in events:
            sock, d = dirs[fd]
            for _ in range(256):
                try:
                    frame, addr = sock.recvfrom(65535)
                except BlockingIOError:
                    break
                if addr[2] == socket.PACKET_OUTGOING:
                    continue  # our own send on this port, seen again
                d.arrive(frame, now)
        for _, d in dirs.values():
            d.release(now)
    for _, d in dirs.values():
        print(f"{d.name} in {d.frames_in} dropped {d.dropped} reordered {d.reordered} "
              f"out {d.frames_out}", flush=True)


if __name__ == "__main__":
    main()
