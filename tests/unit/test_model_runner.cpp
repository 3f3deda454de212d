// The model runner keeps what plans change, as every rank must: plans made by hand against the
// logits of each sequence run alone in a runner of its own (SingleSequence). A sequence's table
// arrives whole with its first step and then only changes; a copy-on-write entry replaced in a
// running sequence's table, and a sequence forked with a shared block, see their own tokens; a
// sequence released and started again in one plan starts afresh; a plan that continues a
// sequence the runner does not hold is refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>

#include "parallel/communicator.h"
#include "runtime/model_runner.h"
#include "runtime/single_sequence.h"

namespace tessera {
namespace {

struct Fixture {
  std::unique_ptr<Communicator> tp = make_local_communicator(), pp = make_local_communicator();
  LlamaModel model;
  RunnerOptions options;
  Fixture() {
    ModelConfig c;
    c.architecture = "llama";
    c.vocab_size = 64;
    c.hidden_size = 32;
    c.intermediate_size = 48;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.max_position_embeddings = 64;
    model = LlamaModel::random(c, 3, tp.get(), pp.get());
    options.num_blocks = 8;
    options.block_size = 4;
  }
  // The last row's logits of `tokens` fed at once to a runner of its own.
  std::vector<float> alone(const std::vector<int32_t>& tokens) {
    ModelRunner r(model, options);
    return SingleSequence(r).feed(tokens, 1).to_f32_vector();
  }
};

SequenceWork work(int64_t seq, int64_t position, std::vector<int32_t> tokens, KvShare kv,
                  bool start) {
  SequenceWork w;
  w.seq = seq;
  w.position = position;
  w.tokens = std::move(tokens);
  w.kv = {std::move(kv)};
  w.start = start;
  w.logits = 1;
  return w;
}

KvShare share(int64_t rows, std::vector<int32_t> blocks, std::vector<TableEntry> replaced = {}) {
  KvShare k;
  k.rows = rows;
  k.blocks = std::move(blocks);
  k.replaced = std::move(replaced);
  return k;
}

float max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  float d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// The logits rows of a step's output, one vector per sequence (one row each).
std::vector<std::vector<float>> rows_of(const StepOutput& out) {
  const std::vector<float> all = out.logits.to_f32_vector();
  const size_t vocab = size_t(out.logits.dim(1));
  std::vector<std::vector<float>> rows;
  for (size_t r = 0; r < size_t(out.logits.dim(0)); ++r)
    rows.emplace_back(all.begin() + std::ptrdiff_t(r * vocab),
                      all.begin() + std::ptrdiff_t((r + 1) * vocab));
  return rows;
}

TEST(ModelRunner, TablesArriveWholeThenOnlyChangesAndCopiesOnWrite) {
  Fixture f;
  ModelRunner runner(f.model, f.options);
  const std::vector<int32_t> prompt = {5, 9, 1, 33, 7, 2};  // 6 tokens: blocks 0 (full) and 1
  StepPlan p1;
  p1.id = 1;
  p1.work = {work(0, 0, prompt, share(0, {0, 1}), true)};
  EXPECT_LE(max_diff(rows_of(runner.execute(p1))[0], f.alone(prompt)), 1e-6f);
  // Sequence 1 forks sequence 0: it starts with 0's table (block 1 shared, half full) and its
  // tokens as context. Writing position 6 into the shared block copies it first: sequence 0's
  // entry 1 is replaced by the copy (block 2); sequence 1 keeps block 1.
  StepPlan p2;
  p2.id = 2;
  p2.copies = {{0, 1, 2}};
  p2.work = {work(0, 6, {11}, share(6, {}, {{1, 2}}), false),
             work(1, 6, {40}, share(6, {0, 1}), true)};
  p2.work[1].context = prompt;
  const std::vector<std::vector<float>> got = rows_of(runner.execute(p2));
  std::vector<int32_t> a = prompt, b = prompt;
  a.push_back(11);
  b.push_back(40);
  EXPECT_LE(max_diff(got[0], f.alone(a)), 1e-6f);
  EXPECT_LE(max_diff(got[1], f.alone(b)), 1e-6f);
  // Sequence 0 grows into a new block (3) with only that block in the plan.
  StepPlan p3;
  p3.id = 3;
  p3.work = {work(0, 7, {12, 13}, share(7, {3}), false)};
  a.insert(a.end(), {12, 13});
  EXPECT_LE(max_diff(rows_of(runner.execute(p3))[0], f.alone(a)), 1e-6f);
}

TEST(ModelRunner, AReleasedSequenceStartsAfreshInTheSamePlan) {
  Fixture f;
  ModelRunner runner(f.model, f.options);
  StepPlan p1;
  p1.id = 1;
  p1.work = {work(0, 0, {3, 4, 5, 6, 7}, share(0, {0, 1}), true)};
  runner.execute(p1);
  // Preempted and admitted again at once: released, and started with another table.
  StepPlan p2;
  p2.id = 2;
  p2.release = {0};
  p2.work = {work(0, 0, {3, 4, 5, 6, 7, 8}, share(0, {4, 5}), true)};
  EXPECT_LE(max_diff(rows_of(runner.execute(p2))[0], f.alone({3, 4, 5, 6, 7, 8})), 1e-6f);
}

TEST(ModelRunner, RefusesToContinueASequenceItDoesNotHold) {
  Fixture f;
  ModelRunner runner(f.model, f.options);
  StepPlan p;
  p.id = 1;
  p.work = {work(7, 3, {1}, share(3, {}), false)};
  EXPECT_THROW(runner.execute(p), Error);
  StepPlan released;  // and one released is no longer held
  released.id = 2;
  released.work = {work(0, 0, {1, 2}, share(0, {0}), true)};
  runner.execute(released);
  StepPlan after;
  after.id = 3;
  after.release = {0};
  after.work = {work(0, 2, {3}, share(2, {}), false)};
  EXPECT_THROW(runner.execute(after), Error);
}

// Chi-square of `counts` against probabilities p (n draws): bins whose expected count is under 5
// are pooled. Returns the statistic and its degrees of freedom.
std::pair<double, int> chi_square(const std::vector<int64_t>& counts, const std::vector<double>& p,
                                  int64_t n) {
  double stat = 0, pooled_expected = 0, pooled_count = 0;
  int bins = 0;
  for (size_t t = 0; t < p.size(); ++t) {
    const double e = p[t] * double(n);
    if (e < 5) {
      pooled_expected += e;
      pooled_count += double(counts[t]);
      continue;
    }
    stat += (double(counts[t]) - e) * (double(counts[t]) - e) / e;
    ++bins;
  }
  if (pooled_expected >= 5) {
    stat += (pooled_count - pooled_expected) * (pooled_count - pooled_expected) / pooled_expected;
    ++bins;
  }
  return {stat, bins - 1};
}
// The chi-square value that df degrees of freedom exceed with probability 0.01
// (Wilson-Hilferty; within 1% of the exact value for df >= 3).
double chi_square_critical_1pct(int df) {
  const double z = 2.3263, a = 2.0 / (9.0 * df);
  return df * std::pow(1 - a + z * std::sqrt(a), 3);
}

// Speculative decoding's rule: over 20,000 seeds, the first token a step with proposals keeps is
// distributed as the target's softmax (chi-square at p > 0.01), and for each seed it is the token
// decoding without proposals samples. A wrong rule (keeping the first proposal whenever it is
// the likeliest token) fails the same test.
TEST(ModelRunner, ASpeculatedTokenIsDistributedAsTheTargetsAndIsDecodingsToken) {
  Fixture f;
  const std::vector<int32_t> prompt = {5, 9, 13, 2};
  const std::vector<float> logits = f.alone(prompt);
  std::vector<double> p(logits.size());
  const float top = *std::max_element(logits.begin(), logits.end());
  double z = 0;
  for (size_t t = 0; t < p.size(); ++t) z += p[t] = std::exp(double(logits[t] - top));
  for (double& x : p) x /= z;
  const int32_t likeliest = int32_t(std::max_element(p.begin(), p.end()) - p.begin());
  ASSERT_LT(p[size_t(likeliest)], 0.9) << "a distribution to test, not a certainty";
  ModelRunner spec(f.model, f.options), plain(f.model, f.options);
  const auto step = [](int64_t id, const std::vector<int32_t>& tokens, int64_t drafts,
                       uint64_t seed) {
    StepPlan plan;
    plan.id = id;
    if (id > 1) plan.release = {0};
    SequenceWork w = work(0, 0, tokens, share(0, {0, 1}), true);
    w.sample = true;
    w.sampling.temperature = 1.0f;
    w.sampling.seed = seed;
    w.drafts = drafts;
    w.logits = drafts + 1;
    plan.work = {w};
    return plan;
  };
  const int64_t n = 20000;
  std::vector<int64_t> counts(p.size()), wrong(p.size());
  int64_t kept_proposal = 0;
  for (int64_t seed = 0; seed < n; ++seed) {
    std::vector<int32_t> tokens = prompt;
    tokens.insert(tokens.end(), {likeliest, 7});  // two proposals after the prompt
    const StepOutput out = spec.execute(step(seed + 1, tokens, 2, uint64_t(seed)));
    ASSERT_GE(out.sampled.counts.at(0), 1);
    const int32_t first = out.sampled.tokens.at(0);
    ++counts[size_t(first)];
    kept_proposal += first == likeliest;
    ++wrong[size_t(likeliest)];  // the wrong rule's token
    if (seed < 300) {            // and decoding alone samples the same token with this seed
      const StepOutput one = plain.execute(step(seed + 1, prompt, 0, uint64_t(seed)));
      ASSERT_EQ(one.sampled.tokens.at(0), first) << "seed " << seed;
    }
  }
  const auto [stat, df] = chi_square(counts, p, n);
  const double critical = chi_square_critical_1pct(df);
  std::printf(
      "first speculated token over %lld seeds: chi-square %.1f, %d degrees of freedom, "
      "1%% critical value %.1f; the first proposal kept %lld times (p %.3f)\n",
      (long long)n, stat, df, critical, (long long)kept_proposal, p[size_t(likeliest)]);
  EXPECT_GE(df, 3);
  EXPECT_LT(stat, critical);
  EXPECT_GT(chi_square(wrong, p, n).first, critical) << "the test cannot tell a wrong rule";
}

}  // namespace
}  // namespace tessera
