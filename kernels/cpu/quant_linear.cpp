#include "kernels/cpu/quant_linear.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "kernels/cpu/simd.h"
#include "kernels/cpu/skinny_gemm.h"
#include "kernels/dtype.h"
#include "kernels/quant.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tessera::ops::cpu {
namespace {

// ---- every format as chunks of 32 ---------------------------------------------------------------
// A 32-element chunk j of a weight row is, whatever the format, w[i] = D * S[h] * c[i] + M with
// c[i] a code (at most 6 bits, or q8_0's signed bytes), S[h] an integer scale for each half h of
// 16 elements, an offset M, and D a float. Its dot product with an activation block (x[i] =
// d q[i], s = d * sum of q) is then
//   D * d * sum_i (S[h] c[i]) q[i]  +  M s,
// the first sum in integers: the codes as 16-bit lanes, vpmaddwd against q in pairs. Where the
// halves share S (every format but q6_k) it goes into the float scale D S; q6_k's codes are
// signed (q - 32, so M = 0) and multiplied by their S (|S c| <= 128 * 32 fits 16 bits, and a
// lane's four products stay below 2^31). Every product D * S[h] * c[i] is exact in float32, so a
// chunk decoded to float is kernels/quant.h's value (the same number; a zero may differ in sign).
//
// Format<F>: kChunks and kBytes per block; kOffsets (whether M is ever nonzero); kRows, the
// weight rows a single row of x is multiplied with at once; kLaneTileRows, the weight rows (1 or
// 2) of a lane tile (integer_lane_tile: 2 where decoding a chunk costs little, else 1, each chunk
// then decoded once for eight rows of x); codes<j>(block) gives chunk j's codes. The 32-element
// formats place D (f16) at kScaleAt and M (f16) at kMinAt, or derive M = kMinPerScale * D (kMinAt <
// 0); the 256-element ones unpack theirs with scales(block, stride, d, m): d[j * stride] = chunk
// j's D S, m[j * stride] = its M.

#if defined(__x86_64__)

// Everything to the matching pop_options is compiled for AVX2 (lambdas included, which a target
// attribute on their function would not reach) and runs only where integer_kernels_available().
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

inline float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// 16 bytes at p as 16-bit lanes.
inline __m256i bytes_16(const uint8_t* p) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

struct Codes {
  __m256i lo, hi;  // elements [0, 16) and [16, 32) as 16-bit integers
};

// The 4-bit codes of 16 bytes: low nibbles are elements 0..15, high nibbles 16..31.
inline Codes nibbles(const uint8_t* qs) {
  const __m256i v = bytes_16(qs);
  return {_mm256_and_si256(v, _mm256_set1_epi16(15)), _mm256_srli_epi16(v, 4)};
}

// 16 where bit i of the 16-bit word `bits` is set, in lane i.
inline __m256i bits_as_16(uint32_t bits) {
  const __m256i lane_bit = _mm256_setr_epi16(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                             4096, 8192, 16384, -32768);
  const __m256i set =
      _mm256_cmpeq_epi16(_mm256_and_si256(_mm256_set1_epi16(int16_t(bits)), lane_bit), lane_bit);
  return _mm256_and_si256(set, _mm256_set1_epi16(16));
}

// The 5-bit codes: nibbles plus bit i of the little-endian u32 at qh.
inline Codes nibbles_and_fifth(const uint8_t* qs, const uint8_t* qh) {
  uint32_t bits;
  std::memcpy(&bits, qh, 4);
  const Codes n = nibbles(qs);
  return {_mm256_or_si256(n.lo, bits_as_16(bits & 0xffff)),
          _mm256_or_si256(n.hi, bits_as_16(bits >> 16))};
}

template <DType>
struct Format;

template <>
struct Format<DType::kQ8_0> {
  // (its chunks cost the least integer work per byte: one weight row at a time streams fastest,
  // 22-28 GB/s in a decode step against 17-21 with four, measured on 2026-12-06)
  static constexpr int kRows = 1;
  static constexpr int kLaneTileRows = 2;
  static constexpr bool kOffsets = false;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 34;
  static constexpr int kScaleAt = 0, kMinAt = -1;  // f16 D, and M (or -1: M = D * k)
  static constexpr float kMinPerScale = 0;
  template <int>
  static Codes codes(const uint8_t* b) {
    const auto* q = reinterpret_cast<const __m128i*>(b + 2);
    return {_mm256_cvtepi8_epi16(_mm_loadu_si128(q)), _mm256_cvtepi8_epi16(_mm_loadu_si128(q + 1))};
  }
};

template <>
struct Format<DType::kQ4_0> {
  static constexpr int kLaneTileRows = 2;
  static constexpr int kRows = 4;
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 18;
  static constexpr int kScaleAt = 0, kMinAt = -1;  // f16 D, and M (or -1: M = D * k)
  static constexpr float kMinPerScale = -8;
  template <int>
  static Codes codes(const uint8_t* b) {
    return nibbles(b + 2);
  }
};

template <>
struct Format<DType::kQ4_1> {
  static constexpr int kLaneTileRows = 2;
  static constexpr int kRows = 4;
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 20;
  static constexpr int kScaleAt = 0, kMinAt = 2;  // f16 D, and M (or -1: M = D * k)
  static constexpr float kMinPerScale = 0;
  template <int>
  static Codes codes(const uint8_t* b) {
    return nibbles(b + 4);
  }
};

template <>
struct Format<DType::kQ5_0> {
  static constexpr int kLaneTileRows = 1;
  static constexpr int kRows = 4;
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 22;
  static constexpr int kScaleAt = 0, kMinAt = -1;  // f16 D, and M (or -1: M = D * k)
  static constexpr float kMinPerScale = -16;
  template <int>
  static Codes codes(const uint8_t* b) {
    return nibbles_and_fifth(b + 6, b + 2);
  }
};

template <>
struct Format<DType::kQ5_1> {
  static constexpr int kLaneTileRows = 1;
  static constexpr int kRows = 4;
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 1;
  static constexpr size_t kBytes = 24;
  static constexpr int kScaleAt = 0, kMinAt = 2;  // f16 D, and M (or -1: M = D * k)
  static constexpr float kMinPerScale = 0;
  template <int>
  static Codes codes(const uint8_t* b) {
    return nibbles_and_fifth(b + 8, b + 4);
  }
};

// i4_g32 and i4_g128 (AWQ / GPTQ groups): chunk j's codes are q4_0's nibbles at qs + 16 j; every
// chunk has D = d and M = -d z (exact: an f16 times a zero point of at most 16).
template <int kBlockChunks>
struct GroupFormat {
  static constexpr int kLaneTileRows = 2;
  static constexpr int kRows = 4;
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = kBlockChunks;
  static constexpr size_t kBytes = 4 + 16 * kBlockChunks;
  static void scales(const uint8_t* b, int stride, float* d, float* m) {
    const float scale = f16(b), offset = -scale * float(b[2]);
    for (int j = 0; j < kChunks; ++j) {
      d[j * stride] = scale;
      m[j * stride] = offset;
    }
  }
  template <int j>
  static Codes codes(const uint8_t* b) {
    return nibbles(b + 4 + 16 * j);
  }
};
template <>
struct Format<DType::kI4G32> : GroupFormat<1> {};
template <>
struct Format<DType::kI4G128> : GroupFormat<4> {};

// Whether format F keeps D (and M) as f16 at kScaleAt (kMinAt) of its one chunk, read for several
// rows in one conversion; else Format<F>::scales unpacks them.
template <DType F>
constexpr bool kHalfScales = requires {
  Format<F>::kScaleAt;
};

// q4_k and q5_k: sub-block j (chunk j) has code nibble j % 2 of qs[32 (j / 2) + l] (and bit j of
// qh[l]); D S = d * its 6-bit scale, M = -dmin * its 6-bit min.
template <bool kFifthBit>
struct KFormat {
  static constexpr int kLaneTileRows = 1;
  static constexpr int kRows = 4;
  static constexpr bool kOffsets = true;
  static constexpr int kChunks = 8;
  static constexpr size_t kBytes = kFifthBit ? 176 : 144;
  // d[j * stride] = chunk j's D S, m[j * stride] = its M.
  static void scales(const uint8_t* b, int stride, float* d, float* m) {
    // The eight 6-bit scales into bytes 0..7 of sc, the mins into those of mn (the packing of
    // kernels/quant.h, four sub-blocks at a time)
    uint32_t w[3];
    std::memcpy(w, b + 4, 12);
    const uint32_t low6 = 0x3f3f3f3fu, low4 = 0x0f0f0f0fu, top2 = 0x03030303u;
    const uint64_t sc = (w[0] & low6) | uint64_t((w[2] & low4) | (((w[0] >> 6) & top2) << 4)) << 32;
    const uint64_t mn = (w[1] & low6) | uint64_t(((w[2] >> 4) & low4) | (((w[1] >> 6) & top2) << 4))
                                            << 32;
    const __m256 scs = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(sc))));
    const __m256 mns = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(mn))));
    alignas(32) float ds[8], ms[8];
    _mm256_store_ps(ds, _mm256_mul_ps(scs, _mm256_set1_ps(f16(b))));
    _mm256_store_ps(ms, _mm256_mul_ps(mns, _mm256_set1_ps(-f16(b + 2))));
    for (int j = 0; j < 8; ++j) {
      d[j * stride] = ds[j];
      m[j * stride] = ms[j];
    }
  }
  template <int j>
  static Codes codes(const uint8_t* b) {
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
  static constexpr int kLaneTileRows = 1;
  static constexpr int kRows = 4;
  static constexpr bool kOffsets = false;
  static constexpr int kChunks = 8;
  static constexpr size_t kBytes = 210;
  static void scales(const uint8_t* b, int stride, float* d, float* m) {
    const float scale = f16(b + 208);
    for (int j = 0; j < 8; ++j) {
      d[j * stride] = scale;
      m[j * stride] = 0;
    }
  }
  template <int j>
  static Codes codes(const uint8_t* b) {
    constexpr int h = j / 4, t = j % 4;
    const uint8_t* ql = b + 64 * h + 32 * (t % 2);
    const uint8_t* qh = b + 128 + 32 * h;
    const __m256i nibble = _mm256_set1_epi16(15), two = _mm256_set1_epi16(3);
    const auto code = [&](int half) {
      const __m256i low =
          _mm256_and_si256(_mm256_srli_epi16(bytes_16(ql + 16 * half), 4 * (t / 2)), nibble);
      const __m256i high =
          _mm256_and_si256(_mm256_srli_epi16(bytes_16(qh + 16 * half), 2 * t), two);
      return _mm256_sub_epi16(_mm256_or_si256(low, _mm256_slli_epi16(high, 4)),
                              _mm256_set1_epi16(32));
    };
    const auto* s = reinterpret_cast<const int8_t*>(b + 192);
    return {_mm256_mullo_epi16(code(0), _mm256_set1_epi16(s[2 * j])),
            _mm256_mullo_epi16(code(1), _mm256_set1_epi16(s[2 * j + 1]))};
  }
};

