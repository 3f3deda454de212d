// What the kernel sources share: element loads and stores in float32, the element-type dispatch
// of the launchers, and block/warp reductions. Included by kernels/cuda/*.cuh only.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cuda/elementwise_launchers.h"
#include "kernels/cuda/simt.h"

namespace tessera::cuda::TESSERA_KERNELS {

// float8_e4m3fn, exactly as kernels/dtype.h decodes it.
__device__ __forceinline__ float e4m3(uint8_t q) {
  const uint32_t exp = (q >> 3) & 15u, mant = q & 7u;
  if (exp == 15 && mant == 7) return __int_as_float(0x7fc00000);
  // subnormal: mant / 8 * 2^-6; normal: (1 + mant / 8) * 2^(exp - 7)
  const float magnitude =
      exp == 0 ? float(mant) * (1.0f / 512) : __int_as_float(int((exp + 120u) << 23 | mant << 20));
  return q & 0x80u ? -magnitude : magnitude;
}
// x to float8_e4m3fn as kernels/dtype.h encodes it: to nearest, ties to the even code,
// saturating at 448, NaN kept.
__device__ __forceinline__ uint8_t to_e4m3(float x) {
  if (x != x) return 0x7f;
  const uint8_t sign = __float_as_int(x) < 0 ? 0x80u : 0u;
  const float a = fabsf(x);
  if (a >= 448.0f) return uint8_t(sign | 0x7eu);
  // Below 2^-6: multiples of 2^-9 (code 8 is 2^-6, the smallest normal, so rounding up is right).
  if (a < 1.0f / 64) return uint8_t(sign | uint32_t(rintf(a * 512.0f)));
  const uint32_t u = uint32_t(__float_as_int(a)), rest = u & 0xfffffu;
  uint32_t code = ((u >> 23) - 120u) << 3 | ((u >> 20) & 7u);
  if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) ++code;  // may carry into the exponent
  return uint8_t(sign | code);
}
// A KV cache's float8_e4m3fn element.
struct e4m3_t {
  uint8_t bits;
};

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
__device__ __forceinline__ float load(const e4m3_t* p, int64_t i) {
  return e4m3(p[i].bits);
}
__device__ __forceinline__ void store(e4m3_t* p, int64_t i, float v) {
  p[i].bits = to_e4m3(v);
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
    case Elem::kE4M3:
      return "e4m3 elements are kept only by a KV cache";
  }
  return "unknown element type";
}
// The same for a KV cache's types: those of with_elem, and e4m3_t.
template <class F>
std::string with_kv_elem(Elem t, F&& f) {
  if (t == Elem::kE4M3) return f(e4m3_t{});
  return with_elem(t, f);
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
