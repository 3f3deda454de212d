// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM): weights and the forward pass.
// It reads like the paper: embed, then per layer x += attn(norm(x)); x += mlp(norm(x)), then the
// final norm and the LM head. Compute is float32 whatever the stored dtype.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"
#include "io/model_store.h"
#include "kernels/tensor.h"

namespace tessera {

struct LlamaLayerWeights {
  Tensor input_norm;  // (hidden)
  Tensor wq;          // (n_heads * head_dim, hidden)
  Tensor wk;          // (n_kv_heads * head_dim, hidden)
  Tensor wv;          // (n_kv_heads * head_dim, hidden)
  Tensor bq, bk, bv;  // (n_heads * head_dim), (n_kv_heads * head_dim) x2; undefined without bias
  Tensor wo;          // (hidden, n_heads * head_dim)
  Tensor post_norm;   // (hidden)
  Tensor w_gate;      // (ffn, hidden)
  Tensor w_up;        // (ffn, hidden)
  Tensor w_down;      // (hidden, ffn)
};

struct LlamaWeights {
  Tensor embed;    // (vocab, hidden)
  std::vector<LlamaLayerWeights> layers;
  Tensor norm;     // (hidden)
  Tensor lm_head;  // (vocab, hidden); shares storage with embed when tied
  std::vector<float> rope_inv_freq;  // (head_dim / 2)

  static LlamaWeights load(const ModelReader& reader);
};

// The KV cache of one sequence: per layer K and V of every position so far. (The paged,
// multi-sequence cache is runtime/ of a later issue; this one is contiguous.)
class SequenceKvCache {
 public:
  SequenceKvCache(const ModelConfig& config, int64_t capacity);
  // Grows the cache to hold at least n positions, keeping what it holds.
  void reserve(int64_t n);
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  Tensor& keys(int64_t layer) { return k_[size_t(layer)]; }    // (capacity, n_kv_heads, head_dim)
  Tensor& values(int64_t layer) { return v_[size_t(layer)]; }  // (capacity, n_kv_heads, head_dim)
  void advance(int64_t n) { length_ += n; }
  void clear() { length_ = 0; }

 private:
  int64_t capacity_;
  int64_t length_ = 0;
  std::vector<Tensor> k_, v_;
};

class LlamaModel {
 public:
  LlamaModel(ModelConfig config, LlamaWeights weights);
  const ModelConfig& config() const { return config_; }

  // Runs `tokens` (at positions cache.length() ..) through the model, appends their K/V to the
  // cache, and returns logits (n, vocab) for the last `n_logits` tokens (all when -1).
  Tensor forward(const std::vector<int32_t>& tokens, SequenceKvCache& cache,
                 int64_t n_logits = 1) const;

 private:
  void attention_block(const LlamaLayerWeights& w, int64_t layer, const Tensor& x,
                       const std::vector<int32_t>& positions, SequenceKvCache& cache,
                       Tensor& out) const;
  void mlp_block(const LlamaLayerWeights& w, const Tensor& x, Tensor& out) const;

  ModelConfig config_;
  LlamaWeights weights_;
};

}  // namespace tessera