// fn(std::integral_constant<int, j>) for j = 0 .. J - 1, unrolled (chunk indices as constants).
template <int J, class Fn>
inline void each_chunk(Fn&& fn) {
  [&]<int... j>(std::integer_sequence<int, j...>) {
    (fn(std::integral_constant<int, j>{}), ...);
  }
  (std::make_integer_sequence<int, J>{});
}

// The scales of block b of C rows (C <= 4): d[j][c] = chunk j's D S, m[j][c] = its M. The
// 32-element formats' f16 values of all C rows go through one conversion.
template <DType F, int C>
inline void block_scales(const uint8_t* rows, size_t row_bytes, float (*d)[4], float (*m)[4]) {
  using Fmt = Format<F>;
  if constexpr (kHalfScales<F>) {
    __m128i halves = _mm_setzero_si128();  // D of row c in lane c, M in lane 4 + c
    each_chunk<C>([&](auto tile_row) {
      constexpr int c = decltype(tile_row)::value;
      uint16_t h;
      std::memcpy(&h, rows + size_t(c) * row_bytes + Fmt::kScaleAt, 2);
      halves = _mm_insert_epi16(halves, h, c);
      if constexpr (Fmt::kMinAt >= 0) {
        std::memcpy(&h, rows + size_t(c) * row_bytes + Fmt::kMinAt, 2);
        halves = _mm_insert_epi16(halves, h, 4 + c);
      }
    });
    const __m256 f = _mm256_cvtph_ps(halves);
    const __m128 scale = _mm256_castps256_ps128(f);
    _mm_store_ps(d[0], scale);
    _mm_store_ps(m[0], Fmt::kMinAt >= 0 ? _mm256_extractf128_ps(f, 1)
                                        : _mm_mul_ps(scale, _mm_set1_ps(Fmt::kMinPerScale)));
  } else {
    for (int c = 0; c < C; ++c) Fmt::scales(rows + size_t(c) * row_bytes, 4, &d[0][c], &m[0][c]);
  }
}

