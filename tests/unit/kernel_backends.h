// The places the kernel sources run in the kernel parity tests: the GPU (nvcc's build, on device
// memory), and the CUDA emulator (the host compiler's build of the same sources, on host memory),
// which runs everywhere, so every kernel is checked against the CPU ops in CI even without a GPU.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/tensor.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#include "kernels/cuda/elementwise_launchers.h"
#include "kernels/cuda/paged_attention_launcher.h"
#include "kernels/cuda/sampling_launchers.h"
#endif

namespace tessera::testing {

#if TESSERA_HAVE_CUDA
// One build of the launchers and where its buffers live.
struct KernelBackend {
  std::string name;
  Device memory;  // where the buffers the launchers read and write live
  bool (*available)(std::string* why_not);
  decltype(&cuda::device::rms_norm) rms_norm;
  decltype(&cuda::device::add_rms_norm) add_rms_norm;
  decltype(&cuda::device::swiglu) swiglu;
  decltype(&cuda::device::rope) rope;
  decltype(&cuda::device::embedding) embedding;
  decltype(&cuda::device::paged_attention) paged_attention;
  decltype(&cuda::device::repetition_penalty) repetition_penalty;
  decltype(&cuda::device::top_k) top_k;
};

inline bool gpu_available(std::string* why_not) {
  if (cuda::device_count() == 0) {
    *why_not = "no GPU here: " + cuda::no_device_reason();
    return false;
  }
  static const bool reserved = [] {
    cuda::reserve_memory(0, size_t(1) << 30);
    return true;
  }();
  return reserved;
}
inline bool emulator_available(std::string* why_not) {
#if TESSERA_HAVE_CUDA_EMULATOR
  (void)why_not;
  return true;
#else
  *why_not = "built without the CUDA emulator";
  return false;
#endif
}

inline std::vector<KernelBackend> kernel_backends() {
  std::vector<KernelBackend> b;
  b.push_back({"gpu", Device::cuda(0), gpu_available, cuda::device::rms_norm,
               cuda::device::add_rms_norm, cuda::device::swiglu, cuda::device::rope,
               cuda::device::embedding, cuda::device::paged_attention,
               cuda::device::repetition_penalty, cuda::device::top_k});
#if TESSERA_HAVE_CUDA_EMULATOR
  b.push_back({"emulator", Device::cpu(), emulator_available, cuda::emulated::rms_norm,
               cuda::emulated::add_rms_norm, cuda::emulated::swiglu, cuda::emulated::rope,
               cuda::emulated::embedding, cuda::emulated::paged_attention,
               cuda::emulated::repetition_penalty, cuda::emulated::top_k});
#endif
  return b;
}
#endif

}  // namespace tessera::testing
