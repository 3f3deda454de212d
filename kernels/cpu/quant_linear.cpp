#include "kernels/cpu/quant_linear.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cpu/skinny_gemm.h"
#include "kernels/dtype.h"
#include "kernels/quant.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tessera::ops::cpu {
namespace {

// ---- every format as chunks of 32 ---------------------------------------------------------------
// A 32-element chunk j of a weight row is, whatever the format, w[i] = D * S[h] * c[i] + M[h]
// with c[i] a code (at most 6 bits, or q8_0's signed bytes), S[h] an integer scale and M[h] an
// offset for each half h of 16 elements, and D a float. Its dot product with an activation block
// (x[i] = d q[i], s[h] = d * sum of q over half h) is then
//   D * d * sum_i (S[h] c[i]) q[i]  +  M[0] s[0] + M[1] s[1],
// the first sum in integers: the codes as 16-bit lanes, vpmaddwd against q in pairs. Where the
// halves share S (every format but q6_k) it goes into the float scale D S; q6_k's codes are
// multiplied by theirs (|S c| <= 128 * 32 fits 16 bits, and a lane's four products stay below
// 2^31). Every product D * S[h] * c[i] is exact in float32, so a chunk decoded to float is
// kernels/quant.h's value, bit for bit.
//
// Format<F>: kChunks per block, kBytes per block, kOffsets (whether M is ever nonzero); scales(block, scale, m0, m1) gives each chunk's
// float scale D S and offsets M[0], M[1]; codes(block, j) gives chunk j's codes.

#if defined(__x86_64__)

#define TESSERA_AVX2 __attribute__((target("avx2,fma,f16c"))) inline

TESSERA_AVX2 float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 16 bytes at p as 16-bit lanes.
TESSERA_AVX2 __m256i bytes_16(const uint8_t* p) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

struct Codes {
  __m256i lo, hi;  // elements [0, 16) and [16, 32) as 16-bit integers
};

// The 4-bit codes of 16 bytes: low nibbles are elements 0..15, high nibbles 16..31.
TESSERA_AVX2 Codes nibbles(const uint8_t* qs) {
  const __m256i v = bytes_16(qs);
  return {_mm256_and_si256(v, _mm256_set1_epi16(15)), _mm256_srli_epi16(v, 4)};
}

// 16 where bit i of the 16-bit word `bits` is set, in lane i.
TESSERA_AVX2 __m256i bits_as_16(uint32_t bits) {
  const __m256i lane_bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                             4096, 8192, 16384, -32768);
  const __m256i set =
      _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(int16_t(bits)), lane_bit), lane_bit);
  return _mm256_and_si256(set, _mm256_set1_epi16(16));
}

// The 5-bit codes: nibbles plus bit i of the little-endian u32 at qh.
TESSERA_AVX2 Codes nibbles_and_fifth(const uint8_t* qs, const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const Codes n = nibbles(qs);
  return {_mm256_or_si256(n.lo, bits_as_16(bits & 0xffff)), _mm256_or_si256(n.hi, bits_as_16(bits >> 16))};
}

template <DType>
struct Format;

template <>
struct Format<DType::kQ8_0> {
  static constexpr bool kOffsets = false;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 34;
  TESSERA_AVX2 static void scales(const uint8_t* b, float* d, float* m0, float* m1) {
    d[0] = f16(b);
    m0[0] = m1[0] = 0;
  }
  template <int>
  TESSERA_AVX2 static Codes codes(const uint8_t* b) {
    const auto* q = reinterpret_cast<const __m128i*>(b + 2);
    return {_mm256_cvtepi8_epi16(_mm_loadu_si128(q)), _mm256_cvtepi8_epi16(_mm_loadu_si128(q + 1))};
  }
};

template <>
struct Format<DType::kQ4_0> {
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 18;
  TESSERA_AVX2 static void scales(const uint8_t* b, float* d, float* m0, float* m1) {
    d[0] = f16(b);
    m0[0] = m1[0] = -8 * d[0];
  }
  template <int>
  TESSERA_AVX2 static Codes codes(const uint8_t* b) { return nibbles(b + 2); }
};

template <>
struct Format<DType::kQ4_1> {
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 20;
  TESSERA_AVX2 static void scales(const uint8_t* b, float* d, float* m0, float* m1) {
    d[0] = f16(b);
    m0[0] = m1[0] = f16(b + 2);
  }
  template <int>
  TESSERA_AVX2 static Codes codes(const uint8_t* b) { return nibbles(b + 4); }
};