// Lane c of v in every lane.
template <int c>
inline __m256 lane(__m128 v) {
  return _mm256_broadcastss_ps(_mm_shuffle_ps(v, v, c * 0x55));
}

// One row of x (its activation blocks at act) against the C weight rows from row n (C <= 4):
// y[n + c]. Each weight row sums its chunks in order in its own accumulator, whatever C is.
template <DType F, int C>
inline void integer_tile(const ActivationBlock* act, int64_t blocks, const uint8_t* w,
                         size_t row_bytes, int64_t n, int64_t n_end, float* y) {
  using Fmt = Format<F>;
  constexpr int J = Fmt::kChunks;
  __m256 acc[C];
  for (int c = 0; c < C; ++c) acc[c] = _mm256_setzero_ps();
  __m128 offsets = _mm_setzero_ps();  // weight row c's in lane c
  const uint8_t* rows = w + size_t(n) * row_bytes;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = rows + size_t(b) * Fmt::kBytes;
    // The weights stream from memory once: ask for every line of the same block kAhead rows on
    // ahead of time. (Measured on 2026-12-06: the first line of each block only left q6_k's
    // 210-byte blocks at a third of the bandwidth; 8 rows on beat 4 by ~10%.) A block of 32
    // elements is at most 34 bytes: one prefetch a block reaches every line; the larger blocks
    // ask for each of their lines, a constant count.
    constexpr int kAhead = 8;
    for (int c = 0; c < C && n + kAhead + c < n_end; ++c) {
      const char* p = reinterpret_cast<const char*>(block + size_t(kAhead + c) * row_bytes);
      for (size_t at = 0; at < Fmt::kBytes; at += 64) _mm_prefetch(p + at, _MM_HINT_T0);
      if constexpr (Fmt::kBytes > 64) _mm_prefetch(p + Fmt::kBytes - 1, _MM_HINT_T0);
    }
    alignas(16) float d[J][4], m[J][4];
    block_scales<F, C>(block, row_bytes, d, m);
    each_chunk<J>([&](auto chunk) {
      constexpr int j = decltype(chunk)::value;
      const ActivationBlock& a = act[b * J + j];
      const __m128 scale = _mm_mul_ps(_mm_load_ps(d[j]), _mm_set1_ps(a.d));  // D S d, lane c
      if constexpr (Fmt::kOffsets)
        offsets = _mm_fmadd_ps(_mm_load_ps(m[j]), _mm_set1_ps(a.s), offsets);
      // Each weight row's chunk decoded, then used at once (fewer registers held than all C).
      each_chunk<C>([&](auto tile_row) {
        constexpr int c = decltype(tile_row)::value;
        const Codes codes = Fmt::template codes<j>(block + size_t(c) * row_bytes);
        const auto* q = reinterpret_cast<const __m256i*>(a.q);
        const __m256i dot =
            _mm256_add_epi32(_mm256_madd_epi16(codes.lo, _mm256_loadu_si256(q)),
                             _mm256_madd_epi16(codes.hi, _mm256_loadu_si256(q + 1)));
        acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), lane<c>(scale), acc[c]);
      });
    });
  }
  alignas(16) float off[4];
  _mm_store_ps(off, offsets);
  for (int c = 0; c < C; ++c) y[n + c] = hsum256(acc[c]) + off[c];
}

