#!/usr/bin/env python3
"""Reads a timeline written by `tessera generate --trace` and prints, for the span from the first
step's start to the last step's end, the share of time during which 0, 1, 2, ... ranks were
computing a step at once. Usage: trace_overlap.py TRACE.json"""
import json
import sys


def main(path):
    events = [e for e in json.load(open(path))["traceEvents"] if e.get("ph") == "X"]
    if not events:
        sys.exit(f"{path}: no steps in the timeline")
    edges = []
    for e in events:
        edges.append((e["ts"], 1))
        edges.append((e["ts"] + e["dur"], -1))
    edges.sort()
    start, end = edges[0][0], edges[-1][0]
    share = {}
    busy, last = 0, start
    for t, d in edges:
        share[busy] = share.get(busy, 0.0) + (t - last)
        busy, last = busy + d, t
    total = end - start
    ranks = len({e["pid"] for e in events})
    parts = [f"{k} busy {100 * share.get(k, 0) / total:.1f}%" for k in range(ranks + 1)]
    print(f"{total / 1e6:.2f} s, {ranks} ranks: " + ", ".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])
