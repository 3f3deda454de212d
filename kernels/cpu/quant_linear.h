// y = x w^T on the CPU for weights kept as stored: f16, bf16 or a quantized format
// (kernels/quant.h), never a float32 copy of them.
//
// Up to kSkinnyMaxRows rows of x (decode batches): each row of x is quantized per 32 elements to
// int16 with one float scale (ActivationBlock: a relative error of at most 1 / 65534 of the
// block's largest magnitude, where int8 activations, at 1 / 254, moved the default model's greedy
// choice at one position in 26), and every weight block is read once and multiplied with those
// rows in integers (AVX2: codes widened to 16 bits, times the sub-block's integer scale,
// vpmaddwd against the activations), one float multiply-add per 32 elements. A row's result
// depends only on that row (its own activation blocks, the same order of sums whatever the
// batch), so a sequence's tokens do not depend on what it is batched with.
// More rows (prompts): the weight rows are decoded to float32 a tile at a time (bit-equal to
// kernels/quant.h's dequantize) for OpenBLAS's GEMM, on float activations.
// f16 and bf16 weights take the float path at every size.
#pragma once

#include <cstdint>

#include "kernels/tensor.h"

namespace tessera::ops::cpu {

// 32 activations as x[i] ~ d * q[i] (d = max |x| / 32767, q rounded to nearest), with d times
// the sum of q over each half (what the formats' offsets and minimums multiply).
struct ActivationBlock {
  int16_t q[32];
  float d;
  float s[2];  // d * (q[0] + ... + q[15]), d * (q[16] + ... + q[31])
};

// blocks[0, k / 32) = the activation blocks of x[0, k) (k a multiple of 32).
void quantize_activations(const float* x, int64_t k, ActivationBlock* blocks);

// Weight rows [n0, n1) of w (n, k), f16 / bf16 / quantized, against x (m, k) f32: y (m, ldy)
// columns [n0, n1). Single-threaded (the caller splits the rows among threads); for m up to
// kSkinnyMaxRows, act holds x's activation blocks (m * k / 32 of them, row by row), else null.
void weight_rows_linear(const float* x, const ActivationBlock* act, int64_t m, int64_t k,
                        const Tensor& w, int64_t n0, int64_t n1, float* y, int64_t ldy);

// Whether the integer kernels run here (an AVX2 CPU); elsewhere the float path serves every m.
bool integer_kernels_available();

}  // namespace tessera::ops::cpu
