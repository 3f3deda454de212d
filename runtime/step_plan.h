// A step plan: what every rank of one model replica computes in one step, decided by the
// replica's leader (pipeline stage 0, TP rank 0, SP rank 0) and passed to the other ranks of
// stage 0 by broadcast and down the pipeline with the hidden state. It is plain data: the
// followers hold no scheduler state, only their KV pool (whose blocks the plan names) and, on
// the last stage, each sequence's token ids for the repetition penalty.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/sampler.h"

namespace tessera {

// One SP rank's share of a sequence's KV cache.
struct KvShare {
  int64_t rows = 0;             // rows it holds before the step
  std::vector<int32_t> blocks;  // its block table, covering the rows it holds after the step
};

// Copy a KV block's contents (every layer) before the step: copy-on-write of a shared block.
struct BlockCopy {
  int32_t sp_rank = 0, src = 0, dst = 0;
};

// One sequence's part of a step: `tokens` at positions [position, position + tokens.size()).
struct SequenceWork {
  int64_t seq = 0;              // the engine's id for the sequence
  int64_t position = 0;         // position of tokens[0]; 0 starts (or restarts) the sequence
  std::vector<int32_t> tokens;  // prompt tokens, or the token sampled last step
  std::vector<KvShare> kv;      // one per SP rank
  bool start = false;           // its first step since it was (re)admitted
  std::vector<int32_t> context; // with start: its tokens before `position` (a cached prefix)
  bool sample = false;          // the last stage samples the next token after this step
  int64_t output_index = 0;     // with sample: which output token this is (seeds the sampler)
  SamplingParams sampling;      // with sample
};

struct StepPlan {
  int64_t id = 0;                   // steps are numbered from 1 in the order they are issued
  std::vector<SequenceWork> work;   // in the order of the rows of the step's batch
  std::vector<int64_t> release;     // sequences every rank forgets before this step
  std::vector<BlockCopy> copies;    // done before the step, in order
  bool stop = false;                // no more steps: every rank leaves its loop

  int64_t tokens() const;           // rows of the step's batch
  int64_t samples() const;          // tokens the last stage samples
  std::string encode() const;
  static StepPlan decode(const std::string& bytes);  // throws on bytes not made by encode()
};

}  // namespace tessera
