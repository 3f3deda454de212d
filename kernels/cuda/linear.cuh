// The simple linear kernel and the bias add (see kernels/cuda/linear_launchers.h). Compiled by
// nvcc (linear.cu) and, against the emulator, into the tests.
#pragma once

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/linear_launchers.h"

namespace tessera::cuda::TESSERA_KERNELS {
namespace linear_detail {

constexpr int kThreads = 256;

// Thread (row, col) of y: the dot product of x's row and w's row col, in order over k.
template <class T>
__global__ void simple_kernel(const T* x, const T* w, const T* bias, int64_t n, int64_t k, T* y) {
  const int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, row = blockIdx.y;
  if (col >= n) return;
  const T* xr = x + row * k;
  const T* wr = w + col * k;
  float acc = 0.0f;
  for (int64_t i = 0; i < k; ++i) acc += load(xr, i) * load(wr, i);
  if (bias) acc += load(bias, col);
  store(y, row * n + col, acc);
}

template <class T>
__global__ void bias_kernel(T* y, const T* bias, int64_t m, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m * n;
       i += int64_t(gridDim.x) * blockDim.x)
    store(y, i, load(y, i) + load(bias, i % n));
}

}  // namespace linear_detail

std::string linear_simple(Elem t, const void* x, const void* w, const void* bias, int64_t m,
                          int64_t n, int64_t k, void* y, void* stream) {
  if (m == 0 || n == 0) return {};
  if (m > 65535) return "linear_simple takes at most 65535 rows, got " + std::to_string(m);
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    const dim3 grid(blocks_for(n, linear_detail::kThreads), unsigned(m));
    TESSERA_LAUNCH(grid, linear_detail::kThreads, 0, stream, linear_detail::simple_kernel<T>)
    (static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(bias), n, k,
     static_cast<T*>(y));
    return launch_error();
  });
}

std::string add_bias(Elem t, void* y, const void* bias, int64_t m, int64_t n, void* stream) {
  if (m == 0 || n == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(blocks_for(m * n, linear_detail::kThreads), linear_detail::kThreads, 0, stream,
                   linear_detail::bias_kernel<T>)
    (static_cast<T*>(y), static_cast<const T*>(bias), m, n);
    return launch_error();
  });
}

}  // namespace tessera::cuda::TESSERA_KERNELS
