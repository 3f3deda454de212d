#include "runtime/llama_model.h"

#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "io/llama_tensors.h"
#include "kernels/ops.h"

namespace tessera {
LlamaWeights LlamaWeights::load(const ModelReader& r) {
  const ModelConfig& c = r.config();
  std::map<std::string, Shape> expected;
  for (const TensorSpec& s : llama_tensor_specs(c)) expected[s.name] = s.shape;
  auto load = [&](const std::string& name) {
    const WeightInfo info = r.weight_info(name);
    TESSERA_CHECK(info.shape == expected.at(name),
                  r.path() << ": weight " << name << " has shape " << shape_str(info.shape)
                           << ", the config implies " << shape_str(expected.at(name)));
    return r.read_weight(name);
  };
  LlamaWeights w;
  w.embed = load("embed_tokens.weight");
  w.norm = load("norm.weight");
  w.lm_head = c.tie_word_embeddings ? w.embed : load("lm_head.weight");
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    LlamaLayerWeights l;
    l.input_norm = load(p + "input_layernorm.weight");
    l.wq = load(p + "self_attn.q_proj.weight");
    l.wk = load(p + "self_attn.k_proj.weight");
    l.wv = load(p + "self_attn.v_proj.weight");
    if (c.attention_bias) {
      l.bq = load(p + "self_attn.q_proj.bias");
      l.bk = load(p + "self_attn.k_proj.bias");
      l.bv = load(p + "self_attn.v_proj.bias");
    }
    l.wo = load(p + "self_attn.o_proj.weight");
    l.post_norm = load(p + "post_attention_layernorm.weight");
    l.w_gate = load(p + "mlp.gate_proj.weight");
    l.w_up = load(p + "mlp.up_proj.weight");
    l.w_down = load(p + "mlp.down_proj.weight");
    w.layers.push_back(std::move(l));
  }
  w.rope_inv_freq = ops::rope_inv_freq(int(c.head_dim), c.rope_theta, c.rope_scaling);
  if (r.has_weight("rope_freqs.weight")) {  // GGUF-style explicit per-frequency divisors
    const Tensor f = load("rope_freqs.weight");
    for (int64_t i = 0; i < c.head_dim / 2; ++i) w.rope_inv_freq[size_t(i)] /= f.data<float>()[i];
  }
  return w;
}

SequenceKvCache::SequenceKvCache(const ModelConfig& c, int64_t capacity) : capacity_(capacity) {
  for (int64_t i = 0; i < c.num_layers; ++i) {
    k_.push_back(Tensor::empty({capacity, c.num_kv_heads, c.head_dim}, DType::kF32));
    v_.push_back(Tensor::empty({capacity, c.num_kv_heads, c.head_dim}, DType::kF32));
  }
}

void SequenceKvCache::reserve(int64_t n) {
  if (n <= capacity_) return;
  for (auto* tensors : {&k_, &v_})
    for (Tensor& t : *tensors) {
      Tensor bigger = Tensor::empty({n, t.dim(1), t.dim(2)}, DType::kF32);
      std::memcpy(bigger.raw(), t.raw(), t.rows(0, length_).nbytes());
      t = bigger;
    }
  capacity_ = n;
}

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights)
    : config_(std::move(config)), weights_(std::move(weights)) {}

void LlamaModel::attention_block(const LlamaLayerWeights& w, int64_t layer, const Tensor& x,
                                 const std::vector<int32_t>& positions, SequenceKvCache& cache,
                                 Tensor& out) const {
  const ModelConfig& c = config_;
  const int64_t n = x.dim(0), start = cache.length();
  Tensor q = Tensor::empty({n, c.num_heads, c.head_dim}, DType::kF32);
  // New keys and values go straight into the cache rows [start, start + n).
  Tensor k = cache.keys(layer).rows(start, start + n);
  Tensor v = cache.values(layer).rows(start, start + n);
  ops::linear(x, w.wq, w.bq.defined() ? &w.bq : nullptr, q);
  ops::linear(x, w.wk, w.bk.defined() ? &w.bk : nullptr, k);
  ops::linear(x, w.wv, w.bv.defined() ? &w.bv : nullptr, v);
  ops::rope_inplace(q, positions, weights_.rope_inv_freq);
  ops::rope_inplace(k, positions, weights_.rope_inv_freq);
  Tensor attn = Tensor::empty({n, c.num_heads, c.head_dim}, DType::kF32);
  ops::causal_attention(q, cache.keys(layer).rows(0, start + n),
                        cache.values(layer).rows(0, start + n), positions,
                        1.0f / std::sqrt(float(c.head_dim)), attn);
  ops::linear(attn.view({n, c.q_size()}), w.wo, nullptr, out);
}

void LlamaModel::mlp_block(const LlamaLayerWeights& w, const Tensor& x, Tensor& out) const {
  const int64_t n = x.dim(0), f = config_.intermediate_size;
  Tensor gate = Tensor::empty({n, f}, DType::kF32);
  Tensor up = Tensor::empty({n, f}, DType::kF32);
  ops::linear(x, w.w_gate, nullptr, gate);
  ops::linear(x, w.w_up, nullptr, up);
  ops::swiglu(gate, up, gate);
  ops::linear(gate, w.w_down, nullptr, out);
}

Tensor LlamaModel::forward(const std::vector<int32_t>& tokens, SequenceKvCache& cache,
                           int64_t n_logits) const {
  const ModelConfig& c = config_;
  const int64_t n = int64_t(tokens.size());
  TESSERA_ASSERT(n > 0, "forward called with no tokens");
  TESSERA_ASSERT(cache.length() + n <= cache.capacity(),
                "sequence of " << cache.length() + n << " tokens exceeds the KV cache ("
                               << cache.capacity() << " tokens)");
  std::vector<int32_t> positions(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) positions[size_t(i)] = int32_t(cache.length() + i);

  Tensor x = Tensor::empty({n, c.hidden_size}, DType::kF32);  // the residual stream
  ops::embedding(weights_.embed, tokens, x);
  Tensor normed = Tensor::empty({n, c.hidden_size}, DType::kF32);
  Tensor delta = Tensor::empty({n, c.hidden_size}, DType::kF32);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const LlamaLayerWeights& w = weights_.layers[size_t(i)];
    ops::rms_norm(x, w.input_norm, c.rms_norm_eps, normed);
    attention_block(w, i, normed, positions, cache, delta);
    ops::add_inplace(x, delta);
    ops::rms_norm(x, w.post_norm, c.rms_norm_eps, normed);
    mlp_block(w, normed, delta);
    ops::add_inplace(x, delta);
  }
  cache.advance(n);

  if (n_logits < 0 || n_logits > n) n_logits = n;
  Tensor last = x.rows(n - n_logits, n);
  Tensor last_normed = Tensor::empty({n_logits, c.hidden_size}, DType::kF32);
  ops::rms_norm(last, weights_.norm, c.rms_norm_eps, last_normed);
  Tensor logits = Tensor::empty({n_logits, c.vocab_size}, DType::kF32);
  ops::linear(last_normed, weights_.lm_head, nullptr, logits);
  return logits;
}

}  // namespace tessera
