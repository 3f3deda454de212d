// The ops of kernels/ops.h on GPU tensors — what the model calls — against the same ops on host
// tensors, on random data (never zeros), every element: linear (f32 and bf16, with and without
// bias; over weights kept quantized; on a real GPU cuBLAS is also checked against the simple kernel), the norms, the residual
// add, embedding, gathering columns, SwiGLU, RoPE, contiguous attention with causal and all-visible keys, merging and
// finishing states, the KV write into f32/f16 pools, rounding through f16/bf16, copies, and
// sampling's repetition penalty and top-k. On a real
// GPU where there is one (skipped, saying why, where not) and on an emulated GPU (host memory, the
// kernel sources on the CUDA emulator) everywhere.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/quant.h"
#include "kernels/tensor.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/quant_linear_launchers.h"
#endif

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
constexpr int kEmulatedGpu = 9;  // the index the emulated GPU takes (real ones start at 0)

std::vector<float> random_values(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(0.05f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = (g() % 2 ? 1.0f : -1.0f) * scale * u(g);
  return v;
}
Tensor random_tensor(Shape shape, uint64_t seed, float scale = 1.0f, DType t = DType::kF32) {
  const std::vector<float> v = random_values(size_t(shape_numel(shape)), seed, scale);
  Tensor out = Tensor::empty(shape, t);
  convert_from_f32(t, v.data(), out.raw(), v.size());
  return out;
}

class GpuOps : public ::testing::TestWithParam<bool> {  // true: the emulated GPU
 protected:
  void SetUp() override {
    if (GetParam()) {
      static const bool made = [] {
        cuda::emulate_gpu(kEmulatedGpu, size_t(256) << 20);
        return true;
      }();
      (void)made;
      gpu_ = Device::cuda(kEmulatedGpu);
      return;
    }
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU here: " << cuda::no_device_reason();
    static const bool reserved = [] {
      cuda::reserve_memory(0, size_t(1) << 30);
      return true;
    }();
    (void)reserved;
    gpu_ = Device::cuda(0);
  }
  Tensor on_gpu(const Tensor& t) const { return t.to(gpu_); }
  // got (anywhere) within rel * max|want| of want, element by element.
  static void expect_near_all(const Tensor& got, const Tensor& want, double rel, const char* what) {
    const std::vector<float> g = got.to(Device::cpu()).to_f32_vector(), w = want.to_f32_vector();
    ASSERT_EQ(g.size(), w.size()) << what;
    double scale = 0;
    for (float x : w) scale = std::max(scale, double(std::abs(x)));
    ASSERT_GT(scale, 0) << what << ": the reference is all zeros";
    for (size_t i = 0; i < g.size(); ++i)
      ASSERT_NEAR(g[i], w[i], rel * scale) << what << ", element " << i << " of " << g.size();
  }
  Device gpu_;
};

TEST_P(GpuOps, LinearMatchesTheCpuInF32AndBf16) {
  for (const auto& [m, n, k] :
       {std::tuple{1, 300, 64}, std::tuple{7, 65, 576}, std::tuple{33, 96, 130}}) {
    const Tensor x = random_tensor({m, k}, 1), w = random_tensor({n, k}, 2, 0.5f);
    const Tensor bias = random_tensor({n}, 3);
    Tensor want = Tensor::empty({m, n}, DType::kF32), y = Tensor::empty({m, n}, DType::kF32, gpu_);
    ops::linear(x, w, &bias, want);
    const Tensor gw = on_gpu(w), gb = on_gpu(bias);
    ops::linear(on_gpu(x), gw, &gb, y);
    expect_near_all(y, want, 1e-5, "linear f32 with bias");
    ops::linear(x, w, nullptr, want);
    ops::linear(on_gpu(x), gw, nullptr, y);
    expect_near_all(y, want, 1e-5, "linear f32");
    // bf16 weights and activations: the CPU on the same (rounded) values, then rounding the output.
    const Tensor xb = random_tensor({m, k}, 4, 1.0f, DType::kBF16);
    const Tensor wb = random_tensor({n, k}, 5, 0.5f, DType::kBF16);
    ops::linear(Tensor::from_f32(xb.to_f32_vector(), {m, k}),
                Tensor::from_f32(wb.to_f32_vector(), {n, k}), nullptr, want);
    Tensor yb = Tensor::empty({m, n}, DType::kBF16, gpu_);
    ops::linear(on_gpu(xb), on_gpu(wb), nullptr, yb);
    expect_near_all(yb, want, 1e-2, "linear bf16");
    if (!cuda::is_emulated(gpu_.index)) {  // cuBLAS against the simple kernel, both on the GPU
      Tensor simple = Tensor::empty({m, n}, DType::kF32, gpu_);
      ASSERT_EQ(cuda::gpu_launchers().linear_simple(cuda::Elem::kF32, on_gpu(x).raw(), gw.raw(),
                                                    gb.raw(), m, n, k, simple.raw(), nullptr),
                "");
      ops::linear(x, w, &bias, want);
      expect_near_all(simple, want, 1e-5, "the simple kernel on the GPU");
    }
  }
}

TEST_P(GpuOps, QuantizedLinearAndEmbeddingMatchFloat64OverTheDequantizedWeights) {
  // Weights kept as blocks on the GPU (every quantized format): the decode kernel (up to
  // kQuantLinearMaxRows rows, in tiles of 8) and the decode-then-GEMM path (more rows), f32 and bf16
  // activations, against float64 sums over the weights quantize() made, decoded by dequantize().
  // Bound per output: float32 accumulation over k terms (k 2^-24 sum |w x|), and for bf16 the
  // output's rounding (2^-8 |y|) on inputs already rounded to bf16, and past the decode kernel's
  // rows the weights' rounding to bf16 for the dense GEMM (2^-8 sum |w x|).
  for (DType format : kQuantizedDTypes)
    for (DType act : {DType::kF32, DType::kBF16})
      for (int64_t m : {int64_t(1), int64_t(3), cuda::kQuantLinearTileRows, int64_t(13),
                        cuda::kQuantLinearMaxRows, cuda::kQuantLinearMaxRows + 3}) {
        // (k: more blocks than a warp has lanes, so that each lane takes several)
        const int64_t n = 37, k = 4608;
        const std::vector<float> wv = random_values(size_t(n * k), 21 + uint64_t(format), 0.3f);
        Tensor w = Tensor::empty({n, k}, format);
        quantize(format, wv.data(), w.raw(), n * k);
        std::vector<float> wd(size_t(n * k));
        dequantize(format, w.raw(), wd.data(), n * k);
        const Tensor x = random_tensor({m, k}, 22 + uint64_t(m), 1.0f, act);
        const std::vector<float> xv = x.to_f32_vector();
        const Tensor bias = random_tensor({n}, 23, 1.0f, act);
        const std::vector<float> bv = bias.to_f32_vector();
        Tensor y = Tensor::empty({m, n}, act, gpu_);
        const Tensor gb = on_gpu(bias);
        ops::linear(on_gpu(x), on_gpu(w), &gb, y);
        const std::vector<float> got = y.to(Device::cpu()).to_f32_vector();
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c) {
            double want = bv[size_t(c)], mag = std::abs(bv[size_t(c)]);
            for (int64_t i = 0; i < k; ++i) {
              want += double(wd[size_t(c * k + i)]) * xv[size_t(r * k + i)];
              mag += std::abs(double(wd[size_t(c * k + i)]) * xv[size_t(r * k + i)]);
            }
            // (bf16, more rows: the weights are decoded into bf16 for the GEMM, each rounded)
            const bool bf16 = act == DType::kBF16, dense = m > cuda::kQuantLinearMaxRows;
            const double bound = double(k) * std::ldexp(1.0, -24) * mag +
                                 (bf16 ? std::ldexp(1.0, -8) * std::abs(want) : 0) +
                                 (bf16 && dense ? std::ldexp(1.0, -8) * mag : 0);
            ASSERT_NEAR(got[size_t(r * n + c)], want, bound)
                << dtype_name(format) << " " << dtype_name(act) << " m " << m << " row " << r
                << " col " << c;
          }
      }
  // An embedding table of blocks: its rows decoded.
  const int64_t vocab = 50, d = 256;
  const std::vector<float> tv = random_values(size_t(vocab * d), 24);
  for (DType format : kQuantizedDTypes) {
    Tensor table = Tensor::empty({vocab, d}, format);
    quantize(format, tv.data(), table.raw(), vocab * d);
    std::vector<float> decoded(size_t(vocab * d));
    dequantize(format, table.raw(), decoded.data(), vocab * d);
    const std::vector<int32_t> ids = {49, 0, 7, 7};
    Tensor out = Tensor::empty({4, d}, DType::kF32, gpu_);
    ops::embedding(on_gpu(table), ids, out);
    const std::vector<float> got = out.to(Device::cpu()).to_f32_vector();
    for (size_t i = 0; i < ids.size(); ++i)
      for (int64_t j = 0; j < d; ++j)
        ASSERT_EQ(got[i * size_t(d) + size_t(j)], decoded[size_t(ids[i] * d + j)])
            << dtype_name(format) << " row " << ids[i] << " element " << j;
  }
}

