// The quantized linear kernels (see kernels/cuda/quant_linear_launchers.h). Compiled by nvcc
// (quant_linear.cu) and, against the emulator, into the tests.
#pragma once

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/quant_linear_launchers.h"

namespace tessera::cuda::TESSERA_KERNELS {
namespace quant_detail {

constexpr int kThreads = 256;

// (blocks are byte-aligned: their fields are read a byte at a time)
__device__ __forceinline__ float f16_at(const uint8_t* p) {
  __half_raw raw;
  raw.x = uint16_t(p[0] | p[1] << 8);
  return __half2float(__half(raw));
}
__device__ __forceinline__ float f32_at(const uint8_t* p) {
  return __int_as_float(int(uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
                            uint32_t(p[3]) << 24));
}
// A block of format F: its elements as kernels/quant.h decodes them (x = d * code (+ offset)).
template <QFormat F>
struct Block;
template <>
struct Block<QFormat::kQ8_0> {
  static constexpr int kElements = 32, kBytes = 34;
  float d;
  const uint8_t* b;
  __device__ explicit Block(const uint8_t* p) : d(f16_at(p)), b(p) {}
  __device__ float operator[](int e) const { return d * float(int8_t(b[2 + e])); }
};
// The 32-element GGML formats: nibble i (< 16: low of qs[i], else high of qs[i - 16]), a fifth
// bit i of the little-endian u32 at qh; x = d * (q - kOffset), or d * q + m.
__device__ __forceinline__ int nibble(const uint8_t* qs, int i) {
  return i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
}
__device__ __forceinline__ int fifth_bit(const uint8_t* qh, int i) {
  return (qh[i / 8] >> (i % 8)) & 1;
}
template <>
struct Block<QFormat::kQ4_0> {
  static constexpr int kElements = 32, kBytes = 18;
  float d;
  const uint8_t* b;
  __device__ explicit Block(const uint8_t* p) : d(f16_at(p)), b(p) {}
  __device__ float operator[](int e) const { return d * float(nibble(b + 2, e) - 8); }
};
template <>
struct Block<QFormat::kQ4_1> {
  static constexpr int kElements = 32, kBytes = 20;
  float d, m;
  const uint8_t* b;
  __device__ explicit Block(const uint8_t* p) : d(f16_at(p)), m(f16_at(p + 2)), b(p) {}
  __device__ float operator[](int e) const { return d * float(nibble(b + 4, e)) + m; }
};
template <>
struct Block<QFormat::kQ5_0> {
  static constexpr int kElements = 32, kBytes = 22;
  float d;
  const uint8_t* b;
  __device__ explicit Block(const uint8_t* p) : d(f16_at(p)), b(p) {}
  __device__ float operator[](int e) const {
    return d * float((nibble(b + 6, e) | fifth_bit(b + 2, e) << 4) - 16);
  }
};
template <>
struct Block<QFormat::kQ5_1> {
  static constexpr int kElements = 32, kBytes = 24;
  float d, m;
  const uint8_t* b;
  __device__ explicit Block(const uint8_t* p) : d(f16_at(p)), m(f16_at(p + 2)), b(p) {}
  __device__ float operator[](int e) const {
    return d * float(nibble(b + 8, e) | fifth_bit(b + 4, e) << 4) + m;
  }
};
// q4_k and q5_k: 8 sub-blocks of 32, each with a 6-bit scale and min (kernels/quant.h's packing);
// element l of sub-block s = 2c + h has q = (qs[32c + l] >> 4h) & 15 (and bit s of qh[l]).
template <bool kFifthBit>
struct KBlock {
  static constexpr int kElements = 256, kBytes = kFifthBit ? 176 : 144;
  float d, dmin;
  const uint8_t* b;
  __device__ explicit KBlock(const uint8_t* p) : d(f16_at(p)), dmin(f16_at(p + 2)), b(p) {}
  __device__ float operator[](int e) const {
    const int s = e / 32, l = e % 32;
    const uint8_t* sc6 = b + 4;
    const int sc = s < 4 ? sc6[s] & 63 : (sc6[s + 4] & 15) | (sc6[s - 4] >> 6) << 4;
    const int m = s < 4 ? sc6[s + 4] & 63 : (sc6[s + 4] >> 4) | (sc6[s] >> 6) << 4;
    const uint8_t* qs = b + (kFifthBit ? 48 : 16);
    int q = (qs[32 * (s / 2) + l] >> (4 * (s % 2))) & 15;
    if (kFifthBit) q |= ((b[16 + l] >> s) & 1) << 4;
    return (d * float(sc)) * float(q) - (dmin * float(m));
  }
};
template <>
struct Block<QFormat::kQ4_K> : KBlock<false> {
  using KBlock<false>::KBlock;
};
template <>
struct Block<QFormat::kQ5_K> : KBlock<true> {
  using KBlock<true>::KBlock;
};
// q6_k: element 128h + 32j + l has q = ((ql[64h + 32(j % 2) + l] >> 4(j / 2)) & 15) |
// ((qh[32h + l] >> 2j) & 3) << 4; x = (d * scales[i / 16]) * (q - 32).
template <>
struct Block<QFormat::kQ6_K> {
  static constexpr int kElements = 256, kBytes = 210;
  float d;
  const uint8_t* b;
  __device__ explicit Block(const uint8_t* p) : d(f16_at(p + 208)), b(p) {}
  __device__ float operator[](int e) const {
    const int h = e / 128, j = (e % 128) / 32, l = e % 32;
    const int q = ((b[64 * h + 32 * (j % 2) + l] >> (4 * (j / 2))) & 15) |
                  ((b[128 + 32 * h + l] >> (2 * j)) & 3) << 4;
    return (d * float(int8_t(b[192 + e / 16]))) * float(q - 32);
  }
};
template <int N>
struct Int4Block {
  static constexpr int kElements = N, kBytes = 4 + N / 2;
  float d, z;
  const uint8_t* b;
  __device__ explicit Int4Block(const uint8_t* p) : d(f16_at(p)), z(float(p[2])), b(p) {}
  __device__ float operator[](int e) const {  // chunk e / 32 in q4_0's nibble order
    const int j = e % 32;
    const uint8_t byte = b[4 + 16 * (e / 32) + j % 16];
    return d * (float(j < 16 ? byte & 15 : byte >> 4) - z);
  }
};
template <>
struct Block<QFormat::kI4G32> : Int4Block<32> {
  using Int4Block<32>::Int4Block;
};
template <>
struct Block<QFormat::kI4G128> : Int4Block<128> {
  using Int4Block<128>::Int4Block;
};
template <>
struct Block<QFormat::kF8E4M3> {
  static constexpr int kElements = 128, kBytes = 132;
  float d;
  const uint8_t* b;
  __device__ explicit Block(const uint8_t* p) : d(f32_at(p)), b(p) {}
  __device__ float operator[](int e) const { return d * e4m3(b[4 + e]); }
};

// Warp (blockIdx.x, blockIdx.y) computes output feature blockIdx.x for rows [8 blockIdx.y, +8) of
// x: lane l takes the weight row's blocks l, l + 32, ...; the lanes' sums are added by warp_sum.
template <class T, QFormat F>
__global__ void gemv_kernel(const T* x, const uint8_t* w, const T* bias, int64_t m, int64_t n,
                            int64_t k, T* y) {
  using B = Block<F>;
  constexpr int R = int(kQuantLinearTileRows);
  const int64_t col = blockIdx.x, r0 = int64_t(blockIdx.y) * R;
  const int rows = int(m - r0 < R ? m - r0 : R);
  const int64_t blocks = k / B::kElements;
  const uint8_t* row = w + col * blocks * B::kBytes;
  float acc[R];
  for (int r = 0; r < R; ++r) acc[r] = 0.0f;
  for (int64_t b = threadIdx.x; b < blocks; b += 32) {
    const B block(row + b * B::kBytes);
    const int64_t at = b * B::kElements;
    for (int e = 0; e < B::kElements; ++e) {
      const float v = block[e];
      for (int r = 0; r < rows; ++r) acc[r] += v * load(x, (r0 + r) * k + at + e);
    }
  }
  for (int r = 0; r < rows; ++r) {
    const float s = warp_sum(acc[r]);
    if (threadIdx.x == 0) store(y, (r0 + r) * n + col, s + (bias ? load(bias, col) : 0.0f));
  }
}

template <class T, QFormat F>
__global__ void dequantize_kernel(const uint8_t* w, int64_t k, const int32_t* ids, T* out) {
  using B = Block<F>;
  const int64_t r = blockIdx.x, src = ids ? ids[r] : r;
  const uint8_t* row = w + src * (k / B::kElements) * B::kBytes;
  for (int64_t i = threadIdx.x; i < k; i += blockDim.x)
    store(out, r * k + i, B(row + (i / B::kElements) * B::kBytes)[int(i % B::kElements)]);
}

// f(std::integral_constant<QFormat, F>{}) for the format f.
template <class Fn>
std::string with_format(QFormat f, Fn&& fn) {
  switch (f) {
    case QFormat::kQ8_0: return fn(std::integral_constant<QFormat, QFormat::kQ8_0>{});
    case QFormat::kQ4_0: return fn(std::integral_constant<QFormat, QFormat::kQ4_0>{});
    case QFormat::kQ4_1: return fn(std::integral_constant<QFormat, QFormat::kQ4_1>{});
    case QFormat::kQ5_0: return fn(std::integral_constant<QFormat, QFormat::kQ5_0>{});
    case QFormat::kQ5_1: return fn(std::integral_constant<QFormat, QFormat::kQ5_1>{});
    case QFormat::kQ4_K: return fn(std::integral_constant<QFormat, QFormat::kQ4_K>{});
    case QFormat::kQ5_K: return fn(std::integral_constant<QFormat, QFormat::kQ5_K>{});
    case QFormat::kQ6_K: return fn(std::integral_constant<QFormat, QFormat::kQ6_K>{});
    case QFormat::kI4G32: return fn(std::integral_constant<QFormat, QFormat::kI4G32>{});
    case QFormat::kI4G128: return fn(std::integral_constant<QFormat, QFormat::kI4G128>{});
    case QFormat::kF8E4M3: return fn(std::integral_constant<QFormat, QFormat::kF8E4M3>{});
  }
  return "unknown quantized format";
}

}  // namespace quant_detail

std::string quant_linear(Elem t, QFormat f, const void* x, const void* w, const void* bias,
                         int64_t m, int64_t n, int64_t k, void* y, void* stream) {
  if (m == 0 || n == 0) return {};
  if (m > kQuantLinearMaxRows)
    return "quant_linear takes at most " + std::to_string(kQuantLinearMaxRows) + " rows, got " +
           std::to_string(m);
  if (n > 2147483647) return "quant_linear takes at most 2^31 - 1 output features";
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    return quant_detail::with_format(f, [&](auto format) {
      constexpr QFormat F = decltype(format)::value;
      const unsigned tiles = unsigned((m + kQuantLinearTileRows - 1) / kQuantLinearTileRows);
      TESSERA_LAUNCH(dim3(unsigned(n), tiles), 32, 0, stream, quant_detail::gemv_kernel<T, F>)
      (static_cast<const T*>(x), static_cast<const uint8_t*>(w), static_cast<const T*>(bias), m,
       n, k, static_cast<T*>(y));
      return launch_error();
    });
  });
}

std::string dequantize_rows(Elem t, QFormat f, const void* w, int64_t k, const int32_t* ids,
                            int64_t rows, void* out, void* stream) {
  if (rows == 0 || k == 0) return {};
  if (rows > 2147483647) return "dequantize_rows takes at most 2^31 - 1 rows";
  return with_elem(t, [&](auto tag) {
    using T = decltype(tag);
    return quant_detail::with_format(f, [&](auto format) {
      constexpr QFormat F = decltype(format)::value;
      TESSERA_LAUNCH(unsigned(rows), quant_detail::kThreads, 0, stream,
                     quant_detail::dequantize_kernel<T, F>)
      (static_cast<const uint8_t*>(w), k, ids, static_cast<T*>(out));
      return launch_error();
    });
  });
}

}  // namespace tessera::cuda::TESSERA_KERNELS
