// Sampling a step's tokens on the last pipeline stage, from each rank's vocabulary shard of the
// logits. Every TP rank of the stage calls it with the same rows and gets the same tokens; the
// whole vocabulary is gathered only for rows that need it (top-p or min-p without top-k):
// greedy rows gather each shard's best candidate, top-k rows each shard's k best.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/llama_model.h"
#include "runtime/sampler.h"

namespace tessera {

struct RowSampling {
  SamplingParams params;
  int64_t output_index = 0;                 // the sampler is seeded by (seed, output_index)
  const std::vector<int32_t>* history = nullptr;  // ids so far, for the repetition penalty
};

// The seed for output token `index` of a request with seed `seed`: a token's randomness does
// not depend on the batch it was computed in, on preemption, or on the layout.
uint64_t token_seed(uint64_t seed, int64_t index);

// One token per row of local_logits (rows, vocab shard).
std::vector<int32_t> sample_rows(const LlamaModel& model, const Tensor& local_logits,
                                 const std::vector<RowSampling>& rows);

// A step's sampled tokens, and for the rows that ask for them (params.logprobs >= 0) the tokens'
// log-probabilities (empty for the others).
struct SampledTokens {
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;  // one per token
  // A step's: how many of the tokens each sampled sequence gets, in plan order (1, or with
  // speculative decoding 1 to drafts + 1). Empty from sample_with_logprobs (a token per row).
  std::vector<int32_t> counts;
};
// sample_rows() with log-probabilities. Collective over the TP group like sample_rows(); the
// rows that ask for log-probabilities gather their whole row of logits (to the host).
SampledTokens sample_with_logprobs(const LlamaModel& model, const Tensor& local_logits,
                                   const std::vector<RowSampling>& rows);
// The log-probability of `token` and the `top` likeliest tokens, from one whole row of raw
// logits (NaN counts as -inf).
TokenLogprobs logprobs_of(const float* logits, int64_t vocab, int32_t token, int top);

// The last stage's answer to the leader for a step, as int32 words: per sampled row its token,
// then (when the row asks for them) its log-probability and `logprobs` (id, log-probability)
// pairs, floats by their bits.
void append_sampled(std::vector<int32_t>& words, int32_t token, const TokenLogprobs& lp,
                    int logprobs);
// Reads one row's record written by append_sampled() at `at` and moves `at` past it.
int32_t read_sampled(const std::vector<int32_t>& words, size_t& at, int logprobs,
                     TokenLogprobs& lp);
// Words of a step's answer: one per sampled row plus the log-probability records.
int64_t sampled_words(int logprobs);

}  // namespace tessera
