#!/usr/bin/env bash
# Decode of a model (the default one unless given) across three test hosts (scripts/netns_cluster.sh; root) whose
# links are shaped to a rate with tc tbf: TP=3 across the hosts against PP=3 across them, one
# stream and 8 streams, with each run's communication share (time inside the TP/PP communicators,
# waiting included, averaged over ranks), bytes sent per token per rank, and what `tessera plan`
# estimates for it. --comm-dtype bf16 and q8 are measured on the slow links. The three hosts
# share this machine's cores: absolute speed is what 3 single-threaded ranks on them give.
#
# plan's estimate is calibrated on one rank alone (no links): the rate it reads its weights at
# (plan's weight bytes x its 1-stream decode tokens/s) and its arithmetic rate (2 x parameters x
# its 8-stream tokens/s); the links are the shaped rate (unshaped: the veth's 0.69 GB/s) and the
# veth's 25 us (tessera doctor across the test hosts).
#
#   scripts/bench_links.sh [MODEL CONFIG WEIGHTS]     (writes build/bench/links.md)
# A delay (1gbit@0.1ms: 0.1 ms on every host's link each way, 0.2 ms host to host) comes from
# netns_cluster.sh impair (a switch in user space, at most about 50 MB/s).
# (CONFIG: the model's shape for plan, WEIGHTS: how its file holds them, as plan --weights takes)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "${1:-models/smollm2-135m-instruct.h5}")
CONFIG=${2:-configs/smollm2-135m.json}
WEIGHTS=${3:-q4_1}
T=$PWD/build/launch/tessera
NAME=bl$$
OUT=build/bench
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
scripts/netns_cluster.sh up 3 "$NAME" >/dev/null
trap 'scripts/netns_cluster.sh down "$NAME"' EXIT

