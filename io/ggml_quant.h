// GGML tensor types as stored in GGUF files: their ids, names and block sizes, which of them tessera
// keeps (as the DType of the same layout, kernels/quant.h), and their decoding to float32.
//
// Every GGML type packs elements in blocks: `block_size` elements take `type_size` bytes, and a
// row's length (ne[0]) must be a multiple of block_size. Kept and decoded: F32, F16, BF16, Q8_0,
// Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K. Every other type is known by name and size (so files
// holding it can be opened and checked), but reading it throws.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "kernels/dtype.h"

namespace tessera {

// Type ids as written in GGUF tensor infos (only those tessera names explicitly).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
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
// The tessera type of the same layout (f32, f16, bf16 or a quantized format), or none.
std::optional<DType> dtype_of_ggml(uint32_t type);
// True for the types ggml_dequantize decodes (those dtype_of_ggml knows).
bool ggml_can_dequantize(uint32_t type);
// "F32, F16, BF16, Q8_0, ..., Q6_K": the types tessera reads, for messages.
std::string ggml_readable_types();

// Decodes n elements (a multiple of the type's block size) from src to dst. Throws
// tessera::Error for an unsupported type or a bad n.
void ggml_dequantize(uint32_t type, const void* src, float* dst, int64_t n);

}  // namespace tessera
