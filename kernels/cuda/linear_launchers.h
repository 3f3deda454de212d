// Linear layers on the GPU: y(m, n) = x(m, k) @ w(n, k)^T [+ bias(n)], float32 accumulation,
// x, w, bias and y all of one element type. Plain C++17, no CUDA types.
//   linear_simple: one thread per output, the sum over k in order (kernels/cuda/linear.cuh); the
//     emulator's linear, and on the GPU a second opinion on cuBLAS in the tests;
//   add_bias: y(m, n) += bias(n);
//   device::linear: cuBLAS (cublasGemmEx, CUBLAS_COMPUTE_32F: no TF32) then add_bias.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cuda/elementwise_launchers.h"

namespace tessera::cuda {

#define TESSERA_LINEAR_LAUNCHERS                                                               \
  std::string linear_simple(Elem t, const void* x, const void* w, const void* bias, int64_t m, \
                            int64_t n, int64_t k, void* y, void* stream);                      \
  std::string add_bias(Elem t, void* y, const void* bias, int64_t m, int64_t n, void* stream);

namespace device {
TESSERA_LINEAR_LAUNCHERS
std::string linear(Elem t, const void* x, const void* w, const void* bias, int64_t m, int64_t n,
                   int64_t k, void* y, void* stream);
}  // namespace device
namespace emulated {
TESSERA_LINEAR_LAUNCHERS
// The emulator has no cuBLAS: its linear is linear_simple.
inline std::string linear(Elem t, const void* x, const void* w, const void* bias, int64_t m,
                          int64_t n, int64_t k, void* y, void* stream) {
  return linear_simple(t, x, w, bias, m, n, k, y, stream);
}
}  // namespace emulated

#undef TESSERA_LINEAR_LAUNCHERS

}  // namespace tessera::cuda
