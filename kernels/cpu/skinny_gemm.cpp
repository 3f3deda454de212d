#include "kernels/cpu/skinny_gemm.h"
#include "kernels/cpu/simd.h"

// GCC 12 warns about its own _mm512_reduce_add_ps (an uninitialised lane it then ignores).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace tessera::ops {
namespace {

// Every output is one accumulator of the vector width over k in order (the last, partial
// vector masked or scalar), then one horizontal sum: the same operations whatever the tile it is
// computed in, so a row's results do not depend on the other rows of the batch.

void scalar_rows(const float* x, int64_t m, int64_t k, const float* w, int64_t n0, int64_t n1,
                 float* y, int64_t ldy) {
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = n0; c < n1; ++c) {
      float s = 0;
      for (int64_t i = 0; i < k; ++i) s += w[c * k + i] * x[r * k + i];
      y[r * ldy + c] = s;
    }
}

#if defined(__x86_64__)

// AVX-512: tiles of R rows x C weight rows, 16 lanes.
template <int R, int C>
__attribute__((target("avx512f"))) void tile512(const float* x, int64_t row0, int64_t k,
                                                const float* w, int64_t c0, float* y,
                                                int64_t ldy) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) acc[r][j] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m512 wv[C];
    for (int j = 0; j < C; ++j) {
      // The weights stream from memory once: ask for the next tile's rows ahead of time.
      _mm_prefetch(reinterpret_cast<const char*>(w + (c0 + 2 * C + j) * k + i), _MM_HINT_T0);
      wv[j] = _mm512_loadu_ps(w + (c0 + j) * k + i);
    }
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_loadu_ps(x + (row0 + r) * k + i);
      for (int j = 0; j < C; ++j) acc[r][j] = _mm512_fmadd_ps(wv[j], xv, acc[r][j]);
    }
  }
  if (i < k) {
    const __mmask16 mask = __mmask16((1u << (k - i)) - 1);
    __m512 wv[C];
    for (int j = 0; j < C; ++j) wv[j] = _mm512_maskz_loadu_ps(mask, w + (c0 + j) * k + i);
    for (int r = 0; r < R; ++r) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + (row0 + r) * k + i);
      for (int j = 0; j < C; ++j) acc[r][j] = _mm512_fmadd_ps(wv[j], xv, acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) y[(row0 + r) * ldy + c0 + j] = _mm512_reduce_add_ps(acc[r][j]);
}

// R rows against weight rows [n0, n1): two weight rows at a time, then one.
template <int R>
__attribute__((target("avx512f"))) void rows512(const float* x, int64_t row0, int64_t k,
                                                const float* w, int64_t n0, int64_t n1, float* y,
                                                int64_t ldy) {
  int64_t c = n0;
  for (; c + 2 <= n1; c += 2) tile512<R, 2>(x, row0, k, w, c, y, ldy);
  if (c < n1) tile512<R, 1>(x, row0, k, w, c, y, ldy);
}

__attribute__((target("avx512f"))) void skinny512(const float* x, int64_t m, int64_t k,
                                                  const float* w, int64_t n0, int64_t n1, float* y,
                                                  int64_t ldy) {
  // Up to 8 rows go in one pass over the weights (memory-bound: each weight is read once); more
  // rows take several passes over column tiles small enough to stay in L2 meanwhile.
  constexpr int64_t kTileBytes = 512 * 1024;
  const int64_t tile = m <= 8 ? n1 - n0 : std::max<int64_t>(2, kTileBytes / (k * 4));
  for (int64_t c0 = n0; c0 < n1; c0 += tile) {
    const int64_t c1 = std::min(n1, c0 + tile);
    for (int64_t r = 0; r < m; r += 8) {
      switch (std::min<int64_t>(8, m - r)) {
        case 8: rows512<8>(x, r, k, w, c0, c1, y, ldy); break;
        case 7: rows512<7>(x, r, k, w, c0, c1, y, ldy); break;
        case 6: rows512<6>(x, r, k, w, c0, c1, y, ldy); break;
        case 5: rows512<5>(x, r, k, w, c0, c1, y, ldy); break;
        case 4: rows512<4>(x, r, k, w, c0, c1, y, ldy); break;
        case 3: rows512<3>(x, r, k, w, c0, c1, y, ldy); break;
        case 2: rows512<2>(x, r, k, w, c0, c1, y, ldy); break;
        default: rows512<1>(x, r, k, w, c0, c1, y, ldy); break;
      }
    }
  }
}

