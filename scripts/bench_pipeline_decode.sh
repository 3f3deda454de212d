#!/usr/bin/env bash
# Pipeline overlap during decode: 8 requests on the default model at PP=2 (one rank per core),
# with one step in the pipeline at a time (each stage idles while the other works) and with
# two steps in flight (each with half of the requests, so both stages work at once); also with
# the stages' layer shares weighted so the last stage, which also holds the LM head, is not the
# bottleneck. Prints generated tokens/s, each stage's busy share, and from the timeline
# (--trace) the share of time both ranks were computing at once; the median of 3 runs by
# tokens/s (this VM's timings jitter). Usage: scripts/bench_pipeline_decode.sh [MODEL]
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-models/smollm2-135m-instruct.h5}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMP_NUM_THREADS=1
OUT=build/bench/pipeline_decode
mkdir -p "$OUT"
python3 scripts/chat_requests.py "$OUT/requests.jsonl"
run() {  # label, ranks, extra flags
  for i in 1 2 3; do
    out=$(mpirun --bind-to core -np "$2" build/launch/tessera generate --model "$MODEL" \
          --input "$OUT/requests.jsonl" --output "$OUT/out_$2_$i.jsonl" --overwrite \
          --trace "$OUT/trace_$2_$i.json" ${@:3} 2>&1 >/dev/null)
    tps=$(echo "$out" | sed -n 's/^generated: .*(\([0-9.]*\) tokens\/s)/\1/p')
    busy=$(echo "$out" | sed -n 's/^busy: \(.*\) of .*/\1/p')
    both=$(python3 scripts/trace_overlap.py "$OUT/trace_$2_$i.json" |
           sed -n 's/.*2 busy \([0-9.]*%\).*/\1/p')
    echo "$tps|$busy|${both:--}"
  done | sort -t'|' -k1 -n | sed -n 2p |
    awk -F'|' -v l="$1" '{printf "| %-40s | %6.1f | %-30s | %s |\n", l, $1, $2, $3}'
}
echo "machine: $(nproc --all) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf "| layout | generated tokens/s | busy (computing steps) | both ranks computing |\n|---|---|---|---|\n"
run "1 rank" 1
run "PP=2, one step at a time" 2 --pp 2 --max-in-flight 1
run "PP=2, 2 steps in flight" 2 --pp 2
run "PP=2, 2 in flight, layer shares 18:12" 2 --pp 2 --pp-weights 18,12