template <>
struct Format<DType::kQ5_0> {
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 22;
  TESSERA_AVX2 static void scales(const uint8_t* b, float* d, float* m0, float* m1) {
    d[0] = f16(b);
    m0[0] = m1[0] = -16 * d[0];
  }
  template <int>
  TESSERA_AVX2 static Codes codes(const uint8_t* b) { return nibbles_and_fifth(b + 6, b + 2); }
};

template <>
struct Format<DType::kQ5_1> {
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 24;
  TESSERA_AVX2 static void scales(const uint8_t* b, float* d, float* m0, float* m1) {
    d[0] = f16(b);
    m0[0] = m1[0] = f16(b + 2);
  }
  template <int>
  TESSERA_AVX2 static Codes codes(const uint8_t* b) { return nibbles_and_fifth(b + 8, b + 4); }
};

// q4_k and q5_k: sub-block j (chunk j) has code nibble j % 2 of qs[32 (j / 2) + l] (and bit j of
// qh[l]); D S = d * its 6-bit scale, M = -dmin * its 6-bit min.
template <bool kFifthBit>
struct KFormat {
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 8;
  static constexpr size_t kBytes = kFifthBit ? 176 : 144;
  TESSERA_AVX2 static void scales(const uint8_t* b, float* d, float* m0, float* m1) {
    // The eight 6-bit scales into bytes 0..7 of sc, the mins into those of mn (the packing of
    // kernels/quant.h, four sub-blocks at a time)
    uint32_t w[3];
    std::memcpy(w, b + 4, 12);
    const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, top2 = 0x03030303u;
    const uint64_t sc = (w[0] & low6) | uint64_t((w[2] & low4) | (((w[0] >> 6) & top2) << 4)) << 32;
    const uint64_t mn =
        (w[1] & low6) | uint64_t(((w[2] >> 4) & low4) | (((w[1] >> 6) & top2) << 4)) << 32;
    const auto floats = [](uint64_t bytes) {
      return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(bytes))));
    };
    _mm256_storeu_ps(d, _mm256_mul_ps(floats(sc), _mm256_set1_ps(f16(b))));
    const __m256 min = _mm256_mul_ps(floats(mn), _mm256_set1_ps(-f16(b + 2)));
    _mm256_storeu_ps(m0, min);
    _mm256_storeu_ps(m1, min);
  }
  template <int j>
  TESSERA_AVX2 static Codes codes(const uint8_t* b) {
    const uint8_t* qs = b + (kFifthBit ? 48 : 16) + 32 * (j / 2);
    Codes c{bytes_16(qs), bytes_16(qs + 16)};
    const __m256i nibble = _mm256_set1_epi16(15);
    if constexpr (j % 2) {
      c.lo = _mm256_srli_epi16(c.lo, 4);
      c.hi = _mm256_srli_epi16(c.hi, 4);
    } else {
      c.lo = _mm256_and_si256(c.lo, nibble);
      c.hi = _mm256_and_si256(c.hi, nibble);
    }
    if constexpr (kFifthBit) {  // bit j of qh[l], as 16
      const __m256i one = _mm256_set1_epi16(1);
      const __m256i lo = _mm256_and_si256(_mm256_srli_epi16(bytes_16(b + 16), j), one);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(bytes_16(b + 32), j), one);
      c.lo = _mm256_or_si256(c.lo, _mm256_slli_epi16(lo, 4));
      c.hi = _mm256_or_si256(c.hi, _mm256_slli_epi16(hi, 4));
    }
    return c;
  }
};
template <>
struct Format<DType::kQ4_K> : KFormat<false> {};
template <>
struct Format<DType::kQ5_K> : KFormat<true> {};

