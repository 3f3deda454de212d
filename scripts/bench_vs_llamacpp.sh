#!/usr/bin/env bash
# tessera against llama.cpp on the CPU, same GGUF files, same threads, in one run:
#   - the default model as shipped (Q4_1), and Q8_0 and Q4_K_M made from it by llama-quantize;
#   - llama-bench pp128 / tg128 against tessera generate's prefill of a 128-token prompt and its
#     decode of 128 tokens from an empty context, ROUNDS rounds, the two interleaved (this VM
#     drifts 10-20% between minutes), medians;
#   - llama-server -np 8 against tessera serve, scripts/bench_serve.py: one request at a time,
#     2 requests/s and all at once, 32 requests of 64 output tokens;
#   - resident weights: tessera's share of the file against the GGUF's size.
# llama.cpp comes from scripts/build_llamacpp.sh (built once into build/peers/, ~12 minutes).
# Writes the table to build/bench/vs_llamacpp.md and prints it.
#   scripts/bench_vs_llamacpp.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
THREADS=${THREADS:-$(nproc)}
PEER=$(scripts/build_llamacpp.sh)
T=build/launch/tessera
OUT=build/bench/vs_llamacpp
MODELS=build/peers/models
mkdir -p "$OUT" "$MODELS"
SHIPPED=$(scripts/fetch_model.sh >/dev/null && echo models/SmolLM2-135M-Instruct.Q4_1.gguf)
declare -A GGUF=([Q4_1]=$SHIPPED [Q8_0]=$MODELS/smollm2-q8_0.gguf [Q4_K_M]=$MODELS/smollm2-q4_k_m.gguf)
for f in Q8_0 Q4_K_M; do
  [ -f "${GGUF[$f]}" ] || "$PEER/llama-quantize" --allow-requantize "$SHIPPED" "${GGUF[$f]}" "$f" \
    >"$OUT/quantize-$f.log" 2>&1
done
for f in Q4_1 Q8_0 Q4_K_M; do
  h5=$MODELS/smollm2-${f,,}.h5
  [ "$h5" -nt "${GGUF[$f]}" ] && [ "$h5" -nt "$T" ] || "$T" convert -q -i "${GGUF[$f]}" -o "$h5"
done

# A prompt of about 128 tokens for tessera (llama-bench makes its own of random tokens).
PROMPT=$(python3 - "$T" "$MODELS/smollm2-q4_1.h5" <<'PY'
import json, subprocess, sys
words = ("the old lighthouse stood on a rock at the mouth of the harbour and for more than a "
         "century its keepers climbed the same steps every evening to light the lamp").split()
n = 100
while True:
    text = " ".join(words[i % len(words)] for i in range(n))
    ids = json.loads(subprocess.run([sys.argv[1], "tokenize", "-m", sys.argv[2], "--text", text],
                                    check=True, capture_output=True, text=True).stdout)
    if len(ids) >= 128:
        print(text)
        break
    n += 1
PY
)
llama_bench() {  # file -> "pp tg"
  "$PEER/llama-bench" -m "$1" -p 128 -n 128 -t "$THREADS" -r 2 -o json 2>/dev/null |
    python3 -c 'import json, sys
rows = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in json.load(sys.stdin)}
print(rows["pp"], rows["tg"])'
}
rate() { sed -n "s/^$1: .*(\([0-9.]*\) tokens\/s)/\1/p"; }  # prefill|decode: tokens/s
tessera_bench() {  # file -> "prefill decode": as llama-bench does, the prompt of 128 tokens
  # alone, then 128 tokens generated from an empty context (a one-word prompt)
  echo "$(OMP_NUM_THREADS=$THREADS "$T" generate -m "$1" --prompt "$PROMPT" --max-tokens 1 \
            --stats-interval 0 2>&1 >/dev/null | rate prefill)" \
       "$(OMP_NUM_THREADS=$THREADS "$T" generate -m "$1" --prompt "The" --max-tokens 128 \
            --ignore-eos --stats-interval 0 2>&1 >/dev/null | rate decode)"
}

: >"$OUT/speed.txt"
for r in $(seq 1 "$ROUNDS"); do
  for f in Q4_1 Q8_0 Q4_K_M; do
    h5=$MODELS/smollm2-${f,,}.h5
    if [ $((r % 2)) -eq 1 ]; then
      l=$(llama_bench "${GGUF[$f]}"); t=$(tessera_bench "$h5")
    else
      t=$(tessera_bench "$h5"); l=$(llama_bench "${GGUF[$f]}")
    fi
    echo "$f $l $t" | tee -a "$OUT/speed.txt" >&2
  done