// (p[0], p[1]) in lanes (0, 1), (2, 3), (4, 5) and (6, 7).
inline __m256 pair_in_every_lane(const float* p) {
  int64_t pair;
  std::memcpy(&pair, p, 8);
  return _mm256_castsi256_ps(_mm256_set1_epi64x(pair));
}

// The activation scales of R rows of x for the lane tiles of C weight rows (R * C = 8): for each
// 32-element chunk i, lanes[i] holds row r's d in lanes r * C .. r * C + C - 1, and
// lanes[chunks + i] the same of s (rows past `rows` repeat the last row).
template <int R, int C>
inline void tile_lanes(const ActivationBlock* act, int64_t chunks, int rows, __m256* lanes) {
  static_assert(R * C == 8);
  const int64_t act_stride = chunks;  // x's rows, one after another
  for (int64_t i = 0; i < chunks; ++i) {
    alignas(32) float d[8], s[8];
    for (int l = 0; l < 8; ++l) {
      const ActivationBlock& a = act[std::min(l / C, rows - 1) * act_stride + i];
      d[l] = a.d;
      s[l] = a.s;
    }
    lanes[i] = _mm256_load_ps(d);
    lanes[chunks + i] = _mm256_load_ps(s);
  }
}

// The D S (and M) of chunk j of a block of C (1 or 2) weight rows in lanes c, C + c, 2C + c, ...
template <DType F, int C>
struct LaneScales {
  static_assert(C == 1 || C == 2);
  using Fmt = Format<F>;
  alignas(16) float d[Fmt::kChunks][4], m[Fmt::kChunks][4];
  __m256 d_lanes, m_lanes;  // the f16-scale formats' (one chunk)
  LaneScales(const uint8_t* block, size_t row_bytes) {
    if constexpr (kHalfScales<F>) {
      if constexpr (C == 2 && Fmt::kMinAt == Fmt::kScaleAt + 2) {
        // D and M side by side (q4_1): one 32-bit load per row, [D0 M0 D1 M1] as 16-bit units,
        // shuffled to D0 D1 D0 D1 ... and M0 M1 M0 M1 ... (the values of `both` below, fewer
        // instructions: perf put 16% of the lane tile's samples on gathering them one by one)
        uint32_t w0, w1;
        std::memcpy(&w0, block + Fmt::kScaleAt, 4);
        std::memcpy(&w1, block + row_bytes + Fmt::kScaleAt, 4);
        const __m128i v = _mm_set_epi32(0, 0, int(w1), int(w0));
        d_lanes = _mm256_cvtph_ps(
            _mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 4, 5, 0, 1, 4, 5, 0, 1, 4, 5, 0, 1, 4, 5)));
        m_lanes = _mm256_cvtph_ps(
            _mm_shuffle_epi8(v, _mm_setr_epi8(2, 3, 6, 7, 2, 3, 6, 7, 2, 3, 6, 7, 2, 3, 6, 7)));
      } else {
        const auto both = [&](int at) {  // the f16 at `at` of the C rows, in lanes c mod C
          uint16_t h0, h1;
          std::memcpy(&h0, block + at, 2);
          std::memcpy(&h1, block + (C - 1) * row_bytes + at, 2);
          return _mm256_cvtph_ps(_mm_set1_epi32(int(uint32_t(h0) | uint32_t(h1) << 16)));
        };
        d_lanes = both(Fmt::kScaleAt);
        if constexpr (Fmt::kMinAt >= 0)
          m_lanes = both(Fmt::kMinAt);
        else
          m_lanes = _mm256_mul_ps(d_lanes, _mm256_set1_ps(Fmt::kMinPerScale));
      }
    } else {
      block_scales<F, C>(block, row_bytes, d, m);
    }
  }
  template <int j>
  __m256 scale() const {
    if constexpr (kHalfScales<F>)
      return d_lanes;
    else
      return spread(d[j]);
  }
  template <int j>
  __m256 offset() const {
    if constexpr (kHalfScales<F>)
      return m_lanes;
    else
      return spread(m[j]);
  }
  static __m256 spread(const float* v) {
    return C == 2 ? pair_in_every_lane(v) : _mm256_broadcast_ss(v);
  }
};