shape() {  # RATE[@DELAY] (tbf's notation; DELAY per link and way) or none: every host's link
  local i delay=${1#*@}
  [ "$delay" = "$1" ] && delay=""
  set -- "${1%@*}"
  if [ -n "$delay" ]; then  # (a switch in user space: netem is not in this VM's kernel)
    scripts/netns_cluster.sh impair "$NAME" 1:"$delay":0 2:"$delay":0 3:"$delay":0
  else
    scripts/netns_cluster.sh repair "$NAME"
  fi
  for i in 1 2 3; do
    ip netns exec "$NAME-h$i" tc qdisc del dev eth0 root 2>/dev/null || true
    ip netns exec "$NAME-br" tc qdisc del dev "h$i" root 2>/dev/null || true
    [ "$1" = none ] && continue
    # a burst of 10 ms at the rate (at least 64 KiB), and up to 50 ms queued
    local burst
    burst=$(python3 -c "import sys; r=sys.argv[1]; u={'gbit':1e9,'mbit':1e6}[r[-4:]]; \
print(max(65536, int(float(r[:-4]) * u / 8 / 100)))" "$1")
    ip netns exec "$NAME-h$i" tc qdisc add dev eth0 root tbf rate "$1" burst "$burst" latency 50ms
    ip netns exec "$NAME-br" tc qdisc add dev "h$i" root tbf rate "$1" burst "$burst" latency 50ms
  done
}

PROMPT="The Roman Empire was the post-Republican state of ancient Rome. Summarise its history:"
EIGHT=$(mktemp)
for i in $(seq 1 8); do
  echo "{\"id\": \"r$i\", \"prompt\": \"$PROMPT ($i)\", \"max_tokens\": 48, \"ignore_eos\": true}"
done >"$EIGHT"
speed_of() { sed -n 's/^\(decode\|generated\): .*(\(.*\) tokens\/s)/\2/p' | tail -1; }
run() {  # mpirun prefix... -- generate flags... -> "tok/s | comm. share | KB/token/rank"
  local out
  out=$("$@" --stats-interval 0 --no-prefix-caching 2>&1 >/dev/null)
  local comm kb
  comm=$(echo "$out" | sed -n 's/^communication: \([0-9.]*%\).*/\1/p' | tail -1)
  kb=$(echo "$out" | sed -n 's/^communication: .*; \([0-9.]*\) KB sent per token.*/\1/p' | tail -1)
  echo "$(echo "$out" | speed_of) | ${comm:--} | ${kb:--}"
}
on_hosts() {
  run scripts/netns_cluster.sh mpirun "$NAME" -H "$NAME-h1:1,$NAME-h2:1,$NAME-h3:1" \
    -x OMP_NUM_THREADS "$T" generate -m "$MODEL" "$@"
}

# Calibration: one rank alone, 1 thread
ONE=$("$T" generate -m "$MODEL" -p "$PROMPT" -n 64 --ignore-eos 2>&1 >/dev/null | speed_of)
rm -f "$EIGHT.out"
ONE8=$("$T" generate -m "$MODEL" -i "$EIGHT" -o "$EIGHT.out" --stats-interval 0 \
       --no-prefix-caching 2>&1 >/dev/null | speed_of)
"$T" plan -m "$CONFIG" --nodes 1 --gpus-per-node 1 --weights "$WEIGHTS" --json "$OUT/plan1.json" \
  >/dev/null
read -r MEM FLOPS < <(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
w=d['layouts'][0]['weight_bytes']; print(f'{w*float(sys.argv[2])/1e9:.3f}GB/s', \
f'{2*d[\"parameters\"]*float(sys.argv[3])/1e9:.2f}GFLOP/s')" "$OUT/plan1.json" "$ONE" "$ONE8")
estimate() {  # RATE[@DELAY] LAYOUT(tp|pp) DTYPE STREAMS -> plan's tok/s for 3 one-GPU nodes
  local bw=690MB/s rate=${1%@*} latency=25us
  [ "$rate" != none ] && bw=$(echo "$rate" | sed 's/gbit/Gbit\/s/; s/mbit/Mbit\/s/')
  [ "$rate" != "$1" ] && latency=$(python3 -c "import sys; d=sys.argv[1]; \
u=next(u for u in ('us','ms','s') if d.endswith(u)); \
v=float(d[:-len(u)]) * {'us':1,'ms':1e3,'s':1e6}[u]; print(f'{2*v+25:g}us')" "${1#*@}")
  "$T" plan -m "$CONFIG" --nodes 3 --gpus-per-node 1 --weights "$WEIGHTS" --activations f32 \
    --memory-bandwidth "$MEM" --compute-rate "$FLOPS" --inter-node-bandwidth "$bw" \
    --inter-node-latency "$latency" \
    --comm-dtype "$3" --streams "$4" --json "$OUT/plan.json" >/dev/null
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); \
k=('tp' if sys.argv[2]=='tp' else 'pp'); \
print([f\"{l['tokens_per_second']:.0f}\" for l in d['layouts'] if l[k]==3][0])" \
    "$OUT/plan.json" "$2"
}

# link rate[@delay per link and way] and the formats measured there (BENCH_LINKS: such cases,
# separated by ";")
CASES=("none f32" "25gbit f32" "1gbit f32 bf16 q8" "100mbit f32 bf16 q8" "1gbit@0.1ms f32 q8"
       "100mbit@2.5ms f32 q8")
[ -n "${BENCH_LINKS:-}" ] && IFS=';' read -ra CASES <<<"$BENCH_LINKS"
{
  echo "Three test hosts on one $(nproc --all)-core machine, one rank each (1 thread); links shaped with tc tbf; $(date -u +%F)."
  echo "One rank alone: $ONE tok/s decode (1 stream), $ONE8 tok/s (8 streams): plan calibrated to $MEM, $FLOPS."
  echo
  echo "| link | layout | --comm-dtype | 1 stream: tok/s (plan) | comm. share | KB/token/rank | 8 streams: tok/s (plan) | comm. share |"
  echo "|---|---|---|---|---|---|---|---|"
  for link in "${CASES[@]}"; do
    # shellcheck disable=SC2086
    set -- $link
    rate=$1
    shift
    shape "$rate"
    for layout in tp pp; do
      for dtype in "$@"; do
        one=$(on_hosts "--$layout" 3 --comm-dtype "$dtype" -p "$PROMPT" -n 64 --ignore-eos)
        rm -f "$EIGHT.out"
        eight=$(on_hosts "--$layout" 3 --comm-dtype "$dtype" -i "$EIGHT" -o "$EIGHT.out")
        IFS='|' read -r s1 c1 kb1 <<<"$one"
        IFS='|' read -r s8 c8 _ <<<"$eight"
        echo "| ${rate/none/unshaped (veth)} | $layout 3 across hosts | $dtype |" \
             "${s1// /} ($(estimate "$rate" "$layout" "$dtype" 1)) | ${c1// /} | ${kb1// /} |" \
             "${s8// /} ($(estimate "$rate" "$layout" "$dtype" 8)) | ${c8// /} |"
      done
    done
  done
  shape none
} | tee "$OUT/links.md"
rm -f "$EIGHT" "$EIGHT.out"
