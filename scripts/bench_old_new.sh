#!/usr/bin/env bash
# One tessera binary against another on this machine, run interleaved (this VM's speed drifts
# 10-20% between minutes), each figure the median of ROUNDS runs of each binary:
#   scripts/bench_old_new.sh OLD_TESSERA [NEW_TESSERA] [ROUNDS]
# - prefill and decode tokens/s of one prompt (bench_generate.sh's 150-token prompt, 128 tokens);
# - continuous batching: tessera bench --mode continuous on 32 mixed requests, output tokens/s;
# - pipeline decode: PP=2 (one rank per core), 8 chat requests of 48 tokens, generated tokens/s;
# - pipeline prefill: PP=2 with the default chunks, a 361-token prompt, prefill tokens/s.
# The default model (scripts/fetch_model.sh). Prints a table with new / old for each figure.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: scripts/bench_old_new.sh OLD_TESSERA [NEW_TESSERA] [ROUNDS]}
NEW=${2:-build/launch/tessera}
ROUNDS=${3:-3}
MODEL=models/smollm2-135m-instruct.h5
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
OUT=build/bench/old_new
mkdir -p "$OUT"
ROMAN="The Roman Empire was the post-Republican state of ancient Rome. It is generally understood to mean the period and territory ruled by the Romans following Octavian's assumption of sole rule under the Principate in 27 BC. It included territory in Europe, North Africa, and Western Asia, and was ruled by emperors. The fall of the Western Roman Empire in 476 AD conventionally marks the end of classical antiquity and the beginning of the Middle Ages. Rome had expanded its rule to most of the Mediterranean and beyond, and became one of the largest empires in the ancient world. Summarise this history in a few sentences:"
LONG=$(for i in $(seq 1 40); do printf 'The Roman Empire ruled the Mediterranean for centuries. '; done)
python3 scripts/chat_requests.py "$OUT/requests.jsonl"
tokens_per_s() { sed -n "s/^$1: .*(\([0-9.]*\) tokens\/s)/\1/p"; }
measure() {  # binary -> "prefill decode batching pp_decode pp_prefill"
  local t=$1 gen bench pp ppf
  gen=$(OMP_NUM_THREADS=2 "$t" generate --model "$MODEL" --prompt "$ROMAN" --max-tokens 128 \
        --ignore-eos 2>&1 >/dev/null)
  bench=$(OMP_NUM_THREADS=2 "$t" bench --model "$MODEL" --mode continuous --requests 32 \
          --stats-interval 0 2>/dev/null | sed -n 's/^| continuous batching | [0-9.]* s | \([0-9.]*\) .*/\1/p')
  pp=$(OMP_NUM_THREADS=1 mpirun --bind-to core -np 2 "$t" generate --model "$MODEL" --pp 2 \
       --input "$OUT/requests.jsonl" --output "$OUT/out.jsonl" --overwrite --stats-interval 0 \
       2>&1 >/dev/null | tokens_per_s generated)
  ppf=$(OMP_NUM_THREADS=1 mpirun --bind-to core -np 2 "$t" generate --model "$MODEL" --pp 2 \
        --prompt "$LONG" --max-tokens 1 2>&1 >/dev/null | tokens_per_s prefill)
  local prefill decode
  prefill=$(echo "$gen" | tokens_per_s prefill)
  decode=$(echo "$gen" | tokens_per_s decode)
  for v in "$prefill" "$decode" "$bench" "$pp" "$ppf"; do  # (a figure not found stops the run)
    [ -n "$v" ] || { echo "$t: a figure was not found in its output" >&2; exit 1; }
  done
  echo "$prefill $decode $bench $pp $ppf"
}
: > "$OUT/old.txt"
: > "$OUT/new.txt"
for r in $(seq 1 "$ROUNDS"); do  # alternating which goes first
  if [ $((r % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
  for which in $order; do
    bin=$OLD
    [ "$which" = new ] && bin=$NEW
    line=$(measure "$bin")
    echo "round $r $which: $line" >&2
    echo "$line" >> "$OUT/$which.txt"
  done
done
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $ROUNDS rounds"
python3 - "$OUT/old.txt" "$OUT/new.txt" <<'PY'
import statistics, sys
names = ["prefill, one prompt (tokens/s)", "decode, one prompt (tokens/s)",
         "continuous batching, 32 requests (output tokens/s)", "PP=2 decode, 8 requests (tokens/s)",
         "PP=2 prefill, 361 tokens (tokens/s)"]
rows = [[list(map(float, l.split())) for l in open(p) if l.strip()] for p in sys.argv[1:3]]
print("| figure | old | new | new / old |\n|---|---|---|---|")
for i, n in enumerate(names):
    o = statistics.median(r[i] for r in rows[0])
    w = statistics.median(r[i] for r in rows[1])
    print(f"| {n} | {o:.1f} | {w:.1f} | {w / o:.3f} |")
PY