TEST_P(GpuOps, NormsAddSwigluRopeAndEmbeddingMatchTheCpu) {
  const int64_t m = 5, d = 576;
  const Tensor x = random_tensor({m, d}, 6, 3.0f), w = random_tensor({d}, 7);
  Tensor want = Tensor::empty({m, d}, DType::kF32), got = on_gpu(want);
  ops::rms_norm(x, w, 1e-5f, want);
  ops::rms_norm(on_gpu(x), on_gpu(w), 1e-5f, got);
  expect_near_all(got, want, 1e-5, "rms_norm");
  Tensor in_place = on_gpu(x);  // y may alias x
  ops::rms_norm(in_place, on_gpu(w), 1e-5f, in_place);
  expect_near_all(in_place, want, 1e-5, "rms_norm in place");

  Tensor sum = x.clone(), gsum = on_gpu(x);
  const Tensor delta = random_tensor({m, d}, 8);
  ops::add_inplace(sum, delta);
  ops::add_inplace(gsum, on_gpu(delta));
  expect_near_all(gsum, sum, 0.0, "add_inplace");

  const Tensor gate = random_tensor({m, d}, 9, 8.0f), up = random_tensor({m, d}, 10);
  ops::swiglu(gate, up, want);
  Tensor ggate = on_gpu(gate);
  ops::swiglu(ggate, on_gpu(up), ggate);  // out may alias gate
  expect_near_all(ggate, want, 1e-6, "swiglu");

  const Tensor q = random_tensor({m, 3, 64}, 11);
  const std::vector<int32_t> positions = {0, 5, 6, 7, 40000};
  const std::vector<float> inv = ops::rope_inv_freq(64, 10000.0f, {});
  Tensor rq = q.clone(), grq = on_gpu(q);
  const Tensor pos = Tensor::from_i32(positions, {m});
  const Tensor freq = Tensor::from_f32(inv, {int64_t(inv.size())});
  ops::rope_inplace(rq, pos, freq);
  ops::rope_inplace(grq, on_gpu(pos), on_gpu(freq));
  expect_near_all(grq, rq, 1e-5, "rope");

  const Tensor table = random_tensor({100, 48}, 12);
  const std::vector<int32_t> ids = {99, 0, 42, 42};
  Tensor erow = Tensor::empty({4, 48}, DType::kF32), gerow = on_gpu(erow);
  ops::embedding(table, ids, erow);
  ops::embedding(on_gpu(table), ids, gerow);
  expect_near_all(gerow, erow, 0.0, "embedding");
  // gather_columns: the columns of x in `order`, 0 for -1; the host's against x itself, the GPU's
  // against the host's
  const Tensor cols_order = Tensor::from_i32({47, -1, 0, 3, 3, -1, 20}, {7});
  Tensor gathered = Tensor::empty({4, 7}, DType::kF32), ggathered = on_gpu(gathered);
  ops::gather_columns(erow, cols_order, gathered);
  for (int64_t r = 0; r < 4; ++r)
    for (int64_t j = 0; j < 7; ++j) {
      const int32_t c = cols_order.data<int32_t>()[j];
      ASSERT_EQ(gathered.data<float>()[r * 7 + j], c < 0 ? 0.0f : erow.data<float>()[r * 48 + c]);
    }
  ops::gather_columns(gerow, on_gpu(cols_order), ggathered);
  expect_near_all(ggathered, gathered, 0.0, "gather_columns");
  try {
    Tensor two = Tensor::empty({2, 48}, DType::kF32, gpu_);
    ops::embedding(on_gpu(table), {3, 100}, two);
    FAIL() << "an id outside the table was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary (size 100)"), std::string::npos)
        << e.what();
  }
}

