// Element types and the scalar conversions between them.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tessera {

// Plain element types, then the quantized weight formats (block layouts, kernels/quant.h: GGML's,
// then the int4 groups of AWQ / GPTQ checkpoints and FP8 e4m3 with a scale): a quantized tensor's
// shape counts elements, and its rows are whole blocks of them. kE4M3 is a plain float8_e4m3fn
// element (an FP8 KV cache's keys and values, each layer's with a scale: runtime/kv_cache.h).
enum class DType : uint8_t {
  kF32, kF16, kBF16, kI32, kI64, kU8, kE4M3,
  kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ4_K, kQ5_K, kQ6_K,
  kI4G32, kI4G128, kF8E4M3,
};
inline constexpr DType kQuantizedDTypes[] = {
    DType::kQ8_0, DType::kQ4_0, DType::kQ4_1,  DType::kQ5_0,   DType::kQ5_1,  DType::kQ4_K,
    DType::kQ5_K, DType::kQ6_K, DType::kI4G32, DType::kI4G128, DType::kF8E4M3};

inline bool dtype_is_quantized(DType dt) { return dt >= DType::kQ8_0; }
// Bytes of one element of a plain type (a quantized type has none: see dtype_bytes).
size_t dtype_size(DType dt);
// Elements per block (32 or 256 for the quantized formats, 1 for plain types) and its bytes.
int64_t dtype_block_elements(DType dt);
size_t dtype_block_bytes(DType dt);
// Bytes of n elements (for a quantized type n must be whole blocks; throws naming the numbers).
size_t dtype_bytes(DType dt, int64_t n);
// "f32", "f16", "bf16", "i32", "i64", "u8", "e4m3", "q8_0", "q4_0", ..., "q6_k", "i4_g32", "i4_g128",
// "f8_e4m3"
std::string_view dtype_name(DType dt);
DType dtype_from_name(std::string_view name);  // throws on an unknown name

// IEEE half <-> float, exact for every half value; float -> half rounds to nearest even.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

// float8_e4m3fn (sign, 4 exponent bits of bias 7, 3 mantissa bits; no infinities, S.1111.111 is
// NaN, the largest magnitude 448) <-> float: decoding is exact; encoding rounds to nearest even
// and saturates beyond 448, NaN kept.
float fp8_e4m3_to_float(uint8_t q);
uint8_t float_to_fp8_e4m3(float f);

inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }
// Round to nearest even, NaN kept quiet.
inline uint16_t float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Converts n elements of type `from` at src to float32 at dst (f32, f16, bf16, e4m3, or a
// quantized format: whole blocks, dequantized).
void convert_to_f32(DType from, const void* src, float* dst, size_t n);
// Converts n float32 values to type `to` (f32, f16, bf16, or e4m3: saturating at 448).
void convert_from_f32(DType to, const float* src, void* dst, size_t n);

}  // namespace tessera
