#!/usr/bin/env python3
"""A learning Ethernet switch in user space between the test hosts of scripts/netns_cluster.sh,
for what this machine's kernel cannot do with tc (netem): a delay and a loss rate on a host's
link. It runs in the cluster's bridge namespace in place of the bridge (netns_cluster.sh impair),
reads every frame from the hosts' ports (AF_PACKET), and sends it on to the port its destination
was last seen on (or every other port) after the delays of the two links it crosses, dropping it
with their loss rates. The hosts' offloads must be off (ethtool -K ... tx off tso off gso off gro
off): a frame is forwarded as read, so its checksums must be complete and its size one MTU.

  netns_switch.py --port h1 --port h2:5ms:5 ...    (PORT[:DELAY[:LOSS%]]; runs until killed)
"""
import argparse
import heapq
import random
import select
import socket
import sys
import time

ETH_P_ALL = 3


def seconds(text):
    for unit, scale in (("us", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(f"a delay is a number with us, ms or s, not '{text}'")


def parse_port(text):
    parts = text.split(":")
    delay = seconds(parts[1]) if len(parts) > 1 and parts[1] else 0.0
    loss = float(parts[2]) / 100 if len(parts) > 2 and parts[2] else 0.0
    if not (0 <= loss < 1 and delay >= 0):
        raise ValueError(f"port '{text}': a delay >= 0 and a loss in [0, 100)%")
    return parts[0], delay, loss


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", action="append", required=True, help="PORT[:DELAY[:LOSS%%]]")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    ports = [parse_port(p) for p in a.port]
    rng = random.Random(a.seed)
    socks = []
    for name, _, _ in ports:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((name, 0))
        s.setblocking(False)
        socks.append(s)
    print("ready", flush=True)  # (netns_cluster.sh impair waits for this)
    where = {}  # MAC -> the port it was last seen on
    queue = []  # (when, order, port, frame)
    order = 0
    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else None
        ready, _, _ = select.select(socks, [], [], timeout)
        now = time.monotonic()
        for p, s in enumerate(socks):
            if s not in ready:
                continue
            while True:
                try:
                    frame, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                except OSError:  # (a port set down: the others go on)
                    break
                if addr[0] != ports[p][0] or addr[2] == socket.PACKET_OUTGOING or len(frame) < 14:
                    continue  # (what this switch sent itself, or read before bind)
                where[frame[6:12]] = p
                dst = where.get(frame[0:6])
                if dst == p:
                    continue  # (for a host on the port it came from)
                outs = [dst] if dst is not None else [q for q in range(len(socks)) if q != p]
                for q in outs:
                    keep = (1 - ports[p][2]) * (1 - ports[q][2])
                    if rng.random() >= keep:
                        continue
                    heapq.heappush(queue, (now + ports[p][1] + ports[q][1], order, q, frame))
                    order += 1
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, q, frame = heapq.heappop(queue)
            try:
                socks[q].send(frame)
            except OSError as e:  # (a full queue drops the frame, as a switch would)
                print(f"netns_switch.py: {ports[q][0]}: {e}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
