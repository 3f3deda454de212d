// Token sampling from one row of logits: greedy, temperature, top-k, top-p, min-p, repetition
// penalty, with a per-request seed (the same seed gives the same tokens).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <utility>
#include <vector>

namespace tessera {

inline constexpr int kMaxLogprobs = 20;

// A sampled token's log-probability under the model (log-softmax of the raw logits: before the
// repetition penalty, temperature and truncation, as vLLM and OpenAI report them) and the
// likeliest tokens' (id, log-probability), best first.
struct TokenLogprobs {
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;
};

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy (argmax, lowest id on ties)
  int top_k = 0;                    // 0: off
  float top_p = 1.0f;               // 1: off
  float min_p = 0.0f;               // 0: off
  float repetition_penalty = 1.0f;  // 1: off (CTRL-style, as Hugging Face)
  uint64_t seed = 0;
  int logprobs = -1;  // report each sampled token's log-probability and this many of
                      // the likeliest alternatives (-1: none; at most kMaxLogprobs)

  void validate() const;  // throws naming the bad parameter
  bool greedy() const { return temperature <= 0.0f; }
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // `previous` are the ids seen so far (prompt and output) for the repetition penalty.
  int32_t sample(const float* logits, int64_t vocab, const std::vector<int32_t>& previous);

  // Top-k sampling over a vocabulary split into shards: each shard offers its top_k candidates
  // (logit after the penalty, id), and sample_candidates() on all shards' candidates draws the
  // same token as sample() on the whole row. Requires top_k > 0.
  using Candidate = std::pair<float, int32_t>;
  std::vector<Candidate> shard_candidates(const float* logits, int64_t n, int64_t first_id,
                                          const std::vector<int32_t>& previous) const;
  int32_t sample_candidates(const std::vector<Candidate>& candidates);

 private:
  // Fills candidates_ from logits ids [first_id, first_id + n) with NaN as -inf and the
  // repetition penalty applied.
  void load_candidates(const float* logits, int64_t n, int64_t first_id,
                       const std::vector<int32_t>& previous, std::vector<Candidate>& out) const;
  // Samples from candidates_ (not greedy): top-k, temperature, top-p, min-p.
  int32_t sample_loaded();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;  // scratch: (logit, id)
  std::vector<double> probs_;                          // scratch
};

}  // namespace tessera
