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
  int sp_rank = 0, sp_size = 1;
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

// The KV cache of one sequence on this rank: per layer K and V of the positions it holds, for its
// KV heads. Without sequence parallelism it holds every position so far (rows == length); with it,
// only the positions its SP rank owns. (The paged, multi-sequence cache is its own piece of work;
// this one is contiguous.)
class SequenceKvCache {
 public:
  SequenceKvCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t capacity);
  int64_t length() const { return length_; }      // positions of the sequence so far
  int64_t rows() const { return rows_; }          // of which this rank holds K/V
  int64_t capacity() const { return capacity_; }  // rows it has room for
  Tensor& keys(int64_t layer) { return k_[size_t(layer)]; }    // (capacity, kv_heads, head_dim)
  Tensor& values(int64_t layer) { return v_[size_t(layer)]; }  // (capacity, kv_heads, head_dim)
  void advance(int64_t positions, int64_t rows) {
    length_ += positions;
    rows_ += rows;
  }
  void clear() { length_ = rows_ = 0; }
  // Grows the cache to hold at least n rows, keeping what it holds.
  void reserve(int64_t n);

 private:
  int64_t capacity_;
  int64_t length_ = 0, rows_ = 0;
  std::vector<Tensor> k_, v_;
};

class LlamaModel {
 public:
  // Reads this rank's shard from the model file: its pipeline stage's layers (pp->rank() of
  // pp->size() stages), and of those only its TP rows and columns (tp->rank() of tp->size()).
  // The communicators must outlive the model.
  // stage_weights: one weight per pipeline stage for uneven layer ranges (empty: even).
  static LlamaModel load(const ModelReader& reader, Communicator* tp, Communicator* pp,
                         Communicator* sp = nullptr, const std::vector<double>& stage_weights = {});

  const ModelConfig& config() const { return config_; }
  const ModelShard& shard() const { return shard_; }
  Communicator& tp() const { return *tp_; }
  const PipelineStage& stage() const { return stage_; }
  SequenceKvCache make_cache(int64_t capacity) const;

  // Sequence parallelism: a prompt of n tokens (prefilled into an empty cache) is split into
  // contiguous chunks, one per SP rank; decode position p (after the prompt) is kept by SP rank
  // p % sp. These give the rows of KV cache each rank needs.
  Range sp_chunk(int64_t n, int sp_rank) const;
  int64_t kv_rows_needed(int64_t prompt, int64_t total) const;

  // Runs `tokens` (at positions cache.length() ..) through this stage's layers, appends their
  // K/V to the cache, and on the last stage returns this rank's logits (n, vocab / tp) for the
  // last `n_logits` tokens (all when -1, none when 0): columns [shard().vocab.begin, end) of the
  // full logits.
  // Other stages receive the hidden state from the stage before and pass theirs on; they
  // return an undefined tensor. Every rank of the model calls it with the same tokens. With
  // sequence parallelism a prompt's tokens are split over the SP group (ring attention) and every
  // SP rank of the last stage returns the same logits; n_logits must then be 1.
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
                       bool keep_kv, int64_t sp_prompt, Tensor& out) const;
  // Sequence-parallel attention of this rank's query rows (see forward()).
  void ring_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_prompt,
                      Tensor& out) const;
  void sp_decode_attention(const Tensor& q, const Tensor& keys, const Tensor& values,
                           Tensor& out) const;
  void mlp_block(const LlamaLayer& w, const Tensor& x, Tensor& out) const;

  ModelConfig config_;
  ModelShard shard_;
  Communicator* tp_ = nullptr;
  Communicator* sp_ = nullptr;
  PipelineStage stage_;
  VocabParallelEmbedding embed_;  // first stage only
  std::vector<LlamaLayer> layers_;  // this stage's layers
  Tensor norm_;                   // (hidden), last stage only
  ColumnParallelLinear lm_head_;  // (vocab / tp, hidden), last stage; the embedding's rows when tied
  std::vector<float> rope_inv_freq_;  // (head_dim / 2)
};

}  // namespace tessera
