// y = x w^T on the CPU for weights kept as stored: f16, bf16 or a quantized format
// (kernels/quant.h), never a float32 copy of them.
//
// Up to kSkinnyMaxRows rows of x (decode batches): each row of x is quantized per 32 elements to
// int16 with one float scale (ActivationBlock: a relative error of at most 1 / 65534 of the
// block's largest magnitude, where int8 activations, at 1 / 254, moved the default model's greedy
// choice at one position in 26), and every weight block is read from memory once for all of them
// and multiplied with them in integers (AVX2: codes widened to 16 bits, times the sub-block's
// integer scale, vpmaddwd against the activations), one float multiply-add per 32 elements. A row's result
// depends only on that row (its own activation blocks, the same order of sums whatever the
// batch): within steps of up to 16 rows, a sequence's tokens do not depend on what it is batched
// with.
// More rows (prompts, and a step that carries a prompt chunk beside decoding rows): the weight
// rows are decoded to float32 a tile at a time (kernels/quant.h's dequantize values) for
// OpenBLAS's GEMM, on float activations; a decoding row's result there differs from the integer
// path's by its activations' int16 rounding (up to 1/65534 of each block's largest magnitude).
// f16 and bf16 weights take the float path at every size.
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
// kSkinnyMaxRows, act holds x's activation blocks (m * k / 32 of them, row by row), else null.
void weight_rows_linear(const float* x, const ActivationBlock* act, int64_t m, int64_t k,
                        const Tensor& w, int64_t n0, int64_t n1, float* y, int64_t ldy);

// Whether the integer kernels run here (an AVX2 CPU); elsewhere the float path serves every m.
bool integer_kernels_available();

}  // namespace tessera::ops::cpu
