// Every kernel source compiled by the host compiler against the CUDA emulator
// (tessera::cuda::emulated), for the kernel tests that run where there is no GPU.
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/linear.cuh"
#include "kernels/cuda/paged_attention.cuh"
#include "kernels/cuda/quant_linear.cuh"
#include "kernels/cuda/sampling.cuh"
#include "kernels/cuda/state.cuh"

#include "kernels/cuda/launchers.h"

namespace tessera::cuda {

const Launchers& emulator_launchers() {
  static const Launchers l = TESSERA_LAUNCHER_TABLE(emulated, "emulator");
  return l;
}

}  // namespace tessera::cuda
