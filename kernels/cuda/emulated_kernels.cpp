// Every kernel source compiled by the host compiler against the CUDA emulator
// (tessera::cuda::emulated), for the kernel tests that run where there is no GPU.
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/linear.cuh"
#include "kernels/cuda/paged_attention.cuh"
#include "kernels/cuda/sampling.cuh"
#include "kernels/cuda/state.cuh"

#include "kernels/cuda/launchers.h"

namespace tessera::cuda {

const Launchers& emulator_launchers() {
  static const Launchers l{"emulator",
                           emulated::rms_norm,
                           emulated::add_rms_norm,
                           emulated::swiglu,
                           emulated::rope,
                           emulated::embedding,
                           emulated::linear,
                           emulated::linear_simple,
                           emulated::add_bias,
                           emulated::paged_attention,
                           emulated::repetition_penalty,
                           emulated::top_k,
                           emulated::add,
                           emulated::convert,
                           emulated::fill_uniform,
                           emulated::round_through,
                           emulated::attention_finish,
                           emulated::attention_merge,
                           emulated::store_kv};
  return l;
}

}  // namespace tessera::cuda