// R activation rows against the C weight rows from row n (R * C = 8; C = kLaneTileRows): for
// each row of x the same sums as integer_tile<F, C> (each pair's chunks in order, in its own
// accumulator, the same float operations, so a row's result is the same bits in either), with a
// chunk's scales and offsets of the eight (row, weight row) pairs formed in one vector, lane r * C
// + c (tile_lanes): fewer instructions per 32 products, for the batched steps and prompts, where
// the integer work (not memory) bounds the time. Rows of x past `rows` are not computed.
template <DType F, int R, int C>
inline void integer_lane_tile(const ActivationBlock* act, int64_t act_stride, int rows,
                              const __m256* lanes, int64_t blocks, const uint8_t* w,
                              size_t row_bytes, int64_t n, int64_t n_end, float* y, int64_t ldy) {
  using Fmt = Format<F>;
  constexpr int J = Fmt::kChunks;
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  __m256 offsets = _mm256_setzero_ps();  // lane r * C + c
  const uint8_t* wrows = w + size_t(n) * row_bytes;
  const int64_t chunks = blocks * J;
  // Rows of x past `rows` repeat the last one (computed, not stored): no branch in the loop.
  const ActivationBlock* x_rows[R];
  for (int r = 0; r < R; ++r) x_rows[r] = act + std::min(r, rows - 1) * act_stride;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* block = wrows + size_t(b) * Fmt::kBytes;
    // As integer_tile: the same block kAhead weight rows on, asked for ahead of time, up to
    // n_end (the first group of x's rows meets the panel's rows as they come from memory; the
    // others pass 0)
    constexpr int kAhead = 8;
    for (int c = 0; c < C && n + kAhead + c < n_end; ++c) {
      const char* p = reinterpret_cast<const char*>(block + size_t(kAhead + c) * row_bytes);
      for (size_t at = 0; at < Fmt::kBytes; at += 64) _mm_prefetch(p + at, _MM_HINT_T0);
      if constexpr (Fmt::kBytes > 64) _mm_prefetch(p + Fmt::kBytes - 1, _MM_HINT_T0);
    }
    const LaneScales<F, C> weight(block, row_bytes);
    each_chunk<J>([&](auto chunk) {
      constexpr int j = decltype(chunk)::value;
      const int64_t i = b * J + j;
      // D S d of lane r * C + c, in registers (stored and loaded back, they stalled the loop):
      // lanes 0..3 in both halves of low, lanes 4..7 in those of high
      const __m256 scale = _mm256_mul_ps(weight.template scale<j>(), lanes[i]);
      const __m256 low = _mm256_permute2f128_ps(scale, scale, 0x00);
      const __m256 high = _mm256_permute2f128_ps(scale, scale, 0x11);
      if constexpr (Fmt::kOffsets)
        offsets = _mm256_fmadd_ps(weight.template offset<j>(), lanes[chunks + i], offsets);
      each_chunk<C>([&](auto weight_row) {
        constexpr int c = decltype(weight_row)::value;
        const Codes codes = Fmt::template codes<j>(block + size_t(c) * row_bytes);
        each_chunk<R>([&](auto x_row) {
          constexpr int r = decltype(x_row)::value, l = r * C + c;
          const auto* q = reinterpret_cast<const __m256i*>(x_rows[r][i].q);
          const __m256i dot =
              _mm256_add_epi32(_mm256_madd_epi16(codes.lo, _mm256_loadu_si256(q)),
                               _mm256_madd_epi16(codes.hi, _mm256_loadu_si256(q + 1)));
          const __m256 lane_scale = _mm256_permute_ps(l < 4 ? low : high, (l % 4) * 0x55);
          acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), lane_scale, acc[r][c]);
        });
      });
    });
  }
  alignas(32) float off[8];
  _mm256_store_ps(off, offsets);
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + n + c] = hsum256(acc[r][c]) + off[r * C + c];
}

