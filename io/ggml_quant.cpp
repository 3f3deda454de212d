#include "io/ggml_quant.h"

#include <array>
#include <cstring>

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

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return half_to_float(h);
}

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

bool ggml_can_dequantize(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
    case GgmlType::kQ8_0:
    case GgmlType::kQ4_0:
    case GgmlType::kQ4_1:
      return true;
  }
  return false;
}

void dequantize_q8_0(const void* src, float* dst, int64_t n) {
  TESSERA_ASSERT(n % 32 == 0, "Q8_0 length " << n << " is not a multiple of 32");
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / 32; ++b, p += 34, dst += 32) {
    const float d = load_f16(p);
    const auto* q = reinterpret_cast<const int8_t*>(p + 2);
    for (int i = 0; i < 32; ++i) dst[i] = float(q[i]) * d;
  }
}

void dequantize_q4_0(const void* src, float* dst, int64_t n) {
  TESSERA_ASSERT(n % 32 == 0, "Q4_0 length " << n << " is not a multiple of 32");
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / 32; ++b, p += 18, dst += 32) {
    const float d = load_f16(p);
    const uint8_t* qs = p + 2;
    for (int j = 0; j < 16; ++j) {
      dst[j] = float(int(qs[j] & 0x0f) - 8) * d;
      dst[j + 16] = float(int(qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const void* src, float* dst, int64_t n) {
  TESSERA_ASSERT(n % 32 == 0, "Q4_1 length " << n << " is not a multiple of 32");
  const auto* p = static_cast<const uint8_t*>(src);
  for (int64_t b = 0; b < n / 32; ++b, p += 20, dst += 32) {
    const float d = load_f16(p);
    const float m = load_f16(p + 2);
    const uint8_t* qs = p + 4;
    for (int j = 0; j < 16; ++j) {
      dst[j] = float(qs[j] & 0x0f) * d + m;
      dst[j + 16] = float(qs[j] >> 4) * d + m;
    }
  }
}

void ggml_dequantize(uint32_t type, const void* src, float* dst, int64_t n) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  TESSERA_CHECK(t != nullptr, "cannot dequantize unknown GGML type id " << type);
  TESSERA_CHECK(n >= 0 && n % t->block_size == 0,
                "cannot dequantize " << n << " elements of " << t->name
                                     << ": not a multiple of its block size " << t->block_size);
  switch (GgmlType(type)) {
    case GgmlType::kF32:
      if (n > 0) std::memcpy(dst, src, size_t(n) * 4);
      return;
    case GgmlType::kF16: {  // src may be only byte-aligned (general.alignment can be 1)
      const auto* p = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = load_f16(p + 2 * i);
      return;
    }
    case GgmlType::kBF16: {
      const auto* p = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t b;
        std::memcpy(&b, p + 2 * i, 2);
        dst[i] = bf16_to_float(b);
      }
      return;
    }
    case GgmlType::kQ8_0:
      dequantize_q8_0(src, dst, n);
      return;
    case GgmlType::kQ4_0:
      dequantize_q4_0(src, dst, n);
      return;
    case GgmlType::kQ4_1:
      dequantize_q4_1(src, dst, n);
      return;
  }
  TESSERA_FAIL("dequantizing GGML type " << t->name << " is not supported (supported: F32, F16, "
                                         << "BF16, Q8_0, Q4_0, Q4_1)");
}

}  // namespace tessera
