// y = x w^T for a few rows of x (decode batches): every weight row is read once from memory
// and used for all rows of x while it sits in L1, which a general GEMM with packing does not do
// for small m. Each output is one dot product whose order of additions depends only on k, never
// on m or on the row's place in the batch, so a sequence's results do not depend on what it is
// batched with.
#pragma once

#include <cstdint>

namespace tessera::ops {

inline constexpr int64_t kSkinnyMaxRows = 16;

// x (m, k) row-major; w rows [n0, n1) of a (n, k) row-major matrix; y (m, ldy): columns
// [n0, n1) are written.
void skinny_gemm_nt(const float* x, int64_t m, int64_t k, const float* w, int64_t n0, int64_t n1,
                    float* y, int64_t ldy);
// The instruction set the kernel uses on this CPU: "avx512", "avx2" or "scalar".
const char* skinny_gemm_isa();

}  // namespace tessera::ops