// Rows [n0, n1) of w against the m rows of x.
template <DType F>
inline void integer_linear(const ActivationBlock* act, int64_t m, int64_t k, const uint8_t* w,
                           int64_t n0, int64_t n1, float* y, int64_t ldy) {
  const size_t row_bytes = dtype_bytes(F, k);
  const int64_t stride = k / 32, blocks = k / (32 * Format<F>::kChunks);
  int64_t n = n0;
  if (m == 1) {  // Format<F>::kRows weight rows at a time: that many independent sums in flight
    constexpr int C = Format<F>::kRows;
    for (; n + C <= n1; n += C) integer_tile<F, C>(act, blocks, w, row_bytes, n, n1, y);
    for (; n < n1; ++n) integer_tile<F, 1>(act, blocks, w, row_bytes, n, n1, y);
    return;
  }
  // GEMM blocking: a panel of weight rows (about 192 KiB) stays in L2 while every group of R rows
  // of x (their activation blocks: 13 KiB at k = 576, in L1; 72 KiB at k = 4096, in L2) meets it
  // C weight rows at a time. The weights are read from memory once; each chunk is decoded once
  // per group of x's rows. (The first group asks for the weights ahead of time; the others find
  // the panel in L2.)
  constexpr int C = Format<F>::kLaneTileRows, R = 8 / C;
  const int64_t panel = std::max<int64_t>(C, int64_t((192 << 10) / row_bytes) / C * C);
  thread_local std::vector<float> lane_floats;  // tile_lanes of the current rows of x
  lane_floats.resize(size_t(16 * stride + 8));
  auto* lanes = reinterpret_cast<__m256*>((reinterpret_cast<uintptr_t>(lane_floats.data()) + 31) &
                                          ~uintptr_t(31));
  for (int64_t p0 = n0; p0 < n1; p0 += panel) {
    const int64_t p1 = std::min(n1, p0 + panel);
    for (int64_t r = 0; r < m; r += R) {
      const ActivationBlock* a = act + r * stride;
      float* yr = y + r * ldy;
      const int rows = int(std::min<int64_t>(R, m - r));
      if (2 * rows <= R) {
        // A last group of at most half a tile (a decode batch of 5, a step verifying 4 proposed
        // tokens plus one plain row): one row of x at a time against the panel, the same bits
        // as a lane tile's, at a fraction of a lane tile's cost (the lane tile computes all R
        // rows whatever `rows` is). Measured on the default model, a step of 5 rows took 28 ms
        // with a second lane tile and 4 rows 17 ms.
        constexpr int K = Format<F>::kRows;
        for (int64_t i = 0; i < rows; ++i) {
          for (n = p0; n + K <= p1; n += K)
            integer_tile<F, K>(a + i * stride, blocks, w, row_bytes, n, p1, yr + i * ldy);
          for (; n < p1; ++n)
            integer_tile<F, 1>(a + i * stride, blocks, w, row_bytes, n, p1, yr + i * ldy);
        }
        continue;
      }
      tile_lanes<R, C>(a, stride, rows, lanes);
      for (n = p0; n + C <= p1; n += C)
        integer_lane_tile<F, R, C>(a, stride, rows, lanes, blocks, w, row_bytes, n, r == 0 ? p1 : 0,
                                   yr, ldy);
      for (; n < p1; ++n)  // a last weight row of an odd panel: one row of x at a time
        for (int64_t i = 0; i < rows; ++i)
          integer_tile<F, 1>(a + i * stride, blocks, w, row_bytes, n, n1, yr + i * ldy);
    }
  }
}

