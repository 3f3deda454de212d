#!/usr/bin/env bash
# Measures tessera generate on the default model: prefill and decode tokens/s separately, greedy,
# a fixed ~150-token prompt and 128 generated tokens, 3 runs. Usage: scripts/bench_generate.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/smollm2-135m-instruct.h5}
PROMPT="The Roman Empire was the post-Republican state of ancient Rome. It is generally understood to mean the period and territory ruled by the Romans following Octavian's assumption of sole rule under the Principate in 27 BC. It included territory in Europe, North Africa, and Western Asia, and was ruled by emperors. The fall of the Western Roman Empire in 476 AD conventionally marks the end of classical antiquity and the beginning of the Middle Ages. Rome had expanded its rule to most of the Mediterranean and beyond, and became one of the largest empires in the ancient world. Summarise this history in a few sentences:"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for i in 1 2 3; do
  build/launch/tessera generate --model "$MODEL" --prompt "$PROMPT" --max-tokens 128 --ignore-eos 2>&1 >/dev/null |
    grep -E '^(prefill|decode):'
done
