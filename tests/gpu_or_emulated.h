// The GPU the GPU-path tests run on: cuda:0 with 256 MiB reserved where there is a GPU, else an
// emulated GPU (host memory, the kernel sources on the CUDA emulator), so the tests run in CI.
#pragma once

#include "kernels/device.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"

namespace tessera {

inline Device test_gpu() {
  static const Device d = [] {
    if (cuda::device_count() > 0) {
      cuda::reserve_memory(0, size_t(256) << 20);
      return Device::cuda(0);
    }
    cuda::emulate_gpu(9, size_t(256) << 20);
    return Device::cuda(9);
  }();
  return d;
}

}  // namespace tessera
#endif
