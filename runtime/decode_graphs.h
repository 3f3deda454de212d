// Decode steps as graph replays (CUDA graphs on a GPU; see RunnerOptions::graph_batch): one graph
// per batch-size bucket (1, 2, 4, ... sequences), captured by the first step of that bucket, with
// its own residual-stream buffer and step inputs, which later steps rewrite in place before a
// replay. A graph is an optimisation: a bucket whose graph cannot be captured runs kernel by
// kernel from then on.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>

#include "runtime/kv_cache.h"
#include "runtime/llama_model.h"
#include "runtime/step_inputs.h"

namespace tessera {

class DecodeGraphs {
 public:
  DecodeGraphs(const LlamaModel& model, int64_t max_batch, int64_t max_keys);
  ~DecodeGraphs();
  // Whether `in` (this rank's step) can be a replay: every sequence decodes one token, within the
  // key capacity, and its bucket's graph did not fail.
  bool fits(const StepInputs& in) const;
  // The step as a replay: the first stage embeds in.tokens, the others take `hidden`, into the
  // graph's buffer; the graph runs the layers (and on the last stage the head). Returns the
  // stage's output, copied out of the graph's buffers: the hidden state (rows, hidden) in the
  // model's dtype, or on the last stage the logits (in.logits, vocab / tp) f32, on the model's
  // device; undefined when no graph could be captured for the bucket.
  Tensor run(const StepInputs& in, const Tensor& hidden, KvPool& pool);
  int64_t replays() const { return replays_; }
  int64_t captured() const { return int64_t(graphs_.size()); }
  double time_replays(int64_t bucket, int times) const;  // see ModelRunner

 private:
  struct Graph;
  const LlamaModel& model_;
  int64_t max_batch_, max_keys_;
  std::map<int64_t, std::unique_ptr<Graph>> graphs_;  // by bucket
  std::set<int64_t> failed_;                          // buckets whose graph could not be captured
  int64_t replays_ = 0;
};

}  // namespace tessera