// AVX2: tiles of R rows x C weight rows (R * C accumulators), 8 lanes; the scalar tail per
// output. With `prefetch`, the weight rows two tiles ahead are requested while this one computes.
template <int R, int C, bool kPrefetch>
__attribute__((target("avx2,fma"))) void tile256(const float* x, int64_t row0, int64_t k,
                                                 const float* w, int64_t c0, int64_t n1, float* y,
                                                 int64_t ldy) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) acc[r][j] = _mm256_setzero_ps();
  // Rows past the matrix are not prefetched (a prefetch of any address is harmless, but stay in
  // bounds anyway).
  const int64_t ahead = kPrefetch && c0 + 3 * C <= n1 ? 2 * C : 0;
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 wv[C];
    for (int j = 0; j < C; ++j) {
      if (kPrefetch && ahead && (i & 15) == 0)  // one request per 64-byte line
        _mm_prefetch(reinterpret_cast<const char*>(w + (c0 + ahead + j) * k + i), _MM_HINT_T0);
      wv[j] = _mm256_loadu_ps(w + (c0 + j) * k + i);
    }
    for (int r = 0; r < R; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + (row0 + r) * k + i);
      for (int j = 0; j < C; ++j) acc[r][j] = _mm256_fmadd_ps(wv[j], xv, acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < C; ++j) {
      float s = hsum256(acc[r][j]);
      for (int64_t t = i; t < k; ++t) s += w[(c0 + j) * k + t] * x[(row0 + r) * k + t];
      y[(row0 + r) * ldy + c0 + j] = s;
    }
}

// Rows [r0, r0 + R) against weight rows [c0, c0 + C).
template <int C, bool kPrefetch>
__attribute__((target("avx2,fma"))) void rows256(const float* x, int64_t r0, int64_t rows,
                                                 int64_t k, const float* w, int64_t c0, int64_t n1,
                                                 float* y, int64_t ldy) {
  switch (rows) {
    case 8: tile256<8, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
    case 7: tile256<7, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
    case 6: tile256<6, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
    case 5: tile256<5, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
    case 4: tile256<4, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
    case 3: tile256<3, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
    case 2: tile256<2, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
    default: tile256<1, C, kPrefetch>(x, r0, k, w, c0, n1, y, ldy); break;
  }
}

__attribute__((target("avx2,fma"))) void skinny256(const float* x, int64_t m, int64_t k,
                                                   const float* w, int64_t n0, int64_t n1,
                                                   float* y, int64_t ldy) {
  // Each weight is read from memory once whatever m is. Five to eight rows whose x fits L1 go
  // in one pass against one weight row at a time (x read from L1 as the FMAs' operand);
  // otherwise groups of up to four rows go against three weight rows at a time (12
  // accumulators), which reads x a third as often. The first group prefetches the weight rows
  // ahead so that memory keeps streaming while later groups compute. (Measured on a 2-core Zen 3
  // with the weights in DRAM: 8 rows, k = 576: one pass of 8 x 1 tiles ~1.15x a plain read of
  // the weights, 4 x 3 groups ~1.3x; 8 rows, k = 1536 (x 48 KiB): 4 x 3 groups 8.6 ms per 30
  // matrices against 10.2 ms for 8 x 1; 16 rows: 4 x 3 groups.)
  if (m > 4 && m <= 8 && m * k * 4 <= 24 * 1024) {  // x stays in L1
    for (int64_t c = n0; c < n1; ++c) rows256<1, true>(x, 0, m, k, w, c, n1, y, ldy);
    return;
  }
  int64_t c = n0;
  for (; c + 3 <= n1; c += 3)
    for (int64_t r = 0; r < m; r += 4) {
      const int64_t rows = std::min<int64_t>(4, m - r);
      if (r == 0)
        rows256<3, true>(x, r, rows, k, w, c, n1, y, ldy);
      else
        rows256<3, false>(x, r, rows, k, w, c, n1, y, ldy);
    }
  for (; c < n1; ++c)
    for (int64_t r = 0; r < m; r += 4)
      rows256<1, false>(x, r, std::min<int64_t>(4, m - r), k, w, c, n1, y, ldy);
}

#endif

using Kernel = void (*)(const float*, int64_t, int64_t, const float*, int64_t, int64_t, float*,
                        int64_t);

// One kernel for the whole process, chosen once from what the CPU offers.
Kernel pick_kernel() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return skinny512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return skinny256;
#endif
  return scalar_rows;
}

}  // namespace

void skinny_gemm_nt(const float* x, int64_t m, int64_t k, const float* w, int64_t n0, int64_t n1,
                    float* y, int64_t ldy) {
  static const Kernel kernel = pick_kernel();
  kernel(x, m, k, w, n0, n1, y, ldy);
}

const char* skinny_gemm_isa() {
  static const Kernel kernel = pick_kernel();
#if defined(__x86_64__)
  if (kernel == skinny512) return "avx512";
  if (kernel == skinny256) return "avx2";
#endif
  return "scalar";
}

}  // namespace tessera::ops
