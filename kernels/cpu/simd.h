// Small AVX2 helpers the CPU kernels share (call them from code compiled for AVX2).
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

namespace tessera::ops {

// The sum of v's eight lanes: the upper half onto the lower, then pairs.
__attribute__((target("avx2"))) inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

}  // namespace tessera::ops
#endif
