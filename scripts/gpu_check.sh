#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: issue 5's checks and benchmarks from the bundle
# scripts/gpu_bundle.sh makes, a table last.
#   tar xJf build-gpu/gpu-bundle.tar.xz -C /tmp && /tmp/gpu-bundle/gpu_check.sh
# Phase 1, at once (correctness; the GPU has room for all): the kernel parity tests (GPU against
# CPU, every op), the GPU's memory, NCCL, graphs, device sampling; several ranks on one GPU over
# MPI (mpirun from the bundle) against the one-rank CPU run; the end-to-end parity on a random
# model of the default model's shape (the default model's file does not reach such machines).
# Phase 2, alone: bench-gpu on a Llama 3.1 8B-shaped random model, bf16, then 8 of its layers with
# int4 and FP8 matrices. Phase 3, alone: tessera bench
# (continuous against static batching) on the default model's shape.
# $OUT gets two files, written as the run goes: results-DATE.md (the results file the repository
# keeps as results/gpu-DATE.md) and logs.tar.gz (every log, packed at the end, also when the run
# is stopped with SIGTERM/SIGINT). The timeouts sum to 7 minutes: one device lease call.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
LOGS=$OUT/logs
mkdir -p "$LOGS"
DATE=$(date -u +%Y-%m-%d)
RESULTS=$OUT/results-$DATE.md
pack() { tar -C "$OUT" -czf "$OUT/logs.tar.gz" logs && rm -rf "$LOGS"; }
trap 'pack; exit 1' TERM INT
# cuBLAS is the GPU machine's own (its CUDA toolkit or the nvidia-cublas wheel).
CUBLAS_DIRS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib \
  $(python3 -c 'import nvidia.cublas, os; print(os.path.join(nvidia.cublas.__path__[0], "lib"))' 2>/dev/null) 2>/dev/null | tr '\n' ':')
# NCCL likewise (opened at run time; 218 MB, too big to carry): the toolkit's or the nvidia-nccl wheel's.
NCCL_DIRS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib \
  $(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib"))' 2>/dev/null) 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$HERE/lib:${CUBLAS_DIRS}${NCCL_DIRS}${LD_LIBRARY_PATH:-}"
# Open MPI and PMIx from the bundle (gpu_bundle.sh says why), found through their relocation
# variables; shared memory and TCP between ranks of one machine.
export OPAL_PKGLIBDIR=$HERE/ompi/lib OPAL_PKGDATADIR=$HERE/ompi/share OPAL_SYSCONFDIR=$HERE/ompi/etc
export OPAL_BINDIR=$HERE/ompi/bin PMIX_PKGLIBDIR=$HERE/pmix2/lib/pmix PMIX_PKGDATADIR=$HERE/pmix2/share/pmix PATH=$HERE/ompi/bin:$PATH
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
ldd "$HERE/bin/tessera" > "$LOGS/ldd.txt" 2>&1
nvidia-smi > "$LOGS/nvidia-smi.txt" 2>&1
{
  echo "# GPU results, $DATE"
  echo
  echo "GPU and driver: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  echo
  echo "Made by \`scripts/gpu_bundle.sh\` (built for sm_90a) and \`scripts/gpu_check.sh\` on the GPU"
  echo "machine; each line names its binary, whose arguments are in scripts/gpu_check.sh."
  if grep -q "not found" "$LOGS/ldd.txt"; then echo; echo "missing libraries:"; grep "not found" "$LOGS/ldd.txt"; fi
  echo
} > "$RESULTS"
note() { echo "$*" | tee -a "$RESULTS"; }
count() { grep -cE "^\[ *$1 *\] .* \([0-9]+ ms\)\$" "$2"; }
gtest_line() {  # name, exit code, log
  echo "$1: exit $2, $(count OK "$3") passed, $(count SKIPPED "$3") skipped, $(count FAILED "$3") failed$(
    grep -E '^\[  FAILED  \] [A-Za-z]' "$3" | grep -v ' ms)' | sed 's/^\[  FAILED  \] / /' | sort -u | tr '\n' ';')"
}