// q6_k: chunk j = 4h + t (elements 128h + 32t + l) has low nibble t / 2 of ql[64h + 32(t % 2) +
// l] and bits 2t of qh[32h + l] (q + 32); its halves have the int8 scales 2j and 2j + 1. The codes
// here are (q - 32) S (signed, |(q - 32) S| <= 32 * 128), so D = d and there are no offsets.
template <>
struct Format<DType::kQ6_K> {
  static constexpr bool kOffsets = false;
  static constexpr int kChunks = 8;
  static constexpr size_t kBytes = 210;
  TESSERA_AVX2 static void scales(const uint8_t* b, float* d, float* m0, float* m1) {
    const float scale = f16(b + 208);
    for (int j = 0; j < 8; ++j) {
      d[j] = scale;
      m0[j] = m1[j] = 0;
    }
  }
  template <int j>
  TESSERA_AVX2 static Codes codes(const uint8_t* b) {
    constexpr int h = j / 4, t = j % 4;
    const uint8_t* ql = b + 64 * h + 32 * (t % 2);
    const uint8_t* qh = b + 128 + 32 * h;
    const __m256i nibble = _mm256_set1_epi16(15), two = _mm256_set1_epi16(3);
    const auto code = [&](int half) {
      const __m256i low =
          _mm256_and_si256(_mm256_srli_epi16(bytes_16(ql + 16 * half), 4 * (t / 2)), nibble);
      const __m256i high =
          _mm256_and_si256(_mm256_srli_epi16(bytes_16(qh + 16 * half), 2 * t), two);
      return _mm256_sub_epi16(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)), _mm256_set1_epi16(32));
    };
    const auto* s = reinterpret_cast<const int8_t*>(b + 192);
    return {_mm256_mullo_epi16(code(0), _mm256_set1_epi16(s[2 * j])),
            _mm256_mullo_epi16(code(1), _mm256_set1_epi16(s[2 * j + 1]))};
  }
};

// fn(std::integral_constant<int, j>) for j = 0 .. J - 1, unrolled (chunk indices as constants).
template <int J, class Fn>
TESSERA_AVX2 void each_chunk(Fn&& fn) {
  [&]<int... j>(std::integer_sequence<int, j...>) {
    (fn(std::integral_constant<int, j>{}), ...);
  }(std::make_integer_sequence<int, J>{});
}

TESSERA_AVX2 float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// R activation rows (their blocks at act + r * act_stride) against the C weight rows from row n:
// y[r * ldy + n + c]. Each (row, weight row) pair sums its chunks in order in its own
// accumulator, whatever R and C are.
template <DType F, int R, int C>
TESSERA_AVX2 void integer_tile(const ActivationBlock* act, int64_t act_stride, int64_t blocks,
                               const uint8_t* w, size_t row_bytes, int64_t n, float* y,
                               int64_t ldy) {
  using Fmt = Format<F>;
  constexpr int J = Fmt::kChunks;
  __m256 acc[R][C];
  float offsets[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      acc[r][c] = _mm256_setzero_ps();
      offsets[r][c] = 0;
    }
  const uint8_t* rows = w + size_t(n) * row_bytes;
  for (int64_t b = 0; b < blocks; ++b) {
    // The weights stream from memory once: ask for every line of the same block two tiles on
    // ahead of time. (Measured on 2026-12-06: the first line of the next tile's blocks only left
    // q6_k's 210-byte blocks at a third of the bandwidth; two tiles on beat one by ~10%.)
    for (int c = 0; c < C; ++c) {
      const uint8_t* p = rows + size_t(2 * C + c) * row_bytes + size_t(b) * Fmt::kBytes;
      for (uintptr_t line = reinterpret_cast<uintptr_t>(p) & ~uintptr_t(63);
           line < reinterpret_cast<uintptr_t>(p + Fmt::kBytes); line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(line), _MM_HINT_T0);
    }
    float d[C][J], m0[C][J], m1[C][J];
    for (int c = 0; c < C; ++c)
      Fmt::scales(rows + size_t(c) * row_bytes + size_t(b) * Fmt::kBytes, d[c], m0[c], m1[c]);
    each_chunk<J>([&](auto chunk) {
      constexpr int j = decltype(chunk)::value;
      Codes codes[C];
      for (int c = 0; c < C; ++c)
        codes[c] = Fmt::template codes<j>(rows + size_t(c) * row_bytes + size_t(b) * Fmt::kBytes);
      for (int r = 0; r < R; ++r) {
        const ActivationBlock& a = act[r * act_stride + b * J + j];
        const __m256i qlo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q));
        const __m256i qhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.q + 16));
        for (int c = 0; c < C; ++c) {
          const __m256i dot = _mm256_add_epi32(_mm256_madd_epi16(codes[c].lo, qlo),
                                               _mm256_madd_epi16(codes[c].hi, qhi));
          acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(d[c][j] * a.d),
                                      acc[r][c]);
          if constexpr (Fmt::kOffsets) offsets[r][c] += m0[c][j] * a.s[0] + m1[c][j] * a.s[1];
        }
      }
    });
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + n + c] = hsum(acc[r][c]) + offsets[r][c];
}

