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

}  // namespace tessera
