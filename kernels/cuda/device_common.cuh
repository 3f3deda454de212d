// What the kernel sources share: element loads and stores in float32, the element-type dispatch
// of the launchers, and block/warp reductions. Included by kernels/cuda/*.cuh only.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cuda/elementwise_launchers.h"
#include "kernels/cuda/simt.h"

namespace tessera::cuda::TESSERA_KERNELS {

__device__ __forceinline__ float load(const float* p, int64_t i) {
  return p[i];
}
__device__ __forceinline__ float load(const __half* p, int64_t i) {
  return __half2float(p[i]);
}
__device__ __forceinline__ float load(const __nv_bfloat16* p, int64_t i) {
  return __bfloat162float(p[i]);
}
__device__ __forceinline__ void store(float* p, int64_t i, float v) {
  p[i] = v;
}
__device__ __forceinline__ void store(__half* p, int64_t i, float v) {
  p[i] = __float2half_rn(v);
}
__device__ __forceinline__ void store(__nv_bfloat16* p, int64_t i, float v) {
  p[i] = __float2bfloat16_rn(v);
}

// f(T{}) with T the C++ type of t: float, __half or __nv_bfloat16.
template <class F>
std::string with_elem(Elem t, F&& f) {
  switch (t) {
    case Elem::kF32:
      return f(float{});
    case Elem::kF16:
      return f(__half{});
    case Elem::kBF16:
      return f(__nv_bfloat16{});
  }
  return "unknown element type";
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The sum over the block of each thread's v; every thread gets it. blockDim.x a multiple of 32.
__device__ __forceinline__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  v = warp_sum(v);
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float total = lane < warps ? warp_sums[lane] : 0.0f;
    total = warp_sum(total);
    if (lane == 0) warp_sums[0] = total;
  }
  __syncthreads();
  const float total = warp_sums[0];
  __syncthreads();  // warp_sums may be reused by the caller's next block_sum
  return total;
}

inline unsigned blocks_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return unsigned(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace tessera::cuda::TESSERA_KERNELS