TEST_P(GpuOps, ContiguousAttentionMergeAndFinishMatchTheCpu) {
  const int64_t m = 6, hq = 6, hkv = 2, d = 64, t = 45;
  const Tensor q = random_tensor({m, hq, d}, 13), k = random_tensor({t, hkv, d}, 14),
               v = random_tensor({t, hkv, d}, 15, 2.0f);
  const Tensor k2 = random_tensor({20, hkv, d}, 16), v2 = random_tensor({20, hkv, d}, 17);
  const float scale = 0.125f;
  // Causal over 45 keys (queries at 39..44), then 20 earlier keys all visible; and the same in two
  // states merged.
  ops::AttentionState want = ops::AttentionState::empty(m, hq, d);
  ops::attention_accumulate(q, k, v, t - m, scale, want);
  ops::attention_accumulate(q, k2, v2, ops::kAllKeysVisible, scale, want);
  ops::AttentionState got = ops::AttentionState::empty(m, hq, d, gpu_);
  const Tensor gq = on_gpu(q);
  ops::attention_accumulate(gq, on_gpu(k), on_gpu(v), t - m, scale, got);
  ops::AttentionState other = ops::AttentionState::empty(m, hq, d, gpu_);
  ops::attention_accumulate(gq, on_gpu(k2), on_gpu(v2), ops::kAllKeysVisible, scale, other);
  ops::attention_merge(got, other);
  Tensor out = Tensor::empty({m, hq, d}, DType::kF32), gout = on_gpu(out);
  ops::attention_finish(want, out);
  ops::attention_finish(got, gout);
  expect_near_all(gout, out, 2e-5, "attention over two states merged");
}

