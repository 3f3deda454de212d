#!/usr/bin/env bash
# Decode speed and communication share of tessera generate on the default model for TP x PP
# layouts (TP must divide the model's 9 query heads: 1 or 3). Ranks beyond the cores are
# oversubscribed, so absolute speed falls with more ranks; the communication share (time inside
# the TP/PP communicators, waiting for peers included, averaged over ranks) is the point.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/smollm2-135m-instruct.h5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
PROMPT="The Roman Empire was the post-Republican state of ancient Rome. Summarise its history:"
printf "| tp | pp | ranks | decode tokens/s | communication share |\n|----|----|-------|-----------------|---------------------|\n"
for tp in 1 3; do
  for pp in 1 2 4; do
    n=$((tp * pp))
    threads=$(( n >= $(nproc) ? 1 : $(nproc) / n ))
    out=$(OMP_NUM_THREADS=$threads mpirun --bind-to none -np $n build/launch/tessera generate --model "$MODEL" \
          --tp $tp --pp $pp --prompt "$PROMPT" --max-tokens 64 --ignore-eos 2>&1 >/dev/null)
    dec=$(echo "$out" | sed -n 's/^decode: .*(\(.*\) tokens\/s)/\1/p')
    comm=$(echo "$out" | sed -n 's/^communication: \([0-9.]*%\).*/\1/p')
    printf "| %s | %s | %s | %s | %s |\n" $tp $pp $n "$dec" "${comm:-0%}"
  done
done
