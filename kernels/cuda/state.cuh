// The residual add, rounding to a cache's type, and the attention state's finish, merge and the
// KV write (see kernels/cuda/state_launchers.h). Compiled by nvcc (state.cu) and, against the
// emulator, into the tests.
#pragma once

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/state_launchers.h"

namespace tessera::cuda::TESSERA_KERNELS {
namespace state_detail {

constexpr int kThreads = 256;

template <class T>
__global__ void add_kernel(T* a, const T* b, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store(a, i, load(a, i) + load(b, i));
}

template <class From, class To>
__global__ void convert_kernel(const From* src, To* dst, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store(dst, i, load(src, i));
}

// splitmix64 of the element index: 24 uniform bits (the host's ops::uniform_bits).
__device__ __forceinline__ float uniform_bits(uint64_t seed, uint64_t e) {
  uint64_t z = seed + (e + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(z >> 40) * (1.0f / 16777216.0f);
}

template <class T>
__global__ void fill_kernel(T* out, int64_t rows, int64_t cols, int64_t full_cols, int64_t row0,
                            int64_t col0, uint64_t seed, float offset, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * cols;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i % cols;
    const float x = 2.0f * uniform_bits(seed, uint64_t((row0 + r) * full_cols + col0 + c)) - 1.0f;
    store(out, i, __fadd_rn(offset, __fmul_rn(scale, x)));  // no FMA: the host's numbers
  }
}

template <class T>
__global__ void round_kernel(float* x, int64_t n, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    T r[1];
    store(r, 0, x[i] / scale);
    x[i] = load(r, 0) * scale;
  }
}

template <class T>
__global__ void finish_kernel(const float* acc, const float* sum, int64_t n, int64_t d, T* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n * d;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float s = sum[i / d];
    store(out, i, s > 0 ? acc[i] * (1.0f / s) : 0.0f);
  }
}

// One thread per row of the state (the few rows SP decode merges).
__global__ void merge_kernel(float* acc, float* mx, float* sum, const float* oacc, const float* omx,
                             const float* osum, int64_t n, int64_t d) {
  const int64_t s = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (s >= n || omx[s] == -INFINITY) return;  // the other saw no key
  const float m = fmaxf(mx[s], omx[s]), a = expf(mx[s] - m), b = expf(omx[s] - m);
  for (int64_t i = 0; i < d; ++i) acc[s * d + i] = acc[s * d + i] * a + oacc[s * d + i] * b;
  sum[s] = sum[s] * a + osum[s] * b;
  mx[s] = m;
}

// Block per row; threads over the row's kv_heads * d values.
template <class T>
__global__ void store_kv_kernel(T* k_pool, T* v_pool, const float* k, const float* v,
                                const int64_t* slots, int64_t kv_heads, int64_t block_size,
                                int64_t d, float k_scale, float v_scale) {
  const int64_t r = blockIdx.x, slot = slots[r];
  if (slot < 0) return;
  const int64_t block = slot / block_size, in_block = slot % block_size;
  for (int64_t e = threadIdx.x; e < kv_heads * d; e += blockDim.x) {
    const int64_t h = e / d, i = e % d;
    const int64_t at = ((block * kv_heads + h) * block_size + in_block) * d + i;
    store(k_pool, at, k[r * kv_heads * d + e] / k_scale);
    store(v_pool, at, v[r * kv_heads * d + e] / v_scale);
  }
}

}  // namespace state_detail

std::string add(Elem t, void* a, const void* b, int64_t n, void* stream) {
  if (n == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(blocks_for(n, state_detail::kThreads), state_detail::kThreads, 0, stream,
                   state_detail::add_kernel<T>)
    (static_cast<T*>(a), static_cast<const T*>(b), n);
    return launch_error();
  });
}

std::string convert(Elem from, const void* src, Elem to, void* dst, int64_t n, void* stream) {
  if (n == 0) return {};
  return with_elem(from, [&](auto from_tag) {
    return with_elem(to, [&](auto to_tag) {
      using From = decltype(from_tag);
      using To = decltype(to_tag);
      TESSERA_LAUNCH(blocks_for(n, state_detail::kThreads), state_detail::kThreads, 0, stream,
                     state_detail::convert_kernel<From, To>)
      (static_cast<const From*>(src), static_cast<To*>(dst), n);
      return launch_error();
    });
  });
}

std::string fill_uniform(Elem t, void* out, int64_t rows, int64_t cols, int64_t full_cols,
                         int64_t row0, int64_t col0, uint64_t seed, float offset, float scale,
                         void* stream) {
  if (rows * cols == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(blocks_for(rows * cols, state_detail::kThreads), state_detail::kThreads, 0,
                   stream, state_detail::fill_kernel<T>)
    (static_cast<T*>(out), rows, cols, full_cols, row0, col0, seed, offset, scale);
    return launch_error();
  });
}

std::string round_through(Elem t, float* x, int64_t n, float scale, void* stream) {
  if (n == 0 || t == Elem::kF32) return {};
  return with_kv_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(blocks_for(n, state_detail::kThreads), state_detail::kThreads, 0, stream,
                   state_detail::round_kernel<T>)
    (x, n, scale);
    return launch_error();
  });
}

std::string attention_finish(Elem t, const float* acc, const float* sum, int64_t n, int64_t d,
                             void* out, void* stream) {
  if (n == 0) return {};
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(blocks_for(n * d, state_detail::kThreads), state_detail::kThreads, 0, stream,
                   state_detail::finish_kernel<T>)
    (acc, sum, n, d, static_cast<T*>(out));
    return launch_error();
  });
}

std::string attention_merge(float* acc, float* mx, float* sum, const float* other_acc,
                            const float* other_mx, const float* other_sum, int64_t n, int64_t d,
                            void* stream) {
  if (n == 0) return {};
  TESSERA_LAUNCH(blocks_for(n, state_detail::kThreads), state_detail::kThreads, 0, stream,
                 state_detail::merge_kernel)
  (acc, mx, sum, other_acc, other_mx, other_sum, n, d);
  return launch_error();
}

std::string store_kv(Elem t, void* k_pool, void* v_pool, const float* k, const float* v,
                     const int64_t* slots, int64_t rows, int64_t kv_heads, int64_t block_size,
                     int64_t d, float k_scale, float v_scale, void* stream) {
  if (rows == 0) return {};
  if (rows > 0x7fffffff) return "store_kv: too many rows";
  return with_kv_elem(t, [&](auto tag) {
    using T = decltype(tag);
    TESSERA_LAUNCH(unsigned(rows), state_detail::kThreads, 0, stream,
                   state_detail::store_kv_kernel<T>)
    (static_cast<T*>(k_pool), static_cast<T*>(v_pool), k, v, slots, kv_heads, block_size, d,
     k_scale, v_scale);
    return launch_error();
  });
}

}  // namespace tessera::cuda::TESSERA_KERNELS