// Decodes one quantized row of k elements to float32 (dequantize's values; a zero may differ in
// sign).
template <DType F>
inline void decode_row(const uint8_t* row, int64_t k, float* out) {
  using Fmt = Format<F>;
  constexpr int J = Fmt::kChunks;
  for (int64_t b = 0; b < k / (32 * J); ++b) {
    const uint8_t* block = row + size_t(b) * Fmt::kBytes;
    alignas(16) float d[J][4], m[J][4];
    block_scales<F, 1>(block, 0, d, m);
    each_chunk<J>([&](auto chunk) {
      constexpr int j = decltype(chunk)::value;
      const Codes c = Fmt::template codes<j>(block);
      float* o = out + (b * J + j) * 32;
      const __m256 scale = _mm256_set1_ps(d[j][0]), offset = _mm256_set1_ps(m[j][0]);
      const __m256i halves[2] = {c.lo, c.hi};
      for (int h = 0; h < 2; ++h) {
        const __m256i lo8 = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(halves[h]));
        const __m256i hi8 = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(halves[h], 1));
        _mm256_storeu_ps(o + 16 * h, _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo8), scale, offset));
        _mm256_storeu_ps(o + 16 * h + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi8), scale, offset));
      }
    });
  }
}

inline void quantize_activations_avx2(const float* x, int64_t k, ActivationBlock* blocks) {
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
    // (max_ps drops a NaN: a block holding one keeps it in d, so the outputs it reaches are NaN;
    // a block too small for 32767 / amax to be finite is a zero block)
    bool nan = false;
    for (int i = 0; i < 4; ++i)
      nan |= _mm256_movemask_ps(_mm256_cmp_ps(f[i], f[i], _CMP_UNORD_Q)) != 0;
    const float inverse = 32767 / amax;
    const bool zero = !(inverse < std::numeric_limits<float>::infinity());
    out.d = nan ? std::numeric_limits<float>::quiet_NaN() : zero ? 0.0f : amax / 32767;
    const __m256 inv = _mm256_set1_ps(nan || zero ? 0.0f : inverse);
    __m256i q[4];
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(f[i], inv));  // (nearest)
    // packs interleaves the 128-bit lanes of its operands: the permute puts them back in order
    const __m256i h0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xD8);
    const __m256i h1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q), h0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out.q + 16), h1);
    const __m256i pairs =
        _mm256_add_epi32(_mm256_madd_epi16(h0, ones), _mm256_madd_epi16(h1, ones));
    __m128i sum = _mm_add_epi32(_mm256_castsi256_si128(pairs), _mm256_extracti128_si256(pairs, 1));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0x4e));
    sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0xb1));
    out.s = out.d * float(_mm_cvtsi128_si32(sum));
  }
}

#pragma GCC pop_options
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

