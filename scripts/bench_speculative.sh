#!/usr/bin/env bash
# Speculative decoding against decoding without it, on this machine, medians of interleaved runs
# (greedy: every pair's texts are also compared, and must be equal):
#   1. copy-heavy, single stream: the default model rewrites a given passage; --speculative ngram
#      against off (decode tokens/s).
#   2. chat, single stream: the default model's weights as an f16 target, its own q4_0 copy as
#      the draft (scripts/fetch_model.sh f16 / q4_0), and its own q8_0 copy (fetch_model.sh
#      q8_0); --speculative draft against off.
#   3. 32 requests at once (tessera bench, uniform 64 + 64 tokens): output tokens/s with
#      --speculative ngram (default --speculative-max-batch) against off.
# With PEER=1, row 1 also runs the CPU peer on the same GGUF weights, in the same rounds:
# llama.cpp's llama-server (scripts/build_llamacpp.sh; ~12 minutes to build once) with 2 threads,
# without speculation and with its prompt lookup (--spec-type ngram-simple, lookup n-gram 3,
# drafts of up to 16 tokens: its best of the settings tried here; its defaults, 12 and 48, found
# fewer matches), decode tokens/s from its own timings.
# Usage: [PEER=1] scripts/bench_speculative.sh [runs=3]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
T=build/launch/tessera
TARGET=$(scripts/fetch_model.sh)
F16=$(scripts/fetch_model.sh f16)
DRAFT=$(scripts/fetch_model.sh q4_0)
DRAFT8=$(scripts/fetch_model.sh q8_0)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

PASSAGE="The city library opened its new reading room on Monday. The room has tall windows, long oak tables and quiet lamps for every seat. Students come in the morning to study, and older readers come in the afternoon to read newspapers and magazines. The librarians say that the number of visitors has doubled since the room opened. On weekends the library runs a story hour for children, and volunteers help adults who want to learn to use computers. The city plans to open two more reading rooms next year, one in the north district and one near the harbour."
COPY="Rewrite the following passage exactly, word for word:

$PASSAGE

Rewritten passage:"
CHATS=("Write a short story about a robot who learns to paint."
       "Explain how a refrigerator keeps food cold."
       "What are three tips for learning a new language?")

# decode tokens/s of one generate run; its text in $TMP/$2.txt; its speculation line appended to
# $TMP/$2.spec
run_generate() {
  local model=$1 name=$2; shift 2
  "$T" generate -m "$model" --max-tokens 128 --stats-interval 0 "$@" 2>"$TMP/err" >"$TMP/$name.txt"
  grep -E '^speculative decoding' "$TMP/err" >>"$TMP/$name.spec" || true
  sed -nE 's/^decode: .*\(([0-9.]+) tokens\/s\)/\1/p' "$TMP/err"
}
# The peer's servers, one without speculation and one with its prompt lookup, up for row 1.
PEER_PIDS=()
peer_start() {  # port, llama-server arguments...
  local port=$1; shift
  if curl -s --max-time 2 "localhost:$port/health" >/dev/null; then
    echo "port $port already answers (an earlier llama-server?): stop it first" >&2
    exit 1
  fi
  "$PEER_BIN/llama-server" -m "$GGUF" -t 2 -c 4096 -np 1 --port "$port" "$@" \
    >"$TMP/peer-$port.log" 2>&1 &
  PEER_PIDS+=($!)
  for _ in $(seq 1 300); do
    curl -sf --max-time 2 "localhost:$port/health" >/dev/null && return 0
    sleep 0.2
  done
  echo "llama-server on port $port did not start:" >&2
  tail -20 "$TMP/peer-$port.log" >&2
  exit 1
}
peer_generate() {  # port: decode tokens/s of the copy prompt, greedy, 128 tokens at most; its
  # draft counts appended to $TMP/peer_spec.txt
  local body reply
  body=$(python3 -c 'import json, sys
print(json.dumps({"prompt": sys.argv[1], "n_predict": 128, "temperature": 0, "cache_prompt": False}))' "$COPY")
  if ! reply=$(curl -sf --max-time 300 "localhost:$1/completion" -d "$body"); then
    echo "llama-server on port $1 did not answer the copy prompt:" >&2
    tail -20 "$TMP/peer-$1.log" >&2
    exit 1
  fi
  python3 -c 'import json, sys
t = json.loads(sys.argv[1])["timings"]
print("%.1f" % t["predicted_per_second"])
with open(sys.argv[2], "a") as f:
    print("draft", t.get("draft_n", 0), "accepted", t.get("draft_n_accepted", 0), file=f)' \
    "$reply" "$TMP/peer_spec.txt"
}
if [ "${PEER:-0}" = 1 ]; then
  PEER_BIN=$(scripts/build_llamacpp.sh)
  GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
  trap 'kill "${PEER_PIDS[@]}" 2>/dev/null || true; rm -rf "$TMP"' EXIT
  trap 'exit 1' INT TERM  # (the servers go too)
  peer_start 18191
  peer_start 18192 --spec-type ngram-simple --spec-ngram-simple-size-n 3 \
    --spec-ngram-simple-size-m 16
  : >"$TMP/peer_spec.txt"
fi
median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
same() { cmp -s "$TMP/$1.txt" "$TMP/$2.txt" || { echo "DIFFERENT TEXT: $1 vs $2" >&2; exit 1; }; }

echo "1. copy-heavy (rewrite a passage), default model, single stream, --speculative ngram:"
for ((i = 0; i < RUNS; i++)); do  # (each round in the other order: the second run of a pair
  # was slower by up to 10% in some minutes here, whichever it was)
  if ((i % 2)); then run_generate "$TARGET" on -p "$COPY" --speculative ngram >>"$TMP/copy_on"; fi
  run_generate "$TARGET" off -p "$COPY" >>"$TMP/copy_off"
  if ((i % 2 == 0)); then run_generate "$TARGET" on -p "$COPY" --speculative ngram >>"$TMP/copy_on"; fi
  same off on
  if [ "${PEER:-0}" = 1 ]; then  # (in alternating order too)
    if ((i % 2)); then peer_generate 18192 >>"$TMP/peer_on"; fi
    peer_generate 18191 >>"$TMP/peer_off"
    if ((i % 2 == 0)); then peer_generate 18192 >>"$TMP/peer_on"; fi
  fi
done
off=$(median <"$TMP/copy_off"); on=$(median <"$TMP/copy_on")
echo "   off $off tokens/s, ngram $on tokens/s: $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.2fx", a / b}')"
echo "   $(tail -1 "$TMP/on.spec")"
if [ "${PEER:-0}" = 1 ]; then
  poff=$(median <"$TMP/peer_off"); pon=$(median <"$TMP/peer_on")
  echo "   peer (llama.cpp, same GGUF, 2 threads): off $poff tokens/s, ngram-simple $pon tokens/s:" \
    "$(awk -v a="$pon" -v b="$poff" 'BEGIN {printf "%.2fx", a / b}'); $(tail -1 "$TMP/peer_spec.txt")"
  echo "   tessera ngram / peer ngram-simple: $(awk -v a="$on" -v b="$pon" 'BEGIN {printf "%.2fx", a / b}')"
  kill "${PEER_PIDS[@]}" 2>/dev/null || true
