#!/usr/bin/env bash
# Builds the GPU checks for Hopper here and packs them with the shared libraries they need that a
# GPU machine's CUDA image may lack (MPI, HDF5, OpenBLAS, Boost; not glibc, libstdc++ or CUDA's
# own libraries, which the GPU machine has): build-gpu/gpu-bundle.tar.xz, small enough to carry
# to the device machine (64 MiB with everything else). scripts/gpu_check.sh runs it there.
# The GPU machine has no MPI, so Open MPI's run time travels too: mpirun (orterun) and orted, the
# plugins it opens at start (MCA components, PMIx's) and its help texts. gpu_check.sh points Open
# MPI at them (OPAL_* and PMIX_* directories); without them MPI_Init fails there.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=build-gpu
TARGETS="tessera test_cuda_memory test_cuda_ops test_cuda_attention test_cuda_sampling test_gpu_ops
  test_simt_emulator test_nccl_communicator test_completion_watchdog test_decode_graph
  test_device_sampling default_model_gpu_parity mpi_test_gpu_model mpi_test_engine"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a \
  -DTESSERA_CUDA=ON >/dev/null
ninja --quiet -C "$BUILD" $TARGETS
STAGE="$BUILD/gpu-bundle"
rm -rf "$STAGE" && mkdir -p "$STAGE/bin" "$STAGE/lib" "$STAGE/configs"
for t in $TARGETS; do
  f=$(find "$BUILD" -name "$t" -type f -perm -u+x | head -1)
  strip -o "$STAGE/bin/$t" "$f"
done
# Debian's Open MPI 4.1 and PMIx 2 layout. Transports for hardware a one-GPU machine lacks
# (InfiniBand, OFI, UCX, PSM) stay behind, and with them their libraries.
OMPI_LIB=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3
PMIX_ROOT=/usr/lib/x86_64-linux-gnu/pmix2
mkdir -p "$STAGE/ompi/lib" "$STAGE/ompi/bin" "$STAGE/pmix2/lib"
for c in "$OMPI_LIB"/*.so; do
  case "$(basename "$c")" in *ucx* | *ofi* | *openib* | *psm* | *verbs* | *usnic* | *portals*) continue ;; esac
  cp "$c" "$STAGE/ompi/lib/"
done
cp -r /usr/share/openmpi "$STAGE/ompi/share"
cp -r /etc/openmpi "$STAGE/ompi/etc"
cp /usr/bin/orterun /usr/bin/orted "$STAGE/ompi/bin/"
ln -s orterun "$STAGE/ompi/bin/mpirun"
cp -r "$PMIX_ROOT/lib/pmix" "$STAGE/pmix2/lib/"
cp -r "$PMIX_ROOT/share" "$STAGE/pmix2/share"
cp configs/*.json "$STAGE/configs/"
cp scripts/gpu_check.sh "$STAGE/"
# Every library the binaries load, but the C/C++ runtime and CUDA's (the GPU machine's own).
for b in "$STAGE"/bin/* "$STAGE"/ompi/bin/orte* "$STAGE"/ompi/lib/*.so "$STAGE"/pmix2/lib/pmix/*.so; do
  ldd "$b"
done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libdl|librt|libpthread|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so|/libcu|/libnv|/libnccl' |
  while read -r lib; do cp -L "$lib" "$STAGE/lib/"; done
tar -C "$BUILD" -cJf "$BUILD/gpu-bundle.tar.xz" gpu-bundle
size=$(stat -c %s "$BUILD/gpu-bundle.tar.xz")
echo "$BUILD/gpu-bundle.tar.xz: $((size / 1048576)) MiB ($(ls "$STAGE/lib" | wc -l) libraries)"
[ "$size" -lt $((56 * 1048576)) ] || { echo "too big to carry (56 MiB at most)" >&2; exit 1; }
