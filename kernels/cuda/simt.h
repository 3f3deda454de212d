// What the kernel sources (kernels/cuda/*.cuh) include instead of the CUDA runtime, so that one
// source is compiled by nvcc for the GPU (kernels/cuda/*.cu) and by the host compiler against the
// emulator (simt_emulator.h) for tests that run without a GPU.
//
//   TESSERA_LAUNCH(grid, block, shared_bytes, stream, kernel)(args...)   a kernel launch
//   TESSERA_DYNAMIC_SHARED(type, name)      name points at the block's dynamic shared memory
//   TESSERA_KERNELS                         the namespace the launchers live in: `device` for the
//                                           GPU build, `emulated` for the emulator's, so both can
//                                           be linked into one test
//   launch_error()                          "" or the last launch's error (and clears it)
//   TESSERA_UNROLL                          unroll the next loop (#pragma unroll for nvcc)
#pragma once

#include <string>

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define TESSERA_KERNELS device
#define TESSERA_UNROLL _Pragma("unroll")
#define TESSERA_LAUNCH(grid, block, shared_bytes, stream, ...) \
  __VA_ARGS__<<<(grid), (block), (shared_bytes), static_cast<cudaStream_t>(stream)>>>
#define TESSERA_DYNAMIC_SHARED(type, name)                                       \
  extern __shared__ __align__(16) unsigned char tessera_dynamic_shared_memory[]; \
  type* name = reinterpret_cast<type*>(tessera_dynamic_shared_memory)

namespace tessera::cuda::device {
inline std::string launch_error() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}
// Lets kernel use up to bytes of dynamic shared memory (above the default 48 KiB).
template <class Kernel>
std::string allow_shared_memory(Kernel* kernel, size_t bytes) {
  const cudaError_t err =
      cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                           cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
  return err == cudaSuccess ? std::string() : std::string(cudaGetErrorString(err));
}
}  // namespace tessera::cuda::device

#else

#include "kernels/cuda/simt_emulator.h"

#define TESSERA_KERNELS emulated
#define TESSERA_UNROLL
#define TESSERA_LAUNCH(grid, block, shared_bytes, stream, ...) \
  (static_cast<void>(stream), ::tessera::simt::launch((grid), (block), (shared_bytes), __VA_ARGS__))
#define TESSERA_DYNAMIC_SHARED(type, name) \
  type* name = reinterpret_cast<type*>(::tessera::simt::dynamic_shared_memory())

namespace tessera::cuda::emulated {
inline std::string launch_error() {
  return ::tessera::simt::take_launch_error();
}
template <class Kernel>
std::string allow_shared_memory(Kernel* kernel, size_t bytes) {
  ::tessera::simt::set_shared_limit(reinterpret_cast<const void*>(kernel), bytes);
  return {};
}
}  // namespace tessera::cuda::emulated

#endif
