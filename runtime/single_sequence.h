// One sequence through a model runner, with step plans made here instead of by a scheduler
// (its blocks in order from block 0 of each SP rank's pool): for tools and tests that want a
// sequence's logits, on the runner's one path. Every rank of the replica calls it alike; the
// stages after the first take each plan from the stage before, as under the engine.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/model_runner.h"

namespace tessera {

class SingleSequence {
 public:
  // The runner's pool must hold the sequence's longest length (on the SP rank holding the most).
  explicit SingleSequence(ModelRunner& runner, int64_t id = 0);
  ~SingleSequence() { runner_.forget(id_); }
  SingleSequence(const SingleSequence&) = delete;
  SingleSequence& operator=(const SingleSequence&) = delete;
  // Feeds `tokens` after those so far. Returns on the last stage the logits (f32 on the host,
  // this rank's vocabulary shard) of the last `logits` of them (-1: all); elsewhere undefined.
  // With sequence parallelism the first feed is the prompt (split over the SP group) and each
  // later one a single token.
  Tensor feed(const std::vector<int32_t>& tokens, int64_t logits = 1);
  // The first feed in chunks of `chunk` tokens (0: one), so that pipeline stages work on
  // different chunks at once; returns the logits of the last `logits` tokens of the whole.
  Tensor prefill(const std::vector<int32_t>& tokens, int64_t chunk, int64_t logits = 1);
  int64_t length() const { return length_; }
  // KV rows SP rank `sp_rank` holds.
  int64_t rows_held(int sp_rank) const;

 private:
  int64_t rows_at(int sp_rank, int64_t length) const;  // after `length` positions
  ModelRunner& runner_;
  int64_t id_;
  int64_t length_ = 0, prompt_ = 0;
  int64_t next_step_ = 1;
  std::vector<int64_t> blocks_;  // per SP rank: blocks 0 .. blocks_[r] - 1 are its table
};

// The logits of `tokens` fed as one sequence (in chunks of `chunk`; 0: at once) into a runner of
// its own with room for them: the last `logits` rows (-1: all) over the whole vocabulary (the
// TP shards gathered), f32 on the host, on the last stage; undefined elsewhere. Collective over
// the replica.
Tensor sequence_logits(const LlamaModel& model, const std::vector<int32_t>& tokens,
                       int64_t logits = -1, int64_t chunk = 0);

}  // namespace tessera
