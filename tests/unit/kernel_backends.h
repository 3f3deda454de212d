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
#include "kernels/cuda/launchers.h"
#endif

namespace tessera::testing {

#if TESSERA_HAVE_CUDA
// One build of the launchers and where its buffers live.
struct KernelBackend : cuda::Launchers {
  std::string name;
  Device memory;  // where the buffers the launchers read and write live
  bool (*available)(std::string* why_not);
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
inline bool emulator_available(std::string*) {
  return true;
}

inline std::vector<KernelBackend> kernel_backends() {
  return {{cuda::gpu_launchers(), "gpu", Device::cuda(0), gpu_available},
          {cuda::emulator_launchers(), "emulator", Device::cpu(), emulator_available}};
}
#endif

}  // namespace tessera::testing
