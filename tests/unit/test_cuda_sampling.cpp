// Sampling's GPU half against the CPU sampler (runtime/sampler.h): the repetition penalty and each
// row's top-k candidates equal Sampler::shard_candidates over the whole row — the same logits, ids
// and order, ties (many: the logits are coarse) broken by the lower id, NaN as -inf, -0 equal to
// +0 — and drawing from them with Sampler::sample_candidates gives the token Sampler::sample
// gives with the same seed. On the GPU and on the CUDA emulator; GPU cases skip where there is no
// GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <set>

#include "kernels/tensor.h"
#include "runtime/sampler.h"
#include "tests/unit/kernel_backends.h"

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
class CudaSampling : public ::testing::TestWithParam<size_t> {
 protected:
  void SetUp() override {
    backend_ = testing::kernel_backends()[GetParam()];
    std::string why;
    if (!backend_.available(&why)) GTEST_SKIP() << why;
  }
  testing::KernelBackend backend_;
};

// Logits on a coarse grid (ties everywhere), with NaNs, infinities and both zeros.
std::vector<float> coarse_logits(int64_t rows, int64_t vocab, std::mt19937_64& g) {
  std::uniform_int_distribution<int> level(-40, 40);
  std::vector<float> l(size_t(rows * vocab));
  for (float& x : l) x = float(level(g)) * 0.25f;
  for (int64_t r = 0; r < rows; ++r) {
    float* row = l.data() + r * vocab;
    row[g() % vocab] = NAN;
    row[g() % vocab] = -INFINITY;
    row[g() % vocab] = -0.0f;
    row[g() % vocab] = 0.0f;
    if (r == 1) row[vocab - 1] = INFINITY;  // one certain winner
  }
  // The last row is zeros of both signs only: the best k are the lowest ids, whatever the sign.
  float* last = l.data() + (rows - 1) * vocab;
  for (int64_t i = 0; i < vocab; ++i) last[i] = g() % 2 ? -0.0f : 0.0f;
  return l;
}

TEST_P(CudaSampling, TopKEqualsTheCpuSamplersCandidatesAndDrawsTheSameTokens) {
  std::mt19937_64 g(11);
  for (const int64_t vocab : {int64_t(1000), int64_t(49152)}) {
    const int64_t rows = 4;
    const std::vector<float> logits = coarse_logits(rows, vocab, g);
    // Distinct previous ids per row, for the penalty.
    std::vector<std::vector<int32_t>> previous(rows);
    std::vector<int32_t> ids, offsets = {0};
    for (int64_t r = 0; r < rows; ++r) {
      std::set<int32_t> seen;
      for (int i = 0; i < 40; ++i) seen.insert(int32_t(g() % vocab));
      previous[size_t(r)].assign(seen.begin(), seen.end());
      ids.insert(ids.end(), seen.begin(), seen.end());
      offsets.push_back(int32_t(ids.size()));
    }
    const float penalty = 1.3f;
    Tensor dlogits = Tensor::from_f32(logits, {rows, vocab}).to(backend_.memory);
    const Tensor dids = Tensor::from_i32(ids, {int64_t(ids.size())}).to(backend_.memory);
    const Tensor doffsets = Tensor::from_i32(offsets, {rows + 1}).to(backend_.memory);
    ASSERT_EQ(backend_.repetition_penalty(dlogits.data<float>(), rows, vocab, dids.data<int32_t>(),
                                          doffsets.data<int32_t>(), penalty, nullptr),
              "");
    for (const int k : {1, 7, 50, int(std::min<int64_t>(cuda::kMaxTopK, vocab))}) {
      Tensor out_l = Tensor::empty({rows, k}, DType::kF32, backend_.memory);
      Tensor out_i = Tensor::empty({rows, k}, DType::kI32, backend_.memory);
      ASSERT_EQ(backend_.top_k(dlogits.data<float>(), rows, vocab, k, out_l.data<float>(),
                               out_i.data<int32_t>(), nullptr),
                "");
      const std::vector<float> got_l = out_l.to(Device::cpu()).to_f32_vector();
      const Tensor got_i = out_i.to(Device::cpu());
      for (int64_t r = 0; r < rows; ++r) {
        SamplingParams p;
        p.temperature = 0.8f;
        p.top_k = k;
        p.repetition_penalty = penalty;
        p.seed = uint64_t(100 + r);
        const std::vector<Sampler::Candidate> want =
            Sampler(p).shard_candidates(logits.data() + r * vocab, vocab, 0, previous[size_t(r)]);
        ASSERT_EQ(want.size(), size_t(k));
        std::vector<Sampler::Candidate> got;
        for (int c = 0; c < k; ++c) {
          got.emplace_back(got_l[size_t(r * k + c)], got_i.data<int32_t>()[r * k + c]);
          ASSERT_EQ(got[size_t(c)].second, want[size_t(c)].second)
              << "vocab " << vocab << " k " << k << " row " << r << " rank " << c;
          ASSERT_EQ(got[size_t(c)].first, want[size_t(c)].first)
              << "vocab " << vocab << " k " << k << " row " << r << " rank " << c;
        }
        // Drawing from the GPU's candidates is drawing from the row (20 draws, one seed). Not on
        // row 1: the CPU sampler refuses a +inf logit.
        if ((k == 1 || k == 50) && r != 1) {
          Sampler from_row(p), from_candidates(p);
          for (int draw = 0; draw < 20; ++draw)
            ASSERT_EQ(from_candidates.sample_candidates(got),
                      from_row.sample(logits.data() + r * vocab, vocab, previous[size_t(r)]))
                << "draw " << draw;
        }
      }
    }
  }
}

TEST_P(CudaSampling, TopKRefusesKItCannotHold) {
  Tensor logits = Tensor::from_f32(std::vector<float>(100, 1.0f), {1, 100}).to(backend_.memory);
  Tensor out_l = Tensor::empty({1, 101}, DType::kF32, backend_.memory);
  Tensor out_i = Tensor::empty({1, 101}, DType::kI32, backend_.memory);
  for (const int k : {0, 101, cuda::kMaxTopK + 1}) {
    const std::string e = backend_.top_k(logits.data<float>(), 1, 100, k, out_l.data<float>(),
                                         out_i.data<int32_t>(), nullptr);
    EXPECT_NE(e.find("top-k on the GPU needs 1 <= k"), std::string::npos) << k << ": " << e;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, CudaSampling,
                         ::testing::Range(size_t(0), testing::kernel_backends().size()),
                         [](const ::testing::TestParamInfo<size_t>& info) {
                           return testing::kernel_backends()[info.param].name;
                         });
#else
TEST(CudaSampling, Skipped) {
  GTEST_SKIP() << "this tessera was built without CUDA";
}
#endif

}  // namespace
}  // namespace tessera