# Phase 1: every correctness check at once, each under its own timeout.
UNIT="test_cuda_memory test_cuda_ops test_cuda_attention test_cuda_sampling test_gpu_ops \
  test_simt_emulator test_nccl_communicator test_completion_watchdog test_decode_graph test_device_sampling"
pids=()
for t in $UNIT; do
  timeout 150 "$HERE/bin/$t" --gtest_color=no > "$LOGS/$t.txt" 2>&1 &
  pids+=($!)
done
MPI_RUNS=("mpi_test_gpu_model 2" "mpi_test_gpu_model 4" "mpi_test_engine 4")
for r in "${MPI_RUNS[@]}"; do
  set -- $r
  timeout 150 mpirun -np "$2" "$HERE/bin/$1" --gtest_color=no --gtest_filter='Gpu*:*Gpu*' > "$LOGS/$1.np$2.txt" 2>&1 &
  pids+=($!)
done
( cd "$HERE" && timeout 150 bin/default_model_gpu_parity --random configs/smollm2-135m.json \
    > "$LOGS/parity.json" 2> "$LOGS/parity.err" ) &
parity_pid=$!
i=0
note '```'
for t in $UNIT; do
  wait "${pids[$i]}"; rc=$?; i=$((i + 1))
  note "$(gtest_line "$t" $rc "$LOGS/$t.txt")"
done
for r in "${MPI_RUNS[@]}"; do
  set -- $r
  wait "${pids[$i]}"; rc=$?; i=$((i + 1))
  note "$(gtest_line "mpirun -np $2 $1 (ranks share cuda:0)" $rc "$LOGS/$1.np$2.txt")"
done
wait $parity_pid
note "parity (smollm2-135m shape, random): exit $? $(cat "$LOGS/parity.json") $(tail -2 "$LOGS/parity.err" | tr '\n' ' ')"
note '```'

# Phase 2: the GPU path's speed against the GPU's own ceilings (the issue's three targets): bf16
# on the whole Llama 3.1 8B shape, then its layers with int4 (AWQ/GPTQ's i4_g128) and FP8
# matrices (issue 19: decode at 75% / 80% of the copy's bandwidth, prefill 60% of bf16's GEMM).
( cd "$HERE" && timeout 100 bin/tessera bench-gpu --config configs/llama-3.1-8b.json \
    --json "$LOGS/bench-gpu.json" ) > "$LOGS/bench-gpu.txt" 2>&1
rc=$?
{ echo; echo "bench-gpu (exit $rc):"; echo '```'; tail -40 "$LOGS/bench-gpu.txt"; echo '```'; } | tee -a "$RESULTS"
for w in i4_g128 f8_e4m3; do
  ( cd "$HERE" && timeout 40 bin/tessera bench-gpu --config configs/llama-3.1-8b.json --layers 8 \
      --weights $w --repeats 3 --json "$LOGS/bench-gpu-$w.json" ) > "$LOGS/bench-gpu-$w.txt" 2>&1
  rc=$?
  { echo; echo "bench-gpu --weights $w (exit $rc):"; echo '```'; tail -12 "$LOGS/bench-gpu-$w.txt"; echo '```'; } | tee -a "$RESULTS"
done

# Phase 3: issue 4's figure on the GPU: continuous against static batching, the default model's shape.
( cd "$HERE" && timeout 90 bin/tessera bench --random configs/smollm2-135m.json --rounds 3 \
    --json "$LOGS/bench-batching.json" ) > "$LOGS/bench-batching.txt" 2>&1
rc=$?
{ echo; echo "tessera bench (exit $rc):"; echo '```'; tail -25 "$LOGS/bench-batching.txt"; echo '```'; } | tee -a "$RESULTS"
pack
echo "wrote $RESULTS and $OUT/logs.tar.gz"
