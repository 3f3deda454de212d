// The quantized weight formats, as GGML stores them (GGUF files; tessera's model file keeps the
// blocks as they are). A row of n elements is n / B blocks of B elements; each block is a fixed
// number of bytes, little endian, f16 scales. Per block:
//
//   q8_0 (32 elements, 34 bytes): f16 d; i8 q[32]                 x[i] = d * q[i]
//   q4_0 (32, 18): f16 d; u8 qs[16]                                x[i] = d * (q[i] - 8)
//   q4_1 (32, 20): f16 d, m; u8 qs[16]                             x[i] = d * q[i] + m
//   q5_0 (32, 22): f16 d; u8 qh[4]; u8 qs[16]                      x[i] = d * (q[i] - 16)
//   q5_1 (32, 24): f16 d, m; u8 qh[4]; u8 qs[16]                   x[i] = d * q[i] + m
//       4-bit q[j] = qs[j] & 15 and q[j + 16] = qs[j] >> 4 (j < 16); the 5-bit formats add bit i
//       of the little-endian u32 qh as q[i]'s bit 4.
//   q4_k (256, 144): f16 d, dmin; u8 scales[12]; u8 qs[128]
//   q5_k (256, 176): f16 d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]
//       8 sub-blocks of 32, each with a 6-bit scale sc[s] and min m[s] packed in `scales`:
//       s < 4: sc = scales[s] & 63, m = scales[s + 4] & 63; s >= 4: sc = (scales[s + 4] & 15) |
//       (scales[s - 4] >> 6) << 4, m = (scales[s + 4] >> 4) | (scales[s] >> 6) << 4.
//       x = (d * sc[s]) * q - (dmin * m[s]). Element l of sub-block s = 2c + h (c < 4, h < 2) has
//       q = (qs[32c + l] >> 4h) & 15, and q5_k adds bit s of qh[l] as bit 4.
//   q6_k (256, 210): u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d
//       x[i] = (d * scales[i / 16]) * (q[i] - 32). Element 128h + 32j + l (h < 2, j < 4, l < 32)
//       has q = ((ql[64h + 32(j % 2) + l] >> 4(j / 2)) & 15) | ((qh[32h + l] >> 2j) & 3) << 4.
//
// The formats of AWQ / GPTQ int4 and FP8 checkpoints (io/quantized_checkpoint.h imports them into
// these, losslessly), little endian:
//
//   i4_g32 (32, 20): f16 d; u8 z; u8 0; u8 qs[16]                  x[i] = d * (q[i] - z)
//   i4_g128 (128, 68): f16 d; u8 z; u8 0; u8 qs[64]                x[i] = d * (q[i] - z)
//       4-bit codes in each chunk c of 32 elements as q4_0 has them: q[32c + j] = qs[16c + j] & 15,
//       q[32c + j + 16] = qs[16c + j] >> 4 (j < 16). The zero point z is 0..16 (GPTQ's legacy
//       zeros, stored minus one, reach 16). The product is exact in float32.
//   f8_e4m3 (128, 132): f32 d; u8 q[128]                           x[i] = d * e4m3(q[i])
//       e4m3 is float8_e4m3fn (kernels/dtype.h); x is the product rounded to float32.
//
// Decoding is bit-equal to gguf-py's gguf.quants.dequantize (the products in the order above,
// each rounded to float32). Those products are exact in float32 (an f16 significand has 11 bits,
// a sub-block scale at most 7, a code's magnitude at most 7, and no product has more than 24), so
// a fused multiply-add rounds x = d * q + m as the two operations do.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace tessera {

// dst[0, n) = the n elements (whole blocks) at src, of quantized type `type`.
void dequantize(DType type, const void* src, float* dst, int64_t n);

// Encodes n elements (whole blocks) of src as `type` at dst (dtype_bytes(type, n) bytes). Every
// element decodes to within half of its step (quant_steps), up to float32 rounding: scales are
// chosen so that each block's range is covered, then rounded to their stored precision away
// from shrinking it. Throws
// naming the element for a value that is not finite, or a block whose scale f16 cannot hold.
void quantize(DType type, const float* src, void* dst, int64_t n);

// step[0, n) = the value of one quantization level of each of the n encoded elements at src (a
// block's d, or d * sc of its sub-block; f8_e4m3: d times the spacing of e4m3 values in the
// binade of the element's code): how far apart its representable values are.
void quant_steps(DType type, const void* src, float* step, int64_t n);

}  // namespace tessera
