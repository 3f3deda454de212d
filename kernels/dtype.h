// Element types and the scalar conversions between them.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace tessera {

enum class DType : uint8_t { kF32, kF16, kBF16, kI32, kI64, kU8 };

size_t dtype_size(DType dt);
std::string_view dtype_name(DType dt);  // "f32", "f16", "bf16", "i32", "i64", "u8"
DType dtype_from_name(std::string_view name);  // throws on an unknown name

// IEEE half <-> float, exact for every half value; float -> half rounds to nearest even.
float half_to_float(uint16_t h);
uint16_t float_to_half(float f);

inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }
// Round to nearest even, NaN kept quiet.
inline uint16_t float_to_bf16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Converts n elements of type `from` at src to float32 at dst (from must be f32, f16 or bf16).
void convert_to_f32(DType from, const void* src, float* dst, size_t n);
// Converts n float32 values to type `to` (f32, f16 or bf16).
void convert_from_f32(DType to, const float* src, void* dst, size_t n);

}  // namespace tessera