done

wait_health() {  # url: until GET /health answers 200 (two minutes at most)
  python3 - "$1" <<'PY'
import sys, time, urllib.request
for _ in range(600):
    try:
        if urllib.request.urlopen(sys.argv[1] + "/health", timeout=2).status == 200:
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.2)
sys.exit(f"the server at {sys.argv[1]} never became ready")
PY
}
serve_bench() {  # name file url -> bench_serve.py json
  python3 scripts/bench_serve.py --url "$3" --model smollm2 --rates 2,inf --requests 32 \
    --max-tokens 64 --json "$OUT/serve-$1.json" >"$OUT/serve-$1.md"
}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for f in Q4_1 Q8_0 Q4_K_M; do
  h5=$MODELS/smollm2-${f,,}.h5
  "$PEER/llama-server" -m "${GGUF[$f]}" -np 8 -t "$THREADS" -c 8192 --port 18180 \
    >"$OUT/llama-server-$f.log" 2>&1 &
  pid=$!
  wait_health http://127.0.0.1:18180 && serve_bench "llama-$f" "${GGUF[$f]}" http://127.0.0.1:18180
  kill $pid; wait $pid 2>/dev/null || true
  OMP_NUM_THREADS=$THREADS "$T" serve -m "$h5" --port 18181 --served-model-name smollm2 \
    --stats-interval 0 >"$OUT/tessera-serve-$f.log" 2>&1 &
  pid=$!
  wait_health http://127.0.0.1:18181 && serve_bench "tessera-$f" "$h5" http://127.0.0.1:18181
  kill $pid; wait $pid 2>/dev/null || true
done

# Resident weights: what tessera says its rank holds, against the GGUF.
for f in Q4_1 Q8_0 Q4_K_M; do
  mb=$(OMP_NUM_THREADS=$THREADS "$T" generate -m "$MODELS/smollm2-${f,,}.h5" --prompt hi \
       --max-tokens 1 2>&1 >/dev/null | sed -n 's/.*, \([0-9.]*\) MB of weights,.*/\1/p')
  echo "$f $mb $(stat -c %s "${GGUF[$f]}")"
done >"$OUT/memory.txt"

python3 - "$OUT" "$THREADS" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
  "$(nproc)" "$ROUNDS" <<'PY' | tee build/bench/vs_llamacpp.md
import json, statistics, sys
out, threads, cpu, cores, rounds = sys.argv[1:]
speed = {}
for line in open(f"{out}/speed.txt"):
    f, *v = line.split()
    speed.setdefault(f, []).append([float(x) for x in v])
med = lambda f, i: statistics.median(r[i] for r in speed[f])
print(f"Machine: {cores} cores ({cpu}), {threads} threads each; llama.cpp from llama-cpp-python "
      f"0.3.36's vendored source; medians of {rounds} interleaved rounds.\n")
print("| format | figure | llama.cpp | tessera | tessera / llama.cpp |\n|---|---|---|---|---|")
for f in ["Q4_1", "Q8_0", "Q4_K_M"]:
    for name, li, ti in (("prefill (pp128), tok/s", 0, 2), ("decode (tg128), tok/s", 1, 3)):
        l, t = med(f, li), med(f, ti)
        print(f"| {f} | {name} | {l:.1f} | {t:.1f} | {t / l:.2f}x |")
    rows = {}
    for who in ("llama", "tessera"):
        rows[who] = {r["rate"]: r for r in json.load(open(f"{out}/serve-{who}-{f}.json"))}
    for rate, name in ((0.0, "serve, one at a time, TPOT ms"), (2.0, "serve, 2 requests/s, output tok/s"),
                       (float("inf"), "serve, 32 at once, output tok/s")):
        l, t = rows["llama"][rate], rows["tessera"][rate]
        if rate == 0.0:
            print(f"| {f} | {name} | {1e3 * l['tpot_mean']:.1f} | {1e3 * t['tpot_mean']:.1f} | "
                  f"{l['tpot_mean'] / t['tpot_mean']:.2f}x faster |")
        else:
            print(f"| {f} | {name} | {l['throughput']:.1f} | {t['throughput']:.1f} | "
                  f"{t['throughput'] / l['throughput']:.2f}x |")
for line in open(f"{out}/memory.txt"):
    f, mb, size = line.split()
    print(f"| {f} | resident weights (tessera) / GGUF file, MB | {int(size) / 1e6:.1f} | {float(mb):.1f} | "
          f"{float(mb) * 1e6 / int(size):.2f}x |")
PY
