#!/usr/bin/env bash
# Decode of the default model across three test hosts (scripts/netns_cluster.sh; root) whose
# links are shaped to a rate with tc tbf: TP=3 across the hosts against PP=3 across them, one
# stream and 8 streams, with the communication share (time inside the TP/PP communicators,
# waiting included, averaged over ranks). The three hosts share this machine's cores: absolute
# speed is what 3 single-threaded ranks on them give; the comparison between links is the point.
# Added latency and packet loss need netem, which this VM's kernel lacks (notes/platform.md).
#
#   scripts/bench_links.sh [MODEL]     (writes build/bench/links.md)
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=$(realpath "${1:-models/smollm2-135m-instruct.h5}")
T=$PWD/build/launch/tessera
NAME=bl$$
OUT=build/bench
mkdir -p "$OUT"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
scripts/netns_cluster.sh up 3 "$NAME" >/dev/null
trap 'scripts/netns_cluster.sh down "$NAME"' EXIT

shape() {  # RATE (tbf's notation) or none: both directions of every host's link
  local i
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
run() {  # --tp/--pp flags... -> "decode-or-generated tok/s | communication share"
  local out
  out=$(scripts/netns_cluster.sh mpirun "$NAME" -H "$NAME-h1:1,$NAME-h2:1,$NAME-h3:1" \
          -x OMP_NUM_THREADS "$T" generate -m "$MODEL" "$@" --stats-interval 0 2>&1 >/dev/null)
  local speed comm
  speed=$(echo "$out" | sed -n 's/^\(decode\|generated\): .*(\(.*\) tokens\/s)/\2/p' | tail -1)
  comm=$(echo "$out" | sed -n 's/^communication: \([0-9.]*%\).*/\1/p' | tail -1)
  echo "$speed | ${comm:--}"
}

{
  echo "Three test hosts on one $(nproc --all)-core machine, one rank each (1 thread); links shaped with tc tbf; $(date -u +%F)."
  echo
  echo "| link | layout | 1 stream: decode tok/s | comm. share | 8 streams: output tok/s | comm. share |"
  echo "|---|---|---|---|---|---|"
  for rate in none 25gbit 1gbit 100mbit; do
    shape "$rate"
    for layout in "--tp 3" "--pp 3"; do
      # shellcheck disable=SC2086
      one=$(run $layout -p "$PROMPT" -n 64 --ignore-eos)
      # shellcheck disable=SC2086
      rm -f "$EIGHT.out"
      eight=$(run $layout -i "$EIGHT" -o "$EIGHT.out")
      echo "| ${rate/none/unshaped (veth)} | ${layout/--/} across hosts | $one | $eight |"
    done
  done
  shape none
} | tee "$OUT/links.md"
rm -f "$EIGHT" "$EIGHT.out"
