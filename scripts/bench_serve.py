#!/usr/bin/env python3
"""Measures a running OpenAI-compatible server (tessera serve, or any other): time to first
token (TTFT), time per output token after it (TPOT), latency and throughput at several request
rates (Poisson arrivals, fixed seed), every request streamed with a fixed number of output
tokens. The first row is one request at a time: the denominator the loaded rows compare with.
Standard library only.

  scripts/bench_serve.py --url http://127.0.0.1:8000 --model smollm2-135m-instruct \\
      --rates 0.5,1,2,inf --requests 32 --max-tokens 64
"""
import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.parse

WORDS = ("the quick brown fox jumps over a lazy dog while seven tired engineers measure how "
         "long a distributed server takes to answer every question they send it").split()


def prompt(rng, words):
    return " ".join(rng.choice(WORDS) for _ in range(words))


def one_request(url, model, text, max_tokens, api_key):
    """Streams one completion; returns (ttft, tpot, latency, output tokens) or an error."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    body = {"model": model, "prompt": text, "max_tokens": max_tokens, "stream": True,
            "ignore_eos": True, "temperature": 0, "stream_options": {"include_usage": True}}
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    start = time.perf_counter()
    conn.request("POST", u.path.rstrip("/") + "/v1/completions", json.dumps(body), headers)
    r = conn.getresponse()
    if r.status != 200:
        return {"error": f"HTTP {r.status}: {r.read()[:200]!r}"}
    first = last = None
    tokens = 0
    while True:
        line = r.readline()
        if not line:
            break
        if not line.startswith(b"data: "):
            continue
        if line.strip() == b"data: [DONE]":
            break
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        if chunk.get("choices") and chunk["choices"][0].get("text"):
            now = time.perf_counter()
            first = first or now
            last = now
    end = time.perf_counter()
    conn.close()
    if first is None:
        return {"error": "no text came back"}
    return {"ttft": first - start, "tpot": (last - first) / max(tokens - 1, 1),
            "latency": end - start, "tokens": tokens, "start": start, "end": end}


def run_at_rate(args, rate, rng):
    """rate requests/s (inf: all at once; 0: one at a time). Returns the row of the table."""
    results = [None] * args.requests
    texts = [prompt(rng, rng.randint(args.min_words, args.max_words))
             for _ in range(args.requests)]

    def go(i):
        try:
            results[i] = one_request(args.url, args.model, texts[i], args.max_tokens, args.api_key)
        except OSError as e:
            results[i] = {"error": str(e)}

    if rate == 0:
        for i in range(args.requests):
            go(i)
    else:
        threads = []
        for i in range(args.requests):
            t = threading.Thread(target=go, args=(i,))
            t.start()
            threads.append(t)
            if rate != float("inf"):
                time.sleep(rng.expovariate(rate))
        for t in threads:
            t.join()
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    if not ok:
        return {"rate": rate, "errors": errors}
    wall = max(r["end"] for r in ok) - min(r["start"] for r in ok)

    def stat(key, q):
        v = sorted(r[key] for r in ok)
        return v[min(len(v) - 1, int(q * len(v)))]

    return {"rate": rate, "ok": len(ok), "errors": errors,
            "throughput": sum(r["tokens"] for r in ok) / wall, "requests_per_s": len(ok) / wall,
            "ttft_mean": statistics.mean(r["ttft"] for r in ok), "ttft_p50": stat("ttft", 0.5),
            "ttft_p99": stat("ttft", 0.99),
            "tpot_mean": statistics.mean(r["tpot"] for r in ok), "tpot_p50": stat("tpot", 0.5),
            "tpot_p99": stat("tpot", 0.99), "latency_mean": statistics.mean(
                r["latency"] for r in ok)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="the served model's name")
    p.add_argument("--api-key", default="")
    p.add_argument("--rates", default="0.5,1,2,inf",
                   help="request rates per second, comma-separated (inf: all at once)")
    p.add_argument("--requests", type=int, default=32, help="requests at each rate")
    p.add_argument("--max-tokens", type=int, default=64, help="output tokens of every request")
    p.add_argument("--min-words", type=int, default=8)
    p.add_argument("--max-words", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    rows = []
    rng = random.Random(args.seed)
    for rate in [0.0] + [float(r) for r in args.rates.split(",")]:
        row = run_at_rate(args, rate, rng)
        rows.append(row)
        if "ok" not in row:
            print(f"rate {rate}: every request failed: {row['errors'][:3]}", file=sys.stderr)
            return 1
    print("| request rate | requests | output tokens/s | requests/s | TTFT mean / p50 / p99 (ms) "
          "| TPOT mean / p50 / p99 (ms) | latency mean (s) | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        name = "one at a time" if r["rate"] == 0 else (
            "all at once" if r["rate"] == float("inf") else f"{r['rate']:g}/s")
        print(f"| {name} | {r['ok']} | {r['throughput']:.1f} | {r['requests_per_s']:.2f} | "
              f"{1e3 * r['ttft_mean']:.0f} / {1e3 * r['ttft_p50']:.0f} / {1e3 * r['ttft_p99']:.0f} "
              f"| {1e3 * r['tpot_mean']:.1f} / {1e3 * r['tpot_p50']:.1f} / "
              f"{1e3 * r['tpot_p99']:.1f} | {r['latency_mean']:.2f} | {len(r['errors'])} |")
    base = rows[0]
    best = max(rows, key=lambda r: r["throughput"])
    print(f"\nthroughput under load / one at a time: {best['throughput'] / base['throughput']:.2f}x",
          end="")
    if base["tpot_mean"] > 0:  # (0 when each answer came in one chunk)
        print(f"; TPOT at the busiest rate / alone: {rows[-1]['tpot_mean'] / base['tpot_mean']:.2f}x",
              end="")
    print()
    for r in rows:
        for e in r["errors"][:3]:
            print(f"error at rate {r['rate']:g}: {e}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
