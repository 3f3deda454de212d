#!/usr/bin/env bash
# Pipeline overlap during prefill: the default model at PP=2 (one rank per core) on a long prompt,
# with microbatches (stages work on different microbatches at once) and without (each stage waits
# for the whole prompt from the one before). One generated token, so the run is prefill. Prints
# prefill tokens/s and the share of time the ranks spent waiting inside the pipeline's transfers,
# the median of 3 runs (this VM's timings jitter).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/smollm2-135m-instruct.h5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
PROMPT=$(for i in $(seq 1 40); do printf 'The Roman Empire ruled the Mediterranean for centuries. '; done)
run() {  # label, ranks, extra flags
  for i in 1 2 3; do
    out=$(mpirun --bind-to core -np "$2" build/launch/tessera generate --model "$MODEL" \
          --prompt "$PROMPT" --max-tokens 1 ${@:3} 2>&1 >/dev/null)
    echo "$(echo "$out" | sed -n 's/^prefill: .* in \([0-9.]*\) s (\([0-9.]*\) tokens\/s)/\1 \2/p') \
$(echo "$out" | sed -n 's/^communication: \([0-9.]*%\).*/\1/p')"
  done | sort -n | sed -n 2p | awk -v l="$1" '{printf "| %-30s | %6.2f s | %6.1f | %s |\n", l, $1, $2, ($3 == "" ? "-" : $3)}'
}
printf "| layout | prefill time | tokens/s | waiting in transfers |\n|---|---|---|---|\n"
run "1 rank, 1 thread" 1 --pp 1
run "PP=2, no microbatches" 2 --pp 2 --microbatch 100000
run "PP=2, 4 microbatches (auto)" 2 --pp 2
run "PP=2, 8 microbatches" 2 --pp 2 --microbatch 50
