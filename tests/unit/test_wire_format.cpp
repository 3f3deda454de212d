// The formats of what crosses ranks (parallel/wire_format.h), checked against bounds computed
// here: bf16 is the nearest bf16 value (found by search over the neighbouring bf16 values); in q8
// a block's largest magnitude is its nearest bf16 value and the others are within half a step of
// the next largest magnitude / 127 (an f16 scale); sizes are as documented.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/error.h"
#include "parallel/wire_format.h"

namespace tessera {
namespace {

std::vector<float> sample(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)  // magnitudes from 1e-3 to 1e3, an outlier every 97th value
    v[size_t(i)] = normal(rng) * (i % 97 == 5 ? 1000.0f : std::pow(10.0f, float(i % 5) - 2.0f));
  return v;
}

std::vector<float> round_trip(WireFormat f, const std::vector<float>& x) {
  std::vector<uint8_t> bytes(size_t(wire_bytes(f, int64_t(x.size()))));
  wire_encode(f, x.data(), int64_t(x.size()), bytes.data());
  std::vector<float> y(x.size(), -7.0f);
  wire_decode(f, bytes.data(), int64_t(x.size()), y.data(), false);
  return y;
}

TEST(WireFormat, NamesAndSizes) {
  for (WireFormat f : {WireFormat::kF32, WireFormat::kBF16, WireFormat::kQ8})
    EXPECT_EQ(wire_format_from_name(wire_format_name(f)), f);
  try {
    wire_format_from_name("int8");
    FAIL() << "int8 accepted";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "--comm-dtype 'int8' is not one of f32, bf16, q8");
  }
  EXPECT_EQ(wire_bytes(WireFormat::kF32, 576), 2304);
  EXPECT_EQ(wire_bytes(WireFormat::kBF16, 576), 1152);
  EXPECT_EQ(wire_bytes(WireFormat::kQ8, 576), 18 * 37);  // f16 scale, 32 int8, bf16, index
  EXPECT_EQ(wire_bytes(WireFormat::kQ8, 33), 2 * 37);    // a tail block is whole
}

TEST(WireFormat, F32IsExact) {
  const std::vector<float> x = sample(1000, 1);
  EXPECT_EQ(round_trip(WireFormat::kF32, x), x);
}

TEST(WireFormat, Bf16IsTheNearestBf16Value) {
  const std::vector<float> x = sample(4096, 2);
  const std::vector<float> y = round_trip(WireFormat::kBF16, x);
  for (size_t i = 0; i < x.size(); ++i) {
    const uint32_t bits = std::bit_cast<uint32_t>(y[i]);
    ASSERT_EQ(bits & 0xffffu, 0u) << "not a bf16 value: " << y[i];
    // No other bf16 value (the neighbours of the one chosen) is nearer x.
    for (int step : {-1, 1}) {
      const float other = std::bit_cast<float>(bits + uint32_t(step) * 0x10000u);
      ASSERT_LE(std::fabs(y[i] - x[i]), std::fabs(other - x[i])) << x[i];
    }
  }
}

float nearest_bf16(float x) {  // (by search: the two bf16 values around x)
  const uint32_t down = std::bit_cast<uint32_t>(x) & 0xffff0000u;
  const float a = std::bit_cast<float>(down), b = std::bit_cast<float>(down + 0x10000u);
  return std::fabs(b - x) < std::fabs(a - x) ? b : a;
}

TEST(WireFormat, Q8KeepsEachBlocksLargestAndScalesTheRestByTheNext) {
  for (int64_t n : {int64_t(32), int64_t(576), int64_t(45), int64_t(1)}) {
    std::vector<float> x = sample(n, uint32_t(n));
    if (n > 40) x[40] = 22500.0f;  // a massive activation (the default model's BOS row has one)
    const std::vector<float> y = round_trip(WireFormat::kQ8, x);
    for (int64_t b = 0; b * 32 < n; ++b) {
      const int64_t end = std::min(n, b * 32 + 32);
      int64_t top = b * 32;
      for (int64_t i = b * 32; i < end; ++i)
        if (std::fabs(x[size_t(i)]) > std::fabs(x[size_t(top)])) top = i;
      ASSERT_EQ(y[size_t(top)], nearest_bf16(x[size_t(top)])) << "n " << n << " at " << top;
      float next = 0;
      for (int64_t i = b * 32; i < end; ++i)
        if (i != top) next = std::max(next, std::fabs(x[size_t(i)]));
      // half a step of next / 127, the scale rounded up to an f16 (2^-10 relative) with it
      const float bound = 0.5f * next / 127.0f * (1.0f + 1.0f / 1024.0f) + 1e-7f * next;
      for (int64_t i = b * 32; i < end; ++i)
        if (i != top)
          ASSERT_LE(std::fabs(y[size_t(i)] - x[size_t(i)]), bound) << "n " << n << " at " << i;
    }
  }
}

TEST(WireFormat, Q8NeverThrows) {
  // (an encoder that threw on one rank would leave the others waiting in the collective)
  std::vector<float> x(64, 1.0f);
  x[3] = std::nanf("");  // carried as NaN, as f32 would carry it
  x[40] = 1e38f;         // beyond the largest f16 scale: clamped to 127 x 65504
  x[41] = 3e38f;         // the block's largest: kept
  const std::vector<float> y = round_trip(WireFormat::kQ8, x);
  EXPECT_EQ(y[0], 1.0f);  // (the NaN block's largest, kept)
  EXPECT_TRUE(std::isnan(y[1]) && std::isnan(y[3])) << y[1];
  EXPECT_EQ(y[41], nearest_bf16(3e38f));
  EXPECT_EQ(y[40], 127.0f * 65504.0f);
  // an infinity that is not its block's largest is clamped too; a block of zeros stays zeros
  std::vector<float> z(64, 0.0f);
  z[1] = -INFINITY;
  z[2] = INFINITY;
  const std::vector<float> w = round_trip(WireFormat::kQ8, z);
  EXPECT_EQ(w[1], -INFINITY);  // (the block's first largest, kept)
  EXPECT_EQ(w[2], 127.0f * 65504.0f);
  for (size_t i = 32; i < 64; ++i) EXPECT_EQ(w[i], 0.0f) << i;
}

TEST(WireFormat, DecodeAccumulates) {
  const std::vector<float> x = sample(100, 3);
  for (WireFormat f : {WireFormat::kF32, WireFormat::kBF16, WireFormat::kQ8}) {
    std::vector<uint8_t> bytes(size_t(wire_bytes(f, 100)));
    wire_encode(f, x.data(), 100, bytes.data());
    const std::vector<float> once = round_trip(f, x);
    std::vector<float> sum(100, 0.5f);
    wire_decode(f, bytes.data(), 100, sum.data(), true);
    for (size_t i = 0; i < 100; ++i) EXPECT_EQ(sum[i], 0.5f + once[i]) << wire_format_name(f);
  }
}

}  // namespace
}  // namespace tessera
