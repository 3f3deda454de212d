// The quantized formats' encoder and decoder (kernels/quant.h): every element of every kind of
// block decodes to within half of its step; blocks written by hand decode to the values the
// layout documents. (Decoding is checked bit for bit against gguf-py by ref.gguf_dequant_parity.)
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "kernels/quant.h"

namespace tessera {
namespace {

// Blocks of every kind a weight matrix can hold, 256 elements each (whole blocks of every format).
std::vector<std::vector<float>> sample_blocks() {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<std::vector<float>> out;
  auto add = [&](const std::function<float(int)>& f) {
    std::vector<float> v(256);
    for (int i = 0; i < 256; ++i) v[size_t(i)] = f(i);
    out.push_back(v);
  };
  for (float scale : {1e-6f, 0.02f, 1.0f, 300.0f}) add([&](int) { return scale * normal(rng); });
  add([&](int) { return 0.0f; });                                  // all zero
  add([&](int) { return 0.75f; });                                 // constant, positive
  add([&](int) { return -2.5f; });                                 // constant, negative
  add([&](int) { return 3.0f + uniform(rng); });                   // all positive, offset
  add([&](int) { return -7.0f + 0.1f * uniform(rng); });           // all negative, narrow
  add([&](int i) { return i == 77 ? 40.0f : 0.01f * normal(rng); });   // one spike up
  add([&](int i) { return i == 3 ? -40.0f : 0.01f * normal(rng); });   // one spike down
  add([&](int i) { return (i / 32) % 2 ? 100.0f * uniform(rng) : 1e-3f * uniform(rng); });
  add([&](int i) { return i < 16 ? 5.0f : 0.0f; });                // one busy sub-block
  add([&](int) { return std::ldexp(uniform(rng), -20); });         // tiny (subnormal f16 scales)
  add([&](int) { return 4000.0f * uniform(rng); });                // large
  return out;
}

TEST(Quant, EveryElementDecodesWithinHalfItsStep) {
  for (DType type : kQuantizedDTypes) {
    for (const std::vector<float>& x : sample_blocks()) {
      std::vector<uint8_t> blocks(dtype_bytes(type, 256));
      quantize(type, x.data(), blocks.data(), 256);
      std::vector<float> y(256), step(256);
      dequantize(type, blocks.data(), y.data(), 256);
      quant_steps(type, blocks.data(), step.data(), 256);
      for (int i = 0; i < 256; ++i) {
        const float err = std::fabs(x[size_t(i)] - y[size_t(i)]);
        // half a step, and float32 rounding of the decode's products
        const float bound = 0.5f * step[size_t(i)] * (1 + 1e-5f) + 2e-7f * std::fabs(x[size_t(i)]);
        ASSERT_LE(err, bound) << dtype_name(type) << " element " << i << ": " << x[size_t(i)]
                              << " decoded as " << y[size_t(i)] << ", step " << step[size_t(i)];
      }
    }
  }
}

TEST(Quant, StepsAreNoCoarserThanTheBlocksNeed) {
  // One normal block: the step of every element is at most what covering its block (or sub-block)
  // with the format's levels needs, times the slack of rounding the scales up (f16, 6-bit or
  // 8-bit multiples). A quantizer that chose needlessly large scales would pass the round trip.
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(256);
  for (float& v : x) v = normal(rng);
  struct Case {
    DType type;
    int sub;         // elements sharing a step
    float divisor;   // symmetric formats: steps from 0 to the largest magnitude; others: steps
                     // across the range [min, max] (k formats: [min(0, min), max])
    bool symmetric;
    float slack;     // rounding the scales up (f16; 6-bit or 8-bit multiples of a block scale)
  };
  for (const Case& c : {Case{DType::kQ8_0, 32, 127, true, 1.002f},
                        Case{DType::kQ4_0, 32, 7.5f, true, 1.002f},
                        Case{DType::kQ5_0, 32, 15.5f, true, 1.002f},
                        Case{DType::kQ6_K, 16, 31.5f, true, 1.05f},
                        Case{DType::kQ4_1, 32, 15, false, 1.002f},
                        Case{DType::kQ5_1, 32, 31, false, 1.002f},
                        Case{DType::kQ4_K, 32, 15, false, 1.1f},
                        Case{DType::kQ5_K, 32, 31, false, 1.1f}}) {
    std::vector<uint8_t> blocks(dtype_bytes(c.type, 256));
    quantize(c.type, x.data(), blocks.data(), 256);
    std::vector<float> step(256);
    quant_steps(c.type, blocks.data(), step.data(), 256);
    const bool k = c.type == DType::kQ4_K || c.type == DType::kQ5_K;
    for (int s = 0; s < 256 / c.sub; ++s) {
      float lo = k ? 0.0f : x[size_t(s * c.sub)], hi = lo, big = 0;
      for (int i = s * c.sub; i < (s + 1) * c.sub; ++i) {
        lo = std::min(lo, x[size_t(i)]);
        hi = std::max(hi, x[size_t(i)]);
        big = std::max(big, std::fabs(x[size_t(i)]));
      }
      const float need = (c.symmetric ? big : hi - lo) / c.divisor;
      EXPECT_LE(step[size_t(s * c.sub)], need * c.slack)
          << dtype_name(c.type) << " sub-block " << s;
    }
  }
}

uint16_t half(float v) { return float_to_half(v); }

TEST(Quant, HandWrittenBlocksDecodeAsTheLayoutSays) {
  {  // q5_0: d = -0.5; element i has low nibble i % 16 and fifth bit set for odd i
    std::vector<uint8_t> b(22, 0);
    const uint16_t d = half(-0.5f);
    std::memcpy(b.data(), &d, 2);
    const uint32_t qh = 0xAAAAAAAAu;
    std::memcpy(b.data() + 2, &qh, 4);
    for (int j = 0; j < 16; ++j) b[size_t(6 + j)] = uint8_t(j | (15 - j) << 4);
    std::vector<float> y(32);
    dequantize(DType::kQ5_0, b.data(), y.data(), 32);
    for (int i = 0; i < 32; ++i) {
      const int q = (i < 16 ? i : 15 - (i - 16)) | (i % 2) << 4;
      EXPECT_EQ(y[size_t(i)], -0.5f * float(q - 16)) << i;
    }
  }
  {  // q4_k: d = 0.5, dmin = 0.25; sub-block s has scale s + 1 (s < 4) or 40 + s, min 2s or 50 + s
    std::vector<uint8_t> b(144, 0);
    const uint16_t d = half(0.5f), dmin = half(0.25f);
    std::memcpy(b.data(), &d, 2);
    std::memcpy(b.data() + 2, &dmin, 2);
    int sc[8], m[8];
    for (int s = 0; s < 8; ++s) {
      sc[s] = s < 4 ? s + 1 : 40 + s;
      m[s] = s < 4 ? 2 * s : 50 + s;
    }
    uint8_t* scales = b.data() + 4;
    for (int t = 0; t < 4; ++t) {
      scales[t] = uint8_t(sc[t] | (sc[t + 4] >> 4) << 6);
      scales[t + 4] = uint8_t(m[t] | (m[t + 4] >> 4) << 6);
      scales[t + 8] = uint8_t((sc[t + 4] & 15) | (m[t + 4] & 15) << 4);
    }
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l) b[size_t(16 + 32 * c + l)] = uint8_t((l % 16) | (15 - l % 16) << 4);
    std::vector<float> y(256);
    dequantize(DType::kQ4_K, b.data(), y.data(), 256);
    for (int s = 0; s < 8; ++s)
      for (int l = 0; l < 32; ++l) {
        const int q = s % 2 ? 15 - l % 16 : l % 16;
        EXPECT_EQ(y[size_t(32 * s + l)], 0.5f * float(sc[s]) * float(q) - 0.25f * float(m[s]))
            << s << " " << l;
      }
  }
  {  // q6_k: d = 2; sub-block s has scale s - 8; every q = 32 + (i % 32) - 16
    std::vector<uint8_t> b(210, 0);
    for (int i = 0; i < 256; ++i) {
      const int q = 32 + (i % 32) - 16, h = i / 128, j = (i % 128) / 32, l = i % 32;
      b[size_t(64 * h + 32 * (j % 2) + l)] |= uint8_t((q & 15) << (4 * (j / 2)));
      b[size_t(128 + 32 * h + l)] |= uint8_t((q >> 4) << (2 * j));
    }
    for (int s = 0; s < 16; ++s) b[size_t(192 + s)] = uint8_t(int8_t(s - 8));
    const uint16_t d = half(2.0f);
    std::memcpy(b.data() + 208, &d, 2);
    std::vector<float> y(256);
    dequantize(DType::kQ6_K, b.data(), y.data(), 256);
    for (int i = 0; i < 256; ++i)
      EXPECT_EQ(y[size_t(i)], 2.0f * float(i / 16 - 8) * float(i % 32 - 16)) << i;
  }
}

TEST(Quant, RefusesWhatItCannotEncode) {
  std::vector<float> x(32, 1.0f);
  std::vector<uint8_t> b(34);
  x[7] = std::nanf("");
  try {
    quantize(DType::kQ8_0, x.data(), b.data(), 32);
    FAIL() << "a NaN was quantized";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("element 7"), std::string::npos) << e.what();
  }
  x[7] = 1e30f;  // d = 1e30 / 127 is beyond f16
  EXPECT_THROW(quantize(DType::kQ8_0, x.data(), b.data(), 32), Error);
  EXPECT_THROW(quantize(DType::kQ8_0, x.data(), b.data(), 31), Error);  // not whole blocks
  EXPECT_THROW(dtype_bytes(DType::kQ4_K, 32), Error);
  EXPECT_EQ(dtype_bytes(DType::kQ4_K, 512), 288u);
  EXPECT_EQ(dtype_from_name("q6_k"), DType::kQ6_K);
}

}  // namespace
}  // namespace tessera
