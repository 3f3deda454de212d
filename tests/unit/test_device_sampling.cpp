// Sampling a step's tokens from logits on the GPU (runtime/batch_sampler.h: the repetition
// penalty and each row's top-k on the device, the seeded draw on the host) against the same rows
// sampled from host logits by the CPU sampler: identical tokens for greedy rows, greedy with a
// penalty, top-k of 1 to 1024 at several temperatures with and without penalties and top-p, on
// random logits with ties; rows that need every logit (top-p alone) come to the host and agree
// too. On a GPU, or an emulated one where there is none.
#include <gtest/gtest.h>

#include <random>

#include "kernels/ops.h"
#include "parallel/communicator.h"
#include "runtime/batch_sampler.h"
#include "tests/gpu_or_emulated.h"

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA

// A model only for its shard (the whole vocabulary: one rank).
struct OneRank {
  std::unique_ptr<Communicator> tp = make_local_communicator(), pp = make_local_communicator();
  LlamaModel model;
  explicit OneRank(int64_t vocab) {
    ModelConfig c;
    c.architecture = "llama";
    c.vocab_size = vocab;
    c.hidden_size = 16;
    c.intermediate_size = 16;
    c.num_layers = 1;
    c.num_heads = 2;
    c.num_kv_heads = 1;
    c.head_dim = 8;
    c.max_position_embeddings = 16;
    model = LlamaModel::random(c, 1, tp.get(), pp.get());
  }
};

std::vector<RowSampling> mixed_rows(const std::vector<std::vector<int32_t>>& histories) {
  std::vector<SamplingParams> kinds;
  kinds.push_back({});                              // greedy
  kinds.push_back({0.0f, 0, 1.0f, 0.0f, 1.3f, 0});  // greedy with a penalty
  for (const int k : {1, 5, 50, 1024})
    for (const float t : {0.7f, 1.0f, 1.6f}) {
      kinds.push_back({t, k, 1.0f, 0.0f, 1.0f, uint64_t(k * 7 + int(t * 10))});
      kinds.push_back({t, k, 0.9f, 0.0f, 1.2f, uint64_t(k * 11 + int(t * 10))});
      kinds.push_back({t, k, 1.0f, 0.05f, 0.8f, uint64_t(k * 13 + int(t * 10))});
    }
  std::vector<RowSampling> rows;
  for (size_t i = 0; i < kinds.size(); ++i)
    rows.push_back({kinds[i], int64_t(i % 5), &histories[i % histories.size()]});
  return rows;
}

// Random logits, with runs of equal values (ties) and a few -inf.
Tensor random_logits(int64_t rows, int64_t vocab, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> v(size_t(rows * vocab));
  for (size_t i = 0; i < v.size(); ++i) {
    v[i] = i % 97 == 5 ? -INFINITY : std::round(n(g) * 4.0f) / 4.0f;  // quarter steps: many ties
  }
  return Tensor::from_f32(v, {rows, vocab});
}

TEST(DeviceSampling, TokensEqualTheCpuSamplers) {
  const int64_t vocab = 3000;
  OneRank one(vocab);
  const std::vector<std::vector<int32_t>> histories = {
      {}, {5, 17, 17, 2999, 0}, {100, 200, 300, 400, 500, 600, 700, 800, 900, 1000}};
  const std::vector<RowSampling> rows = mixed_rows(histories);
  const int64_t n = int64_t(rows.size());
  for (uint32_t seed = 1; seed <= 3; ++seed) {
    const Tensor host = random_logits(n, vocab, seed);
    const std::vector<int32_t> want = sample_rows(one.model, host, rows);
    const std::vector<int32_t> got = sample_rows(one.model, host.to(test_gpu()), rows);
    ASSERT_EQ(got.size(), want.size());
    for (int64_t i = 0; i < n; ++i)
      EXPECT_EQ(got[size_t(i)], want[size_t(i)])
          << "row " << i << " (top_k " << rows[size_t(i)].params.top_k << ", temperature "
          << rows[size_t(i)].params.temperature << ", penalty "
          << rows[size_t(i)].params.repetition_penalty << "), logits seed " << seed;
  }
}

TEST(DeviceSampling, RowsThatNeedEveryLogitComeToTheHost) {
  const int64_t vocab = 500;
  OneRank one(vocab);
  const std::vector<int32_t> none;
  std::vector<RowSampling> rows = {{{0.8f, 0, 0.9f, 0.0f, 1.0f, 3}, 0, &none},
                                   {{}, 0, &none},
                                   {{1.2f, 0, 1.0f, 0.1f, 1.1f, 4}, 2, &none}};
  const Tensor host = random_logits(3, vocab, 9);
  EXPECT_EQ(sample_rows(one.model, host.to(test_gpu()), rows), sample_rows(one.model, host, rows));
}
#else
TEST(DeviceSampling, NeedsTheCudaBackend) {
  GTEST_SKIP() << "built without the CUDA backend";
}
#endif

}  // namespace
}  // namespace tessera
