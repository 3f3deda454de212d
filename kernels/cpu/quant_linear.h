// y = x w^T on the CPU for weights kept as stored: f16, bf16 or a quantized format
// (kernels/quant.h), never a float32 copy of them.
//
// Up to kIntegerMaxRows rows of x (decode batches, and steps with a few prompt tokens): each row
// of x is quantized per 32 elements to int16 with one float scale (ActivationBlock: a relative
// error of at most 1 / 65534 of the block's largest magnitude, where int8 activations, at 1 / 254,
// moved the default model's greedy choice at one position in 26), and every weight block is
// multiplied with them in integers (AVX2: codes widened to 16 bits, times the sub-block's integer
// scale, vpmaddwd against the activations), one float multiply-add per 32 elements. One row of x
// streams each weight block from memory once; more rows are tiled as a GEMM (a panel of weight
// rows in L2, eight (row of x, weight row) pairs at a time). A row's result depends only on that
// row: every (row, weight row) pair sums its chunks in the same order with the same float
// operations, whatever the tile, so within steps of up to 64 rows (where all of a model's matmul
// weights are quantized) a sequence's tokens do not depend on what it is batched with.
// More rows (prompts): the weight rows are decoded to float32 a tile at a time (kernels/quant.h's
// dequantize values) for OpenBLAS's GEMM, on float activations, which on this AVX2 machine's FMA
// units was faster than the integer tiles (measured 2026-12-06: 62-76 against 48-62 GMAC/s on 2
// cores at 128 rows); a row's result there differs from the integer path's by its activations'
// int16 rounding (up to 1/65534 of each block's largest magnitude).
// f16, bf16 and f8_e4m3 weights take the float path at every size.
#pragma once

#include <cstdint>

#include "kernels/tensor.h"

namespace tessera::ops::cpu {

// 32 activations as x[i] ~ d * q[i] (d = max |x| / 32767, q rounded to nearest), with d times
// the sum of q (what the formats' offsets and minimums multiply).
struct ActivationBlock {
  int16_t q[32];
  float d;
  float s;  // d * (q[0] + ... + q[31])
};

// blocks[0, k / 32) = the activation blocks of x[0, k) (k a multiple of 32; where
// integer_kernels_available()). A block holding a NaN gets d = NaN, so that the outputs it reaches
// are NaN too; a block too small for 32767 / max |x| to be finite is all zeros.
void quantize_activations(const float* x, int64_t k, ActivationBlock* blocks);

// Weight rows [n0, n1) of w (n, k), f16 / bf16 / quantized, against x (m, k) f32: y (m, ldy)
// columns [n0, n1). Single-threaded (the caller splits the rows among threads); for m up to
// kIntegerMaxRows, act holds x's activation blocks (m * k / 32 of them, row by row), else null.
void weight_rows_linear(const float* x, const ActivationBlock* act, int64_t m, int64_t k,
                        const Tensor& w, int64_t n0, int64_t n1, float* y, int64_t ldy);

// The most rows of x the integer kernels take (decode batches, and steps of a few prompt tokens);
// more go the float path.
inline constexpr int64_t kIntegerMaxRows = 64;

// The rows of x a lane tile of the integer kernels takes for weights of `type` (8 / its
// kLaneTileRows: 4 for q8_0, q4_0, q4_1 and the int4 groups, 8 for q5_0, q5_1 and the k-quants),
// where they take them; else 1. A last group of at most half that many goes one row of x at a time
// (weight_rows_linear).
int64_t integer_row_tile(DType type);

// Whether the integer kernels run here (an AVX2 CPU); elsewhere the float path serves every m.
bool integer_kernels_available();
// Whether weights of `type` take the integer kernels here (up to kIntegerMaxRows rows): the GGML
// formats and the int4 groups; f8_e4m3 (whose values are not small integers), f16 and bf16 take
// the float path.
bool integer_kernel_for(DType type);

}  // namespace tessera::ops::cpu
