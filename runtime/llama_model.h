// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM): weights and the forward pass.
// It reads like the paper: embed, then per layer x += attn(norm(x)); x += mlp(norm(x)), then the
// final norm and the LM head. Compute is float32 whatever the stored dtype. Under tensor
// parallelism each rank holds its shard of every layer; the collectives live in the parallel
// layers (parallel/parallel_layers.h), not here.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"
#include "io/model_store.h"
#include "kernels/tensor.h"
#include "parallel/parallel_layers.h"
#include "parallel/pipeline.h"
#include "parallel/sharding.h"

namespace tessera {

// What this rank holds of the model.
struct ModelShard {
  int tp_rank = 0, tp_size = 1;
  LayerRange layers;  // this pipeline stage's layers
  HeadShard heads;  // query heads and KV heads
  Range ffn;        // intermediate features
  Range vocab;      // embedding / LM head rows
};

struct LlamaLayer {
  Tensor input_norm;           // (hidden)
  ColumnParallelLinear q;      // (local q heads * head_dim, hidden) [+ bias]
  ColumnParallelLinear k;      // (local kv heads * head_dim, hidden) [+ bias]
  ColumnParallelLinear v;      // (local kv heads * head_dim, hidden) [+ bias]
  RowParallelLinear o;         // (hidden, local q heads * head_dim)
  Tensor post_norm;            // (hidden)
  ColumnParallelLinear gate;   // (ffn / tp, hidden)
  ColumnParallelLinear up;     // (ffn / tp, hidden)
  RowParallelLinear down;      // (hidden, ffn / tp)
};

// The KV cache of one sequence: per layer K and V of every position so far, for this rank's KV
// heads. (The paged, multi-sequence cache is its own piece of work; this one is contiguous.)
class SequenceKvCache {
 public:
  SequenceKvCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t capacity);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  Tensor& keys(int64_t layer) { return k_[size_t(layer)]; }    // (capacity, kv_heads, head_dim)
  Tensor& values(int64_t layer) { return v_[size_t(layer)]; }  // (capacity, kv_heads, head_dim)
  void advance(int64_t n) { length_ += n; }
  void clear() { length_ = 0; }
  // Grows the cache to hold at least n positions, keeping what it holds.
  void reserve(int64_t n);

 private:
  int64_t capacity_;
  int64_t length_ = 0;
  std::vector<Tensor> k_, v_;
};

class LlamaModel {
 public:
  // Reads this rank's shard from the model file: its pipeline stage's layers (pp->rank() of
  // pp->size() stages), and of those only its TP rows and columns (tp->rank() of tp->size()).
  // The communicators must outlive the model.
  static LlamaModel load(const ModelReader& reader, Communicator* tp, Communicator* pp);

  const ModelConfig& config() const { return config_; }
  const ModelShard& shard() const { return shard_; }
  Communicator& tp() const { return *tp_; }
  const PipelineStage& stage() const { return stage_; }
  SequenceKvCache make_cache(int64_t capacity) const;

  // Runs `tokens` (at positions cache.length() ..) through this stage's layers, appends their
  // K/V to the cache, and on the last stage returns this rank's logits (n, vocab / tp) for the
  // last `n_logits` tokens (all when -1, none when 0): columns [shard().vocab.begin, end) of the
  // full logits.
  // Other stages receive the hidden state from the stage before and pass theirs on; they
  // return an undefined tensor. Every rank of the model calls it with the same tokens.
  Tensor forward(const std::vector<int32_t>& tokens, SequenceKvCache& cache,
                 int64_t n_logits = 1) const;
  // forward() of a prompt in microbatches of `microbatch` tokens, so that pipeline stages work
  // on different microbatches at once. Returns what the last forward returns.
  Tensor prefill(const std::vector<int32_t>& tokens, SequenceKvCache& cache, int64_t microbatch,
                 int64_t n_logits = 1) const;
  // The full logits (n, vocab) from every rank's shard (an all-gather when tp > 1).
  Tensor gather_logits(const Tensor& local) const;

 private:
  void attention_block(const LlamaLayer& w, int64_t layer, const Tensor& x,
                       const std::vector<int32_t>& positions, SequenceKvCache& cache,
                       Tensor& out) const;
  void mlp_block(const LlamaLayer& w, const Tensor& x, Tensor& out) const;

  ModelConfig config_;
  ModelShard shard_;
  Communicator* tp_ = nullptr;
  PipelineStage stage_;
  VocabParallelEmbedding embed_;  // first stage only
  std::vector<LlamaLayer> layers_;  // this stage's layers
  Tensor norm_;                   // (hidden), last stage only
  ColumnParallelLinear lm_head_;  // (vocab / tp, hidden), last stage; the embedding's rows when tied
  std::vector<float> rope_inv_freq_;  // (head_dim / 2)
};

}  // namespace tessera
