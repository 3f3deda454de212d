#include "kernels/cpu/skinny_gemm.h"

#include <algorithm>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

namespace tessera::ops {
namespace {

#if defined(__AVX2__) && defined(__FMA__)

inline float horizontal_sum(__m256 v) {
  const __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s = _mm_add_ps(lo, hi);
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// R rows of x against one weight row. Per row: two 8-wide accumulators over blocks of 16, one
// more block of 8, then the scalar tail: the same order for every R.
template <int R>
inline void dot_rows(const float* const* xr, const float* wr, int64_t k, float* out) {
  __m256 a[R], b[R];
  for (int r = 0; r < R; ++r) a[r] = b[r] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    const __m256 w0 = _mm256_loadu_ps(wr + i), w1 = _mm256_loadu_ps(wr + i + 8);
    for (int r = 0; r < R; ++r) {
      a[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr[r] + i), a[r]);
      b[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr[r] + i + 8), b[r]);
    }
  }
  if (i + 8 <= k) {
    const __m256 w0 = _mm256_loadu_ps(wr + i);
    for (int r = 0; r < R; ++r) a[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr[r] + i), a[r]);
    i += 8;
  }
  for (int r = 0; r < R; ++r) {
    float s = horizontal_sum(_mm256_add_ps(a[r], b[r]));
    for (int64_t j = i; j < k; ++j) s += wr[j] * xr[r][j];
    out[r] = s;
  }
}

#else

template <int R>
inline void dot_rows(const float* const* xr, const float* wr, int64_t k, float* out) {
  for (int r = 0; r < R; ++r) {
    float s = 0;
    for (int64_t j = 0; j < k; ++j) s += wr[j] * xr[r][j];
    out[r] = s;
  }
}

#endif

template <int R>
void rows_block(const float* x, int64_t row0, int64_t k, const float* w, int64_t n0, int64_t n1,
                float* y, int64_t ldy) {
  const float* xr[R];
  for (int r = 0; r < R; ++r) xr[r] = x + (row0 + r) * k;
  float out[R];
  for (int64_t c = n0; c < n1; ++c) {
    dot_rows<R>(xr, w + c * k, k, out);
    for (int r = 0; r < R; ++r) y[(row0 + r) * ldy + c] = out[r];
  }
}

}  // namespace

void skinny_gemm_nt(const float* x, int64_t m, int64_t k, const float* w, int64_t n0, int64_t n1,
                    float* y, int64_t ldy) {
  // Column tiles small enough that their weight rows stay in L2 while every row block uses them.
  constexpr int64_t kTileBytes = 256 * 1024;
  const int64_t tile = k > 0 ? std::max<int64_t>(1, kTileBytes / (k * int64_t(sizeof(float)))) : n1;
  for (int64_t c0 = n0; c0 < n1; c0 += tile) {
    const int64_t c1 = std::min(n1, c0 + tile);
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) rows_block<4>(x, r, k, w, c0, c1, y, ldy);
    switch (m - r) {
      case 3: rows_block<3>(x, r, k, w, c0, c1, y, ldy); break;
      case 2: rows_block<2>(x, r, k, w, c0, c1, y, ldy); break;
      case 1: rows_block<1>(x, r, k, w, c0, c1, y, ldy); break;
      default: break;
    }
  }
}

}  // namespace tessera::ops
