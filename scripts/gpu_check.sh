#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: issue 5's checks and benchmarks from the bundle
# scripts/gpu_bundle.sh makes, every output under $OUT (default ./gpu-out), a table last.
#   tar xJf build-gpu/gpu-bundle.tar.xz -C /tmp && /tmp/gpu-bundle/gpu_check.sh
# The kernel parity tests (GPU against CPU, every op), the ops the model calls, the GPU's memory,
# then the end-to-end parity on a random model of the default model's shape (the default model's
# file does not reach such machines), then bench-gpu on a Llama 3.1 8B-shaped random model, then
# tessera bench (continuous against static batching) on the default model's shape.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
# cuBLAS is the GPU machine's own (its CUDA toolkit or the nvidia-cublas wheel).
CUBLAS_DIRS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib \
  $(python3 -c 'import nvidia.cublas, os; print(os.path.join(nvidia.cublas.__path__[0], "lib"))' 2>/dev/null) 2>/dev/null | tr '\n' ':')
# NCCL likewise (opened at run time; 218 MB, too big to carry): the toolkit's or the nvidia-nccl wheel's.
NCCL_DIRS=$(ls -d /usr/local/cuda/lib64 /usr/local/cuda/lib \
  $(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib"))' 2>/dev/null) 2>/dev/null | tr '\n' ':')
export LD_LIBRARY_PATH="$HERE/lib:${CUBLAS_DIRS}${NCCL_DIRS}${LD_LIBRARY_PATH:-}"
ldd "$HERE/bin/tessera" > "$OUT/ldd.txt" 2>&1
if grep -q "not found" "$OUT/ldd.txt"; then echo "missing libraries:"; grep "not found" "$OUT/ldd.txt"; fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
summary=()
# Timeouts keep the whole run inside a device lease of 15 minutes (machine start included).
for t in test_cuda_memory test_cuda_ops test_cuda_attention test_cuda_sampling test_gpu_ops test_simt_emulator \
    test_nccl_communicator test_completion_watchdog test_decode_graph test_device_sampling; do
  timeout 120 "$HERE/bin/$t" > "$OUT/$t.txt" 2>&1
  rc=$?
  count() { grep -cE "^\[ *$1 *\] .* \([0-9]+ ms\)\$" "$OUT/$t.txt"; }
  summary+=("$t: exit $rc, $(count OK) passed, $(count SKIPPED) skipped, $(count FAILED) failed")
done
timeout 180 "$HERE/bin/default_model_gpu_parity" --random "$HERE/configs/smollm2-135m.json" \
  > "$OUT/parity.json" 2> "$OUT/parity.err"
summary+=("parity (smollm2-135m shape, random): exit $? $(cat "$OUT/parity.json")")
( cd "$HERE" && timeout 240 bin/tessera bench-gpu --config configs/llama-3.1-8b.json \
    --json "$OUT/bench-gpu.json" ) > "$OUT/bench-gpu.txt" 2>&1
summary+=("bench-gpu: exit $?")
# Issue 4's figure on the GPU: continuous against static batching, the default model's shape.
( cd "$HERE" && timeout 180 bin/tessera bench --random configs/smollm2-135m.json --rounds 3 \
    --json "$OUT/bench-batching.json" ) > "$OUT/bench-batching.txt" 2>&1
summary+=("bench (continuous vs static): exit $? $(grep -o 'continuous batching: [0-9.]*x' "$OUT/bench-batching.txt")")
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
cat "$OUT/bench-gpu.txt"
# The dated results file the repository keeps (results/gpu-DATE.md): the GPU, its driver, the
# commands, and what they printed.
DATE=$(date -u +%Y-%m-%d)
{
  echo "# GPU results, $DATE"
  echo
  echo "GPU and driver: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  echo
  echo "Made by \`scripts/gpu_bundle.sh\` (built for sm_90a) and \`gpu_check.sh\` on the GPU machine;"
  echo "each line below names its binary, whose arguments are in scripts/gpu_check.sh."
  echo
  echo '```'
  cat "$OUT/summary.txt"
  echo '```'
  echo
  cat "$OUT/bench-gpu.txt"
  echo
  echo '```'
  grep -E "continuous|static|tokens/s" "$OUT/bench-batching.txt" | head -20
  echo '```'
} > "$OUT/results-$DATE.md"
echo "wrote $OUT/results-$DATE.md"
