#include "kernels/cuda/launchers.h"

namespace tessera::cuda {

const Launchers& gpu_launchers() {
  static const Launchers l{"gpu",
                           device::rms_norm,
                           device::add_rms_norm,
                           device::swiglu,
                           device::rope,
                           device::embedding,
                           device::linear,
                           device::linear_simple,
                           device::add_bias,
                           device::paged_attention,
                           device::repetition_penalty,
                           device::top_k,
                           device::add,
                           device::convert,
                           device::fill_uniform,
                           device::round_through,
                           device::attention_finish,
                           device::attention_merge,
                           device::store_kv};
  return l;
}

}  // namespace tessera::cuda
