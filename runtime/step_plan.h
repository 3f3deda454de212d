// A step plan: what every rank of one model replica computes in one step, decided by the
// replica's leader (pipeline stage 0, TP rank 0, SP rank 0) and passed to the other ranks of
// stage 0 by broadcast and down the pipeline with the hidden state. It is plain data: the
// followers hold no scheduler state, only what their model runner keeps of each live sequence
// (its block table, and on the last stage its token ids for the repetition penalty), so a plan
// carries a sequence's whole block table once, in its first step after it was (re)admitted, and
// after that only the blocks it gains, as vLLM's scheduler output does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/sampler.h"

namespace tessera {

// An entry of a block table: block `block` holds the table's rows [index * block_size, ...).
struct TableEntry {
  int32_t index = 0, block = 0;
};

// One SP rank's share of a sequence's KV cache, and how the step changes its block table. After
// the step the table covers the rows the rank holds then.
struct KvShare {
  int64_t rows = 0;                  // rows it holds before the step
  std::vector<int32_t> blocks;       // with start: the whole table; else the blocks appended to it
  std::vector<TableEntry> replaced;  // entries that became a copy of their block (copy-on-write)
};

// Copy a KV block's contents (every layer) before the step: copy-on-write of a shared block.
struct BlockCopy {
  int32_t sp_rank = 0, src = 0, dst = 0;
};

// One sequence's part of a step: `tokens` at positions [position, position + tokens.size()).
struct SequenceWork {
  int64_t seq = 0;               // the engine's id for the sequence
  int64_t position = 0;          // position of tokens[0]; 0 starts (or restarts) the sequence
  std::vector<int32_t> tokens;   // prompt tokens, or the token sampled last step
  std::vector<KvShare> kv;       // one per SP rank
  bool start = false;            // its first step since it was (re)admitted (or forked)
  std::vector<int32_t> context;  // with start: its tokens before `position` (a cached prefix)
  int64_t logits = 0;            // the last stage returns the logits of its last `logits` rows
                                 // (-1: all; tests and prompt log-probabilities)
  bool sample = false;           // the last stage samples the next token after this step
  int64_t output_index = 0;      // with sample: which output token this is (seeds the sampler)
  SamplingParams sampling;       // with sample
  // With sample, speculative decoding: the last `drafts` tokens are proposals, not yet the
  // sequence's. The last stage samples after each of the last drafts + 1 rows (output_index,
  // output_index + 1, ...: the tokens decoding would sample there) and keeps the tokens up to the
  // first that differs from the proposal it checks: 1 to drafts + 1 tokens.
  int64_t drafts = 0;
};

// One SP rank's block table of a sequence after the step changes it by `share`: the whole table
// with start, else the blocks appended and the entries replaced (throws on an entry outside it).
void apply_share(const KvShare& share, bool start, std::vector<int32_t>& table);

struct StepPlan {
  int64_t id = 0;                  // steps are numbered from 1 in the order they are issued
  std::vector<SequenceWork> work;  // in the order of the rows of the step's batch
  std::vector<int64_t> release;    // sequences every rank forgets before this step (finished or
                                   // preempted: a preempted one starts again with start)
  std::vector<BlockCopy> copies;   // done before the step, in order
  bool stop = false;               // no more steps: every rank leaves its loop

  int64_t tokens() const;   // rows of the step's batch
  int64_t samples() const;  // tokens the last stage samples
  std::string encode() const;
  static StepPlan decode(const std::string& bytes);  // throws on bytes not made by encode()
};

}  // namespace tessera