// Activation rows r0 .. r0 + R - 1 against weight rows [n0, n1), C at a time (then one).
template <DType F, int R, int C>
TESSERA_AVX2 void integer_rows(const ActivationBlock* act, int64_t stride, int64_t blocks,
                               const uint8_t* w, size_t row_bytes, int64_t n0, int64_t n1,
                               float* y, int64_t ldy) {
  int64_t n = n0;
  for (; n + C <= n1; n += C) integer_tile<F, R, C>(act, stride, blocks, w, row_bytes, n, y, ldy);
  for (; n < n1; ++n) integer_tile<F, R, 1>(act, stride, blocks, w, row_bytes, n, y, ldy);
}

template <DType F>
TESSERA_AVX2 void integer_linear(const ActivationBlock* act, int64_t m, int64_t k, const uint8_t* w,
                                 int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const size_t row_bytes = dtype_bytes(F, k);
  const int64_t stride = k / 32, blocks = k / (32 * Format<F>::kChunks);
  // One row of x against four weight rows at a time (four independent sums in flight); more
  // rows of x in groups that decode each weight chunk once for the group.
  if (m == 1) return integer_rows<F, 1, 4>(act, stride, blocks, w, row_bytes, n0, n1, y, ldy);
  for (int64_t r = 0; r < m; r += 4) {
    const ActivationBlock* a = act + r * stride;
    float* yr = y + r * ldy;
    switch (std::min<int64_t>(4, m - r)) {
      case 4: integer_rows<F, 4, 1>(a, stride, blocks, w, row_bytes, n0, n1, yr, ldy); break;
      case 3: integer_rows<F, 3, 1>(a, stride, blocks, w, row_bytes, n0, n1, yr, ldy); break;
      case 2: integer_rows<F, 2, 2>(a, stride, blocks, w, row_bytes, n0, n1, yr, ldy); break;
      default: integer_rows<F, 1, 4>(a, stride, blocks, w, row_bytes, n0, n1, yr, ldy); break;
    }
  }
}

// Decodes one quantized row of k elements to float32 (bit-equal to dequantize).
template <DType F>
TESSERA_AVX2 void decode_row(const uint8_t* row, int64_t k, float* out) {
  using Fmt = Format<F>;
  constexpr int J = Fmt::kChunks;
  for (int64_t b = 0; b < k / (32 * J); ++b) {
    const uint8_t* block = row + size_t(b) * Fmt::kBytes;
    float d[J], m0[J], m1[J];
    Fmt::scales(block, d, m0, m1);
    each_chunk<J>([&](auto chunk) {
      constexpr int j = decltype(chunk)::value;
      const Codes c = Fmt::template codes<j>(block);
      float* o = out + (b * J + j) * 32;
      const __m256 scale = _mm256_set1_ps(d[j]);
      const __m256i halves[2] = {c.lo, c.hi};
      for (int h = 0; h < 2; ++h) {
        const __m256 offset = _mm256_set1_ps(h ? m1[j] : m0[j]);
        const __m256i lo8 = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(halves[h]));
        const __m256i hi8 = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(halves[h], 1));
        _mm256_storeu_ps(o + 16 * h, _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo8), scale, offset));
        _mm256_storeu_ps(o + 16 * h + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi8), scale, offset));
      }
    });
  }
}

TESSERA_AVX2 void quantize_activations_avx2(const float* x, int64_t k, ActivationBlock* blocks) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < k / 32; ++b) {
    const float* v = x + 32 * b;
    __m256 f[4];
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      f[i] = _mm256_loadu_ps(v + 8 * i);
      mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, f[i]));
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    const float amax = _mm_cvtss_f32(m4);
    ActivationBlock& out = blocks[b];
    out.d = amax / 32767;
    const __m256 inv = _mm256_set1_ps(amax > 0 ? 32767 / amax : 0);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(f[i], inv));  // (nearest)
    // packs interleaves the 128-bit lanes of its operands: the permute puts them back in order
    const __m256i h0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xD8);
    const __m256i h1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q), h0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q + 16), h1);
    const __m256i s0 = _mm256_madd_epi16(h0, ones), s1 = _mm256_madd_epi16(h1, ones);
    alignas(32) int32_t lanes[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s0);
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes + 8), s1);
    int32_t sums[2] = {0, 0};
    for (int i = 0; i < 16; ++i) sums[i / 8] += lanes[i];
    out.s[0] = out.d * float(sums[0]);
    out.s[1] = out.d * float(sums[1]);
  }
}

#endif  // __x86_64__

bool cpu_has_avx2() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

