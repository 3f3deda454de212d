// Sampler: greedy ties, determinism by seed, and the filters' effect measured on frequencies
// against probabilities computed here.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "kernels/error.h"
#include "runtime/sampler.h"

namespace tessera {
namespace {

TEST(Sampler, GreedyPicksArgmaxLowestIdOnTies) {
  Sampler s(SamplingParams{});
  const float logits[] = {0.5f, 2.0f, -1.0f, 2.0f};
  EXPECT_EQ(s.sample(logits, 4, {}), 1);
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDiffers) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i)));
  SamplingParams p;
  p.temperature = 1.0f;
  auto draw = [&](uint64_t seed) {
    p.seed = seed;
    Sampler s(p);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.sample(logits.data(), 50, {}));
    return out;
  };
  EXPECT_EQ(draw(7), draw(7));
  EXPECT_NE(draw(7), draw(8));
}

// Frequencies of 40000 draws against the exact filtered, renormalised distribution.
void expect_distribution(const SamplingParams& p, const std::vector<float>& logits,
                         const std::vector<double>& want) {
  Sampler s(p);
  std::vector<int> counts(logits.size());
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++counts[size_t(s.sample(logits.data(), int64_t(logits.size()), {}))];
  for (size_t i = 0; i < logits.size(); ++i)
    EXPECT_NEAR(double(counts[i]) / n, want[i], 0.012) << "token " << i;
}

std::vector<double> softmax(const std::vector<float>& l, double t) {
  std::vector<double> p(l.size());
  double sum = 0;
  for (size_t i = 0; i < l.size(); ++i) sum += p[i] = std::exp(l[i] / t);
  for (double& x : p) x /= sum;
  return p;
}

const std::vector<float> kLogits = {1.0f, 2.0f, 0.5f, 3.0f, -1.0f};  // order: 3, 1, 0, 2, 4

TEST(Sampler, TemperatureMatchesSoftmax) {
  SamplingParams p;
  p.temperature = 0.7f;
  expect_distribution(p, kLogits, softmax(kLogits, 0.7));
}

TEST(Sampler, TopKKeepsOnlyKLikeliest) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;
  auto full = softmax(kLogits, 1.0);
  const double z = full[3] + full[1];
  expect_distribution(p, kLogits, {0, full[1] / z, 0, full[3] / z, 0});
}

TEST(Sampler, TopPKeepsSmallestPrefixReachingMass) {
  SamplingParams p;
  p.temperature = 1.0f;
  auto full = softmax(kLogits, 1.0);  // ~ 0.09 0.24 0.05 0.64 0.01
  p.top_p = float(full[3] + 0.5 * full[1]);  // needs tokens 3 and 1
  const double z = full[3] + full[1];
  expect_distribution(p, kLogits, {0, full[1] / z, 0, full[3] / z, 0});
}

TEST(Sampler, MinPDropsTokensBelowFractionOfTop) {
  SamplingParams p;
  p.temperature = 1.0f;
  auto full = softmax(kLogits, 1.0);
  p.min_p = float(full[0] / full[3] * 0.9);  // keeps 3, 1, 0
  const double z = full[3] + full[1] + full[0];
  expect_distribution(p, kLogits, {full[0] / z, full[1] / z, 0, full[3] / z, 0});
}

TEST(Sampler, RepetitionPenaltyLowersSeenTokens) {
  SamplingParams p;
  p.repetition_penalty = 10.0f;
  Sampler s(p);
  const float logits[] = {1.0f, 2.0f, 1.5f};
  EXPECT_EQ(s.sample(logits, 3, {1}), 2);  // 2.0 / 10 = 0.2 < 1.5
}

TEST(Sampler, NanLogitsNeverWin) {
  const float logits[] = {NAN, 1.0f, NAN, 0.5f};
  Sampler greedy(SamplingParams{});
  EXPECT_EQ(greedy.sample(logits, 4, {}), 1);
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  Sampler s(p);
  for (int i = 0; i < 200; ++i) {
    const int32_t id = s.sample(logits, 4, {});
    EXPECT_TRUE(id == 1 || id == 3) << id;
  }
}

// Top-k over a vocabulary in shards: each shard's k best, gathered, draw the same tokens as the
// whole row, with the repetition penalty applied per shard.
TEST(Sampler, ShardCandidatesDrawWhatTheWholeRowDraws) {
  std::vector<float> logits(40);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = float(std::sin(double(i) * 1.7) * 3);
  logits[7] = logits[23];  // a tie across shards
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 6;
  p.top_p = 0.9f;
  p.repetition_penalty = 1.3f;
  p.seed = 42;
  const std::vector<int32_t> history = {3, 23, 31};
  Sampler whole(p), sharded(p);
  for (int draw = 0; draw < 200; ++draw) {
    std::vector<Sampler::Candidate> gathered;
    for (int shard = 0; shard < 4; ++shard) {
      auto c = sharded.shard_candidates(logits.data() + shard * 10, 10, shard * 10, history);
      gathered.insert(gathered.end(), c.begin(), c.end());
    }
    ASSERT_EQ(sharded.sample_candidates(gathered), whole.sample(logits.data(), 40, history))
        << "draw " << draw;
  }
}

TEST(Sampler, RejectsBadParameters) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.temperature = -1;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.min_p = 2;
  EXPECT_THROW(Sampler{p}, Error);
}

}  // namespace
}  // namespace tessera