fi

echo "2. chat, f16 target ($F16), single stream, --speculative draft with a q4_0 draft ($DRAFT)"
echo "   and a q8_0 draft ($DRAFT8):"
for ((i = 0; i < RUNS; i++)); do
  for p in "${CHATS[@]}"; do
    if ((i % 2)); then run_generate "$F16" off --chat -p "$p" >>"$TMP/chat_off"; fi
    run_generate "$F16" on4 --chat -p "$p" --speculative draft --draft-model "$DRAFT" >>"$TMP/chat_on"
    run_generate "$F16" on8 --chat -p "$p" --speculative draft --draft-model "$DRAFT8" >>"$TMP/chat_on8"
    if ((i % 2 == 0)); then run_generate "$F16" off --chat -p "$p" >>"$TMP/chat_off"; fi
    same off on4
    same off on8
  done
done
acceptance() {
  awk '{for (i = 1; i <= NF; ++i) if ($i == "proposals") p += $(i - 1); else if ($i == "accepted") a += $(i - 1)}
       END {if (p) printf "acceptance over the runs: %d of %d proposals (%.1f%%)", a, p, 100 * a / p}' "$1"
}
off=$(median <"$TMP/chat_off"); on=$(median <"$TMP/chat_on"); on8=$(median <"$TMP/chat_on8")
echo "   off $off tokens/s (medians over ${#CHATS[@]} prompts x $RUNS)"
echo "   q4_0 draft $on tokens/s: $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.2fx", a / b}'), $(acceptance "$TMP/on4.spec")"
echo "   q8_0 draft $on8 tokens/s: $(awk -v a="$on8" -v b="$off" 'BEGIN {printf "%.2fx", a / b}'), $(acceptance "$TMP/on8.spec")"

echo "3. 32 requests at once (tessera bench --workload uniform), default model:"
bench() {
  "$T" bench -m "$TARGET" --requests 32 --max-batch 32 --workload uniform --mode continuous \
    --stats-interval 0 "$@" 2>/dev/null | awk -F'|' '/continuous batching/ {gsub(/ /, "", $4); print $4}'
}
for ((i = 0; i < RUNS; i++)); do
  if ((i % 2)); then bench --speculative ngram >>"$TMP/many_on"; fi
  bench >>"$TMP/many_off"
  if ((i % 2 == 0)); then bench --speculative ngram >>"$TMP/many_on"; fi
done
off=$(median <"$TMP/many_off"); on=$(median <"$TMP/many_on")
echo "   off $off tokens/s, ngram $on tokens/s: $(awk -v a="$on" -v b="$off" 'BEGIN {printf "%.2fx", a / b}')"