TEST_P(GpuOps, KvWritesRoundingAndCopiesMatchTheCpu) {
  const int64_t blocks = 6, hkv = 3, bs = 4, d = 32, rows = 5;
  const Tensor k = random_tensor({rows, hkv, d}, 18), v = random_tensor({rows, hkv, d}, 19);
  const Tensor slots = Tensor::from_i64({0, 23, -1, 9, 10}, {rows});
  for (const DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kE4M3}) {
    const ops::KvScale kv_scale = t == DType::kE4M3 ? ops::KvScale{0.013f, 3.1f} : ops::KvScale{};
    Tensor kp = Tensor::zeros({blocks, hkv, bs, d}, t), vp = Tensor::zeros({blocks, hkv, bs, d}, t);
    Tensor gkp = on_gpu(kp), gvp = on_gpu(vp);
    ops::store_kv(kp, vp, k, v, slots, kv_scale);
    ops::store_kv(gkp, gvp, on_gpu(k), on_gpu(v), on_gpu(slots), kv_scale);
    expect_near_all(gkp, kp, 0.0, "stored keys");
    expect_near_all(gvp, vp, 0.0, "stored values");
    Tensor r = k.clone(), gr = on_gpu(k);
    ops::round_through(r, t, kv_scale.key);
    ops::round_through(gr, t, kv_scale.key);
    expect_near_all(gr, r, 0.0, "rounded through the cache type");
  }
  // The GPU's e4m3 encoding is the host's, code for code: every magnitude from 2^-12 to 2^10 in
  // steps finer than the codes', each code's value and the midpoints between neighbours (ties go
  // to the even code), both signs, and the saturated range.
  std::vector<float> x;
  for (float a = 1.0f / 4096; a < 1024.0f; a *= 1.0078125f) x.push_back(a);
  for (int c = 0; c < 0x7e; ++c) {
    x.push_back(fp8_e4m3_to_float(uint8_t(c)));
    x.push_back((fp8_e4m3_to_float(uint8_t(c)) + fp8_e4m3_to_float(uint8_t(c + 1))) / 2);
  }
  for (const float a : {0.0f, 448.0f, 455.9f, 464.0f, 1e30f}) x.push_back(a);
  const size_t n = x.size();
  for (size_t i = 0; i < n; ++i) x.push_back(-x[i]);
  Tensor codes = Tensor::from_f32(x, {int64_t(x.size())}), gcodes = on_gpu(codes);
  ops::round_through(codes, DType::kE4M3);
  ops::round_through(gcodes, DType::kE4M3);
  const std::vector<float> want = codes.to_f32_vector(),
                           got = gcodes.to(Device::cpu()).to_f32_vector();
  for (size_t i = 0; i < x.size(); ++i)
    ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
        << "e4m3 of " << x[i] << ": " << got[i] << " on the GPU, " << want[i] << " on the host";
  Tensor back = Tensor::empty({rows, hkv, d}, DType::kF32);
  Tensor g1 = Tensor::empty({rows, hkv, d}, DType::kF32, gpu_);
  ops::copy(k, g1);  // host to GPU
  Tensor g2 = on_gpu(v);
  ops::copy(g1, g2);  // GPU to GPU
  Tensor first_rows = back.rows(0, 2);
  ops::copy(g2.rows(1, 3), first_rows);  // GPU rows to host rows (views)
  expect_near_all(back.rows(0, 2), k.rows(1, 3), 0.0, "copies");
}