#if defined(__x86_64__)
// fn(std::integral_constant<DType, F>{}) for the quantized format F of `dtype`, and true; false
// for any other type. (Where each format's kernels are instantiated, once.)
template <class Fn>
bool with_quantized_format(DType dtype, Fn&& fn) {
  // clang-format off
  switch (dtype) {
    case DType::kQ8_0: fn(std::integral_constant<DType, DType::kQ8_0>{}); return true;
    case DType::kQ4_0: fn(std::integral_constant<DType, DType::kQ4_0>{}); return true;
    case DType::kQ4_1: fn(std::integral_constant<DType, DType::kQ4_1>{}); return true;
    case DType::kQ5_0: fn(std::integral_constant<DType, DType::kQ5_0>{}); return true;
    case DType::kQ5_1: fn(std::integral_constant<DType, DType::kQ5_1>{}); return true;
    case DType::kQ4_K: fn(std::integral_constant<DType, DType::kQ4_K>{}); return true;
    case DType::kQ5_K: fn(std::integral_constant<DType, DType::kQ5_K>{}); return true;
    case DType::kQ6_K: fn(std::integral_constant<DType, DType::kQ6_K>{}); return true;
    case DType::kI4G32: fn(std::integral_constant<DType, DType::kI4G32>{}); return true;
    case DType::kI4G128: fn(std::integral_constant<DType, DType::kI4G128>{}); return true;
    default: return false;
  }
  // clang-format on
}
#endif

// Rows [r0, r1) of w decoded to float32 at out (row by row, k each).
void decode_rows(const Tensor& w, int64_t r0, int64_t r1, int64_t k, float* out) {
  const size_t row_bytes = dtype_bytes(w.dtype(), k);
  const auto* base = static_cast<const uint8_t*>(w.raw());
#if defined(__x86_64__)
  if (integer_kernels_available()) {
    const bool decoded = with_quantized_format(w.dtype(), [&](auto format) {
      for (int64_t r = r0; r < r1; ++r)
        decode_row<decltype(format)::value>(base + size_t(r) * row_bytes, k, out + (r - r0) * k);
    });
    if (decoded) return;
  }
#endif
  convert_to_f32(w.dtype(), base + size_t(r0) * row_bytes, out, size_t((r1 - r0) * k));
}

}  // namespace

bool integer_kernels_available() {
  static const bool available = cpu_has_avx2();
  return available;
}

bool integer_kernel_for(DType type) {
#if defined(__x86_64__)
  return integer_kernels_available() && with_quantized_format(type, [](auto) {});
#else
  (void)type;
  return false;
#endif
}

int64_t integer_row_tile(DType type) {
  int64_t tile = 1;
#if defined(__x86_64__)
  if (integer_kernels_available())
    with_quantized_format(
        type, [&](auto format) { tile = 8 / Format<decltype(format)::value>::kLaneTileRows; });
#else
  (void)type;
#endif
  return tile;
}

void quantize_activations(const float* x, int64_t k, ActivationBlock* blocks) {
  TESSERA_ASSERT(integer_kernels_available(), "int16 activation blocks are for the AVX2 kernels");
#if defined(__x86_64__)
  quantize_activations_avx2(x, k, blocks);
#else
  (void)x, (void)k, (void)blocks;
#endif
}

void weight_rows_linear(const float* x, const ActivationBlock* act, int64_t m, int64_t k,
                        const Tensor& w, int64_t n0, int64_t n1, float* y, int64_t ldy) {
  if (n1 <= n0 || m == 0) return;
#if defined(__x86_64__)
  if (act != nullptr && integer_kernels_available()) {
    const auto* wb = static_cast<const uint8_t*>(w.raw());
    const bool done = with_quantized_format(w.dtype(), [&](auto format) {
      integer_linear<decltype(format)::value>(act, m, k, wb, n0, n1, y, ldy);
    });
    if (done) return;  // (else f16, bf16, f8_e4m3: the float path)
  }
#endif
  // The float path: tiles of weight rows decoded to float32 (about 512 KiB, and 64 rows at least,
  // so that OpenBLAS packs x once per 64 weight rows or more), then the f32 kernels.
  const int64_t tile = std::max<int64_t>(64, (512 * 1024 / 4) / k);
  thread_local std::vector<float> buffer;
  buffer.resize(size_t(std::min(tile, n1 - n0) * k));
  for (int64_t c0 = n0; c0 < n1; c0 += tile) {
    const int64_t c1 = std::min(n1, c0 + tile);
    decode_rows(w, c0, c1, k, buffer.data());
    // (a quantized format without integer kernels, f8_e4m3, keeps the skinny kernel's rows up to
    // kIntegerMaxRows: a row's result then does not depend on its batch there either)
    if (m <= kSkinnyMaxRows || (dtype_is_quantized(w.dtype()) && m <= kIntegerMaxRows)) {
      skinny_gemm_nt(x, m, k, buffer.data(), 0, c1 - c0, y + c0, ldy);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(c1 - c0), int(k), 1.0f, x,
                  int(k), buffer.data(), int(k), 0.0f, y + c0, int(ldy));
    }
  }
}

}  // namespace tessera::ops::cpu
