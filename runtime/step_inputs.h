// What one rank computes in one step, made once from the step's plan by the model runner
// (runtime/model_runner.h) and read by every layer of the model: the rank's rows of the batch
// (one sequence after another), where each row sits, where its keys and values go, and what
// paged attention reads. With sequence parallelism a prompt is split over the SP group (this rank
// computes its chunk) and a decode token's K/V is kept by one SP rank (parallel/sp_split.h).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "runtime/kv_cache.h"

namespace tessera {

// One sequence's rows of a step on this rank.
struct SequenceRows {
  int64_t seq = 0;          // the engine's id
  int64_t first_row = 0;    // its first row of this rank's hidden state
  int64_t rows = 0;         // rows this rank computes for it
  int64_t tokens = 0;       // its tokens in the step (over the whole SP group)
  int64_t position = 0;     // position of this rank's first row
  int64_t cached_rows = 0;  // KV rows this rank holds for it before the step
  bool keep = true;         // this rank keeps the K/V of some of its rows (SP decode: each row's
                            // K/V goes to the SP rank of its position, position % sp)
  bool sp_prompt = false;   // a prompt split over the SP group (ring attention)
  int64_t logits = 0;       // the last stage computes logits for its last `logits` rows
  bool sample = false;      // and samples the next token from the last of them
  const std::vector<int32_t>* blocks = nullptr;  // its block table on this rank
  int64_t last_row() const { return first_row + rows; }
};

struct StepInputs {
  std::vector<SequenceRows> sequences;  // in the order of the batch's rows
  int64_t rows = 0;                     // of this rank's hidden state
  int64_t logits = 0;                   // rows of logits the last stage computes
  std::vector<int32_t> tokens;          // (rows) each row's token id (read by the first stage)
  std::vector<int32_t> positions;       // (rows) each row's position
  std::vector<int64_t> slots;           // (rows) each row's K/V slot in the pool (-1: not kept)
  std::vector<ops::PagedSequence> attention;  // paged attention's sequences (none: an SP prompt)
  // The same on the model's device, made by upload() and read by every layer (a decode graph's
  // kernels read them where they were when it was captured: refill() rewrites them in place).
  struct OnDevice {
    Tensor positions;                   // (rows) int32
    Tensor slots;                       // (rows) int64
    ops::PagedAttentionWork attention;  // prepared for the pool's keys
  } device;

  bool sp_prompt() const { return !sequences.empty() && sequences[0].sp_prompt; }
  // Makes `device` on the pool's device for queries of `heads` heads in q_dtype; keys_capacity > 0
  // fixes the attention plan's shape for refill (see ops::prepare_paged_attention).
  void upload(KvPool& pool, int64_t heads, DType q_dtype, int64_t keys_capacity = 0);
  // Rewrites `device` in place with other's rows, which must have the same shape (rows and
  // sequences of as many rows each).
  void refill(const StepInputs& other);
  // Drops the host pointers into the sequences' block tables (which a later plan may free), for
  // inputs kept past their step; `device` stays as it is.
  void forget_tables();
};

// The pieces of a step's inputs that depend on where this rank sits.
struct RankShare {
  int sp_rank = 0, sp_size = 1;
  int64_t block_size = 16;
};

// Adds one sequence's rows to `in`: its `tokens` (the whole SP group's) at positions position ..,
// its K/V after the cached_rows this rank holds, in `blocks`. With sequence parallelism a sequence
// at position 0 is a prompt split over the group (it must be the step's only sequence), and a
// later one decodes: its token, and any proposals to check, each row kept by the SP rank of its
// position (parallel/sp_split.h).
void add_sequence(StepInputs& in, const RankShare& rank, int64_t seq, int64_t position,
                  const std::vector<int32_t>& tokens, int64_t cached_rows,
                  const std::vector<int32_t>& blocks, int64_t logits, bool sample);

}  // namespace tessera
