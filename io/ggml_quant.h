// GGML tensor types as stored in GGUF files, and their dequantization to float32.
//
// Every GGML type packs elements in blocks: `block_size` elements take `type_size` bytes, and a
// row's length (ne[0]) must be a multiple of block_size. The block layouts decoded here:
//   F32, F16, BF16: one element per block (4, 2, 2 bytes, little endian).
//   Q8_0 (34 bytes / 32): f16 d, int8 q[32];          x[i] = q[i] * d
//   Q4_0 (18 bytes / 32): f16 d, u8 qs[16];           x[j] = (lo(qs[j]) - 8) * d,
//                                                     x[j + 16] = (hi(qs[j]) - 8) * d
//   Q4_1 (20 bytes / 32): f16 d, f16 m, u8 qs[16];    x[j] = lo(qs[j]) * d + m,
//                                                     x[j + 16] = hi(qs[j]) * d + m
// Every other type is known by name and size (so files holding it can be opened and checked),
// but dequantizing it throws.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tessera {

// Type ids as written in GGUF tensor infos (only those tessera names explicitly).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kBF16 = 30,
};

struct GgmlTypeTraits {
  std::string_view name;  // "F32", "Q4_1", "Q6_K", ...
  int64_t block_size;     // elements per block
  int64_t type_size;      // bytes per block
};

// nullptr when the id is not a known GGML type.
const GgmlTypeTraits* ggml_type_traits(uint32_t type);
// "Q6_K", or "unknown(99)" for an unknown id.
std::string ggml_type_name(uint32_t type);
// True for the types ggml_dequantize decodes.
bool ggml_can_dequantize(uint32_t type);

// Decodes n elements (a multiple of the type's block size) from src to dst. Throws
// tessera::Error for an unsupported type or a bad n.
void ggml_dequantize(uint32_t type, const void* src, float* dst, int64_t n);

// The per-type decoders (n a multiple of 32), exposed for tests and for callers that dispatch
// themselves.
void dequantize_q8_0(const void* src, float* dst, int64_t n);
void dequantize_q4_0(const void* src, float* dst, int64_t n);
void dequantize_q4_1(const void* src, float* dst, int64_t n);

}  // namespace tessera
