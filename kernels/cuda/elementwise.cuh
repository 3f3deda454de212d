// The forward's elementwise kernels (RMSNorm with or without the residual add, SwiGLU, RoPE,
// embedding) and their launchers, declared in kernels/cuda/elementwise_launchers.h. Compiled by
// nvcc (elementwise.cu) and, against the emulator, into the tests.
#pragma once

#include "kernels/cuda/device_common.cuh"

namespace tessera::cuda::TESSERA_KERNELS {
namespace elementwise_detail {

constexpr int kThreads = 256;

// One block per row. With delta, x += delta first (written back, rounded to T).
template <class T>
__global__ void rms_norm_kernel(T* x, const T* delta, const T* w, float eps, int64_t d, T* y) {
  T* row = x + int64_t(blockIdx.x) * d;
  const T* drow = delta ? delta + int64_t(blockIdx.x) * d : nullptr;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v = load(row, i);
    if (drow) {
      store(row, i, v + load(drow, i));
      v = load(row, i);
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / float(d) + eps);
  T* out = y + int64_t(blockIdx.x) * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
    store(out, i, load(row, i) * inv * load(w, i));
}

template <class T>
__global__ void swiglu_kernel(const T* g, const T* u, int64_t n, T* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gate = load(g, i);
    store(out, i, gate / (1.0f + expf(-gate)) * load(u, i));
  }
}

// One block per token row; threads over (head, i < d/2).
template <class T>
__global__ void rope_kernel(T* x, const int32_t* positions, const float* inv_freq, int64_t heads,
                            int64_t d) {
  const int64_t half = d / 2, r = blockIdx.x;
  const float pos = float(positions[r]);
  for (int64_t t = threadIdx.x; t < heads * half; t += blockDim.x) {
    const int64_t h = t / half, i = t % half;
    float s, c;
    sincosf(pos * inv_freq[i], &s, &c);
    T* v = x + (r * heads + h) * d;
    const float a = load(v, i), b = load(v, i + half);
    store(v, i, a * c - b * s);
    store(v, i + half, b * c + a * s);
  }
}

// Element (r, j) per thread, over every element of y.
template <class T>
__global__ void gather_columns_kernel(const T* x, int64_t m, int64_t k, const int32_t* order,
                                      int64_t n, T* y) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m * n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / n;
    const int32_t c = order[i % n];
    store(y, i, c < 0 ? 0.0f : load(x, r * k + c));
  }
}

template <class T>
__global__ void embedding_kernel(const T* table, int64_t vocab, const int32_t* ids, int64_t d,
                                 T* out, int32_t* bad) {
  const int64_t r = blockIdx.x;
  const int32_t id = ids[r];
  if (id < 0 || id >= vocab) {
    if (bad && threadIdx.x == 0) *bad = 1;
    return;
  }
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) out[r * d + i] = table[int64_t(id) * d + i];
}

}  // namespace elementwise_detail

std::string rms_norm(Elem t, const void* x, const void* w, float eps, int64_t m, int64_t d, void* y,
                     void* stream) {
  if (m == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    // x is not written without delta.
    TESSERA_LAUNCH(unsigned(m), elementwise_detail::kThreads, 0, stream,
                   elementwise_detail::rms_norm_kernel<T>)
    (const_cast<T*>(static_cast<const T*>(x)), nullptr, static_cast<const T*>(w), eps, d,
     static_cast<T*>(y));
    return launch_error();
  });
}

std::string add_rms_norm(Elem t, void* x, const void* delta, const void* w, float eps, int64_t m,
                         int64_t d, void* y, void* stream) {
  if (m == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(unsigned(m), elementwise_detail::kThreads, 0, stream,
                   elementwise_detail::rms_norm_kernel<T>)
    (static_cast<T*>(x), static_cast<const T*>(delta), static_cast<const T*>(w), eps, d,
     static_cast<T*>(y));
    return launch_error();
  });
}

std::string swiglu(Elem t, const void* gate, const void* up, int64_t n, void* out, void* stream) {
  if (n == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(blocks_for(n, elementwise_detail::kThreads), elementwise_detail::kThreads, 0,
                   stream, elementwise_detail::swiglu_kernel<T>)
    (static_cast<const T*>(gate), static_cast<const T*>(up), n, static_cast<T*>(out));
    return launch_error();
  });
}

std::string rope(Elem t, void* x, const int32_t* positions, const float* inv_freq, int64_t m,
                 int64_t heads, int64_t d, void* stream) {
  if (m == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(unsigned(m), elementwise_detail::kThreads, 0, stream,
                   elementwise_detail::rope_kernel<T>)
    (static_cast<T*>(x), positions, inv_freq, heads, d);
    return launch_error();
  });
}

std::string gather_columns(Elem t, const void* x, int64_t m, int64_t k, const int32_t* order,
                           int64_t n, void* y, void* stream) {
  if (m == 0 || n == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(blocks_for(m * n, elementwise_detail::kThreads), elementwise_detail::kThreads,
                   0, stream, elementwise_detail::gather_columns_kernel<T>)
    (static_cast<const T*>(x), m, k, order, n, static_cast<T*>(y));
    return launch_error();
  });
}

std::string embedding(Elem t, const void* table, int64_t vocab, const int32_t* ids, int64_t n,
                      int64_t d, void* out, int32_t* bad, void* stream) {
  if (n == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(unsigned(n), elementwise_detail::kThreads, 0, stream,
                   elementwise_detail::embedding_kernel<T>)
    (static_cast<const T*>(table), vocab, ids, d, static_cast<T*>(out), bad);
    return launch_error();
  });
}

}  // namespace tessera::cuda::TESSERA_KERNELS