// Rows [r0, r1) of w decoded to float32 at out (row by row, k each).
void decode_rows(const Tensor& w, int64_t r0, int64_t r1, int64_t k, float* out) {
  const size_t row_bytes = dtype_bytes(w.dtype(), k);
  const auto* base = static_cast<const uint8_t*>(w.raw());
#if defined(__x86_64__)
  if (cpu_has_avx2()) {
    void (*decode)(const uint8_t*, int64_t, float*) = nullptr;
    switch (w.dtype()) {
      case DType::kQ8_0: decode = decode_row<DType::kQ8_0>; break;
      case DType::kQ4_0: decode = decode_row<DType::kQ4_0>; break;
      case DType::kQ4_1: decode = decode_row<DType::kQ4_1>; break;
      case DType::kQ5_0: decode = decode_row<DType::kQ5_0>; break;
      case DType::kQ5_1: decode = decode_row<DType::kQ5_1>; break;
      case DType::kQ4_K: decode = decode_row<DType::kQ4_K>; break;
      case DType::kQ5_K: decode = decode_row<DType::kQ5_K>; break;
      case DType::kQ6_K: decode = decode_row<DType::kQ6_K>; break;
      default: break;
    }
    if (decode) {
      for (int64_t r = r0; r < r1; ++r) decode(base + size_t(r) * row_bytes, k, out + (r - r0) * k);
      return;
    }
  }
#endif
  convert_to_f32(w.dtype(), base + size_t(r0) * row_bytes, out, size_t((r1 - r0) * k));
}

}  // namespace

bool integer_kernels_available() {
  static const bool available = cpu_has_avx2();
  return available;
}

void quantize_activations(const float* x, int64_t k, ActivationBlock* blocks) {
#if defined(__x86_64__)
  if (integer_kernels_available()) return quantize_activations_avx2(x, k, blocks);
#endif
  for (int64_t b = 0; b < k / 32; ++b) {
    const float* v = x + 32 * b;
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[i]));
    ActivationBlock& out = blocks[b];
    out.d = amax / 32767;
    const float inv = amax > 0 ? 32767 / amax : 0;
    int32_t sums[2] = {0, 0};
    for (int i = 0; i < 32; ++i) {
      out.q[i] = int16_t(std::clamp(int(std::nearbyint(v[i] * inv)), -32768, 32767));
      sums[i / 16] += out.q[i];
    }
    out.s[0] = out.d * float(sums[0]);
    out.s[1] = out.d * float(sums[1]);
  }
}

void weight_rows_linear(const float* x, const ActivationBlock* act, int64_t m, int64_t k,
                        const Tensor& w, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  if (n1 <= n0 || m == 0) return;
#if defined(__x86_64__)
  if (act != nullptr && integer_kernels_available()) {
    const auto* wb = static_cast<const uint8_t*>(w.raw());
    switch (w.dtype()) {
      case DType::kQ8_0: return integer_linear<DType::kQ8_0>(act, m, k, wb, n0, n1, y, ldy);
      case DType::kQ4_0: return integer_linear<DType::kQ4_0>(act, m, k, wb, n0, n1, y, ldy);
      case DType::kQ4_1: return integer_linear<DType::kQ4_1>(act, m, k, wb, n0, n1, y, ldy);
      case DType::kQ5_0: return integer_linear<DType::kQ5_0>(act, m, k, wb, n0, n1, y, ldy);
      case DType::kQ5_1: return integer_linear<DType::kQ5_1>(act, m, k, wb, n0, n1, y, ldy);
      case DType::kQ4_K: return integer_linear<DType::kQ4_K>(act, m, k, wb, n0, n1, y, ldy);
      case DType::kQ5_K: return integer_linear<DType::kQ5_K>(act, m, k, wb, n0, n1, y, ldy);
      case DType::kQ6_K: return integer_linear<DType::kQ6_K>(act, m, k, wb, n0, n1, y, ldy);
      default: break;  // f16, bf16: the float path
    }
  }
#endif
  // The float path: tiles of weight rows decoded to float32 (about 128 KiB), then the f32 kernels.
  const int64_t tile = std::max<int64_t>(8, (128 * 1024 / 4) / k);
  thread_local std::vector<float> buffer;
  buffer.resize(size_t(std::min(tile, n1 - n0) * k));
  for (int64_t c0 = n0; c0 < n1; c0 += tile) {
    const int64_t c1 = std::min(n1, c0 + tile);
    decode_rows(w, c0, c1, k, buffer.data());
    if (m <= kSkinnyMaxRows) {
      skinny_gemm_nt(x, m, k, buffer.data(), 0, c1 - c0, y + c0, ldy);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(c1 - c0), int(k), 1.0f, x,
                  int(k), buffer.data(), int(k), 0.0f, y + c0, int(ldy));
    }
  }
}

}  // namespace tessera::ops::cpu
