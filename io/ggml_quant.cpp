#include "io/ggml_quant.h"

#include <array>
#include <cstring>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/error.h"

namespace tessera {
namespace {

// Indexed by type id; entries with an empty name are ids that GGML never assigned or retired.
constexpr std::array<GgmlTypeTraits, 42> kTraits = {{
    {"F32", 1, 4},         // 0
    {"F16", 1, 2},         // 1
    {"Q4_0", 32, 18},      // 2
    {"Q4_1", 32, 20},      // 3
    {"", 0, 0},            // 4 (removed Q4_2)
    {"", 0, 0},            // 5 (removed Q4_3)
    {"Q5_0", 32, 22},      // 6
    {"Q5_1", 32, 24},      // 7
    {"Q8_0", 32, 34},      // 8
    {"Q8_1", 32, 40},      // 9
    {"Q2_K", 256, 84},     // 10
    {"Q3_K", 256, 110},    // 11
    {"Q4_K", 256, 144},    // 12
    {"Q5_K", 256, 176},    // 13
    {"Q6_K", 256, 210},    // 14
    {"Q8_K", 256, 292},    // 15
    {"IQ2_XXS", 256, 66},  // 16
    {"IQ2_XS", 256, 74},   // 17
    {"IQ3_XXS", 256, 98},  // 18
    {"IQ1_S", 256, 50},    // 19
    {"IQ4_NL", 32, 18},    // 20
    {"IQ3_S", 256, 110},   // 21
    {"IQ2_S", 256, 82},    // 22
    {"IQ4_XS", 256, 136},  // 23
    {"I8", 1, 1},          // 24
    {"I16", 1, 2},         // 25
    {"I32", 1, 4},         // 26
    {"I64", 1, 8},         // 27
    {"F64", 1, 8},         // 28
    {"IQ1_M", 256, 56},    // 29
    {"BF16", 1, 2},        // 30
    {"", 0, 0},            // 31 (removed Q4_0_4_4)
    {"", 0, 0},            // 32 (removed Q4_0_4_8)
    {"", 0, 0},            // 33 (removed Q4_0_8_8)
    {"TQ1_0", 256, 54},    // 34
    {"TQ2_0", 256, 66},    // 35
    {"", 0, 0},            // 36 (removed IQ4_NL_4_4)
    {"", 0, 0},            // 37 (removed IQ4_NL_4_8)
    {"", 0, 0},            // 38 (removed IQ4_NL_8_8)
    {"MXFP4", 32, 17},     // 39
    {"NVFP4", 64, 36},     // 40
    {"Q1_0", 128, 18},     // 41
}};

}  // namespace

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  if (type >= kTraits.size() || kTraits[type].name.empty()) return nullptr;
  return &kTraits[type];
}

std::string ggml_type_name(uint32_t type) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  if (t == nullptr) return "unknown(" + std::to_string(type) + ")";
  return std::string(t->name);
}

std::optional<DType> dtype_of_ggml(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::kF32: return DType::kF32;
    case GgmlType::kF16: return DType::kF16;
    case GgmlType::kBF16: return DType::kBF16;
    case GgmlType::kQ8_0: return DType::kQ8_0;
    case GgmlType::kQ4_0: return DType::kQ4_0;
    case GgmlType::kQ4_1: return DType::kQ4_1;
    case GgmlType::kQ5_0: return DType::kQ5_0;
    case GgmlType::kQ5_1: return DType::kQ5_1;
    case GgmlType::kQ4_K: return DType::kQ4_K;
    case GgmlType::kQ5_K: return DType::kQ5_K;
    case GgmlType::kQ6_K: return DType::kQ6_K;
  }
  return std::nullopt;
}

std::string ggml_readable_types() {
  std::string names;
  for (uint32_t id = 0; id < kTraits.size(); ++id)
    if (dtype_of_ggml(id)) names += (names.empty() ? "" : ", ") + std::string(kTraits[id].name);
  return names;
}

bool ggml_can_dequantize(uint32_t type) { return dtype_of_ggml(type).has_value(); }

void ggml_dequantize(uint32_t type, const void* src, float* dst, int64_t n) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  TESSERA_CHECK(t != nullptr, "cannot dequantize unknown GGML type id " << type);
  TESSERA_CHECK(n >= 0 && n % t->block_size == 0,
                "cannot dequantize " << n << " elements of " << t->name
                                     << ": not a multiple of its block size " << t->block_size);
  const std::optional<DType> dt = dtype_of_ggml(type);
  TESSERA_CHECK(dt.has_value(), "dequantizing GGML type " << t->name << " is not supported ("
                                                          << ggml_readable_types() << " are)");
  // (F16 and BF16 may be only byte-aligned: general.alignment can be 1; convert_to_f32 reads
  // them as 16-bit words, so they go through an aligned copy)
  if (!dtype_is_quantized(*dt) && reinterpret_cast<uintptr_t>(src) % dtype_size(*dt) != 0) {
    std::vector<uint8_t> aligned(dtype_bytes(*dt, n) + 8);
    uint8_t* a = aligned.data() + (8 - reinterpret_cast<uintptr_t>(aligned.data()) % 8) % 8;
    std::memcpy(a, src, dtype_bytes(*dt, n));
    convert_to_f32(*dt, a, dst, size_t(n));
    return;
  }
  convert_to_f32(*dt, src, dst, size_t(n));
}

}  // namespace tessera
