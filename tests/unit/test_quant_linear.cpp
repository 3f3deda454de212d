// The CPU's linear on weights kept as stored (kernels/cpu/quant_linear.h) against a float64
// matmul over the same weights dequantized (kernels/quant.h), every output element, for every
// format and batch size:
//   - up to 64 rows (decode batches): x is rounded to int16 activation blocks, x[i] = d q[i] + e[i]
//   with
//     |e[i]| <= d / 2 and d = max |x| / 32767 over the 32-element block, so an output may be off
//     by sum over blocks of d / 2 * sum |w[i]| from the activations, plus float32 rounding of the
//     per-block products and their sum: bound = that + 4e-6 * sum |w[i] x[i]| (a float32 sum of
//     k / 32 terms each within 2^-24 relative, with room);
//   - more rows (prompts): float activations, the weights decoded exactly and multiplied by
//     OpenBLAS in float32: bound = k * 2^-24 * sum |w[i] x[i]| (the classic dot-product bound).
// Also: a row's output is the same bits whatever it is batched with (up to 64 rows); the
// embedding op picks and decodes the right rows of a quantized table.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/quant_linear.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/quant.h"

namespace tessera {
namespace {

struct Problem {
  Tensor w;               // (n, k) stored
  std::vector<float> wf;  // the same, dequantized
  Tensor x;               // (m, k) f32
};

Problem make(DType type, int64_t n, int64_t k, int64_t m, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(size_t(n * k));
  for (float& v : w) v = 0.05f * normal(rng);
  for (int64_t i = 0; i < n; i += 5) w[size_t(i * k + (i % k))] = 1.5f;  // a few large weights
  Problem p;
  p.w = Tensor::empty({n, k}, type);
  if (dtype_is_quantized(type))
    quantize(type, w.data(), p.w.raw(), n * k);
  else
    convert_from_f32(type, w.data(), p.w.raw(), size_t(n * k));
  p.wf.resize(w.size());
  convert_to_f32(type, p.w.raw(), p.wf.data(), p.wf.size());
  std::vector<float> x(size_t(m * k));
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = i % 97 == 3 ? 30.0f * normal(rng) : normal(rng);  // outlier channels, as hidden states
  p.x = Tensor::from_f32(x, {m, k});
  return p;
}

// The output bound of row r, column c (see the file comment).
double bound(const Problem& p, int64_t r, int64_t c, bool integer) {
  const int64_t k = p.x.dim(1);
  const float* x = p.x.data<float>() + r * k;
  const float* w = p.wf.data() + c * k;
  double mag = 0, activation = 0;
  for (int64_t b = 0; b < k / 32; ++b) {
    double amax = 0, wsum = 0;
    for (int64_t i = 32 * b; i < 32 * b + 32; ++i) {
      amax = std::max(amax, double(std::fabs(x[i])));
      wsum += std::fabs(w[i]);
      mag += std::fabs(double(w[i]) * x[i]);
    }
    activation += amax / 32767 / 2 * wsum;
  }
  return integer ? activation * (1 + 1e-3) + 4e-6 * mag : double(k) * std::ldexp(1.0, -24) * mag;
}

TEST(QuantLinear, EveryFormatAndBatchSizeAgreesWithFloat64OverTheDequantizedWeights) {
  std::vector<DType> types(std::begin(kQuantizedDTypes), std::end(kQuantizedDTypes));
  types.push_back(DType::kF16);
  types.push_back(DType::kBF16);
  for (DType type : types)
    for (int64_t m : {1, 2, 3, 4, 5, 8, 9, 16, 17, 40, 64, 65}) {
      const int64_t k = dtype_block_elements(type) == 32 ? 576 : 512, n = 37;
      const Problem p = make(type, n, k, m, uint32_t(m) * 7 + uint32_t(type));
      Tensor y = Tensor::empty({m, n}, DType::kF32);
      ops::linear(p.x, p.w, nullptr, y);
      const bool int_path = ops::cpu::integer_kernel_for(type) && m <= ops::cpu::kIntegerMaxRows;
      double worst = 0;  // error / bound
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) {
          double want = 0;
          for (int64_t i = 0; i < k; ++i)
            want += double(p.wf[size_t(c * k + i)]) * p.x.data<float>()[r * k + i];
          const double err = std::fabs(double(y.data<float>()[r * n + c]) - want);
          const double b = bound(p, r, c, int_path);
          ASSERT_LE(err, b) << dtype_name(type) << " m " << m << " row " << r << " col " << c
                            << ": " << y.data<float>()[r * n + c] << " vs " << want;
          worst = std::max(worst, err / b);
        }
      // The bound is the activations' rounding: the integer path does round them (some output
      // is off by a good part of its bound), the float path does not.
      if (int_path) {
        EXPECT_GT(worst, 0.01) << dtype_name(type) << " m " << m;
      }
    }
}

TEST(QuantLinear, ARowIsTheSameBitsWhateverItIsBatchedWith) {
  // Up to kIntegerMaxRows rows: one row alone (the decode kernel), and batches whose tiles cut
  // the rows differently (groups of 4 or 8 rows of x, odd counts of weight rows).
  for (DType type : kQuantizedDTypes) {
    const int64_t k = dtype_block_elements(type) == 32 ? 576 : 512, n = 37;
    const int64_t m = ops::cpu::kIntegerMaxRows;
    const Problem p = make(type, n, k, m, 11);
    Tensor all = Tensor::empty({m, n}, DType::kF32);
    ops::linear(p.x, p.w, nullptr, all);
    for (int64_t r : {0, 5, 15, 40})
      for (int64_t batch : {1, 2, 3, 7, 9, 17}) {
        if (r + batch > m) continue;
        Tensor y = Tensor::empty({batch, n}, DType::kF32);
        ops::linear(p.x.rows(r, r + batch), p.w, nullptr, y);
        for (int64_t i = 0; i < batch; ++i)
          for (int64_t c = 0; c < n; ++c)
            ASSERT_EQ(y.data<float>()[i * n + c], all.data<float>()[(r + i) * n + c])
                << dtype_name(type) << " row " << r + i << " in a batch of " << batch
                << " from row " << r << ", col " << c;
      }
  }
}

TEST(QuantLinear, ManyWeightRowsAndPartsGiveEachLinearsBits) {
  // Weights of more rows than one L2 panel of the GEMM tiles holds (about 192 KiB a thread), in
  // a group of parts of different formats (as q/k/v share one activation quantization and one
  // parallel region): each part is the same bits as its own linear, and within its bound.
  const int64_t k = 512;
  for (int64_t m : {1, 6, 40}) {
    const Problem big = make(DType::kQ8_0, 1201, k, m, 21);  // 1201 * 544 bytes: 4 panels
    const Problem q5 = make(DType::kQ5_0, 45, k, m, 22);
    const Problem q6 = make(DType::kQ6_K, 33, k, m, 23);
    const Tensor& x = big.x;
    Tensor y_big = Tensor::empty({m, 1201}, DType::kF32),
           y_q5 = Tensor::empty({m, 45}, DType::kF32), y_q6 = Tensor::empty({m, 33}, DType::kF32);
    ops::linear_group(
        x, {{&big.w, nullptr, &y_big}, {&q5.w, nullptr, &y_q5}, {&q6.w, nullptr, &y_q6}});
    for (const auto& [p, y] : {std::pair{&big, &y_big}, {&q5, &y_q5}, {&q6, &y_q6}}) {
      const int64_t n = p->w.dim(0);
      Tensor alone = Tensor::empty({m, n}, DType::kF32);
      ops::linear(x, p->w, nullptr, alone);
      Problem with_x = {p->w, p->wf, x};
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) {
          const float got = y->data<float>()[r * n + c];
          ASSERT_EQ(got, alone.data<float>()[r * n + c])
              << dtype_name(p->w.dtype()) << " m " << m << " row " << r << " col " << c;
          double want = 0;
          for (int64_t i = 0; i < k; ++i)
            want += double(p->wf[size_t(c * k + i)]) * x.data<float>()[r * k + i];
          ASSERT_LE(std::fabs(got - want),
                    bound(with_x, r, c, ops::cpu::integer_kernels_available()))
              << dtype_name(p->w.dtype()) << " m " << m << " row " << r << " col " << c;
        }
    }
  }
}

TEST(QuantLinear, EmbeddingRowsOfAQuantizedTableAreItsDequantizedRows) {
  for (DType type : {DType::kQ8_0, DType::kQ4_K, DType::kQ6_K, DType::kF16}) {
    const Problem p = make(type, 9, 256, 1, 3);
    Tensor out = Tensor::empty({3, 256}, DType::kF32);
    ops::embedding(p.w, {4, 0, 8}, out);
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t j = 0; j < 256; ++j)
        ASSERT_EQ(out.data<float>()[i * 256 + j], p.wf[size_t((i == 0   ? 4
                                                               : i == 1 ? 0
                                                                        : 8) *
                                                                  256 +
                                                              j)])
            << dtype_name(type);
  }
}

}  // namespace
}  // namespace tessera