// Sampling's device half: the repetition penalty and each row's top k, on logits with ties and
// NaNs, equal the CPU backend's op exactly.
TEST_P(GpuOps, RepetitionPenaltyAndTopKMatchTheCpu) {
  const int64_t rows = 3, vocab = 300;
  std::vector<float> l = random_values(size_t(rows * vocab), 21, 4.0f);
  l[5] = l[17] = l[230];       // ties within row 0, broken by the lower id
  l[vocab + 9] = NAN;          // ranks as -inf
  Tensor logits = Tensor::from_f32(l, {rows, vocab}), glogits = on_gpu(logits);
  const Tensor ids = Tensor::from_i32({5, 17, 299, 0, 42, 7}, {6});
  const Tensor offsets = Tensor::from_i32({0, 3, 3, 6}, {rows + 1});  // row 1 has none
  ops::repetition_penalty(logits, ids, offsets, 1.3f);
  ops::repetition_penalty(glogits, on_gpu(ids), on_gpu(offsets), 1.3f);
  const std::vector<float> penalised = glogits.to(Device::cpu()).to_f32_vector();
  for (int64_t i = 0; i < rows * vocab; ++i)  // (NaN stays NaN)
    if (!std::isnan(logits.data<float>()[i]) || !std::isnan(penalised[size_t(i)])) {
      ASSERT_EQ(penalised[size_t(i)], logits.data<float>()[i]) << "penalised logit " << i;
    }
  for (const int k : {1, 7, 300}) {
    Tensor values = Tensor::empty({rows, k}, DType::kF32), got = on_gpu(values);
    Tensor top = Tensor::empty({rows, k}, DType::kI32), gtop = on_gpu(top);
    ops::top_k(logits, k, values, top);
    ops::top_k(glogits, k, got, gtop);
    const Tensor host_top = gtop.to(Device::cpu());
    EXPECT_EQ(std::vector<int32_t>(host_top.data<int32_t>(), host_top.data<int32_t>() + rows * k),
              std::vector<int32_t>(top.data<int32_t>(), top.data<int32_t>() + rows * k))
        << "top " << k;
    EXPECT_EQ(got.to(Device::cpu()).to_f32_vector(), values.to_f32_vector()) << "top " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Devices, GpuOps, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return std::string(i.param ? "emulated_gpu" : "gpu");
                         });
#else
TEST(GpuOps, Skipped) {
  GTEST_SKIP() << "this tessera was built without CUDA";
}
#endif

}  // namespace
}  // namespace tessera
