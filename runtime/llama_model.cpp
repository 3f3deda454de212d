#include "runtime/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "io/llama_tensors.h"
#include "kernels/ops.h"

namespace tessera {

LlamaModel LlamaModel::load(const ModelReader& r, Communicator* tp, Communicator* pp) {
  const ModelConfig& c = r.config();
  LlamaModel m;
  m.config_ = c;
  m.tp_ = tp;
  m.stage_ = PipelineStage(pp, c.num_layers);
  ModelShard& s = m.shard_;
  s.layers = m.stage_.layers();
  s.tp_rank = tp->rank();
  s.tp_size = tp->size();
  s.heads = head_shard(c.num_heads, c.num_kv_heads, s.tp_size, s.tp_rank);
  s.ffn = even_shard(c.intermediate_size, s.tp_size, s.tp_rank);
  s.vocab = even_shard(c.vocab_size, s.tp_size, s.tp_rank);

  std::map<std::string, Shape> expected;
  for (const TensorSpec& spec : llama_tensor_specs(c)) expected[spec.name] = spec.shape;
  auto check = [&](const std::string& name) {
    const WeightInfo info = r.weight_info(name);
    TESSERA_CHECK(info.shape == expected.at(name),
                  r.path() << ": weight " << name << " has shape " << shape_str(info.shape)
                           << ", the config implies " << shape_str(expected.at(name)));
    return info.shape;
  };
  // Only this rank's hyperslab of each tensor is read.
  auto whole = [&](const std::string& name) {
    check(name);
    return r.read_weight(name);
  };
  auto rows = [&](const std::string& name, Range rg) {
    const Shape sh = check(name);
    return sh.size() == 1 ? r.read_weight_slice(name, rg.begin, rg.end, 0, 0)
                          : r.read_weight_slice(name, rg.begin, rg.end, 0, sh[1]);
  };
  auto cols = [&](const std::string& name, Range rg) {
    const Shape sh = check(name);
    return r.read_weight_slice(name, 0, sh[0], rg.begin, rg.end);
  };
  const int64_t hd = c.head_dim;
  const Range q_rows{s.heads.q.begin * hd, s.heads.q.end * hd};
  const Range kv_rows{s.heads.kv.begin * hd, s.heads.kv.end * hd};

  Tensor embed;  // read once even when the first stage is also the last and the head is tied
  if (m.stage_.first() || (m.stage_.last() && c.tie_word_embeddings))
    embed = rows("embed_tokens.weight", s.vocab);
  if (m.stage_.first()) m.embed_ = VocabParallelEmbedding(embed, s.vocab.begin, c.vocab_size, tp);
  if (m.stage_.last()) {
    m.norm_ = whole("norm.weight");
    m.lm_head_ = ColumnParallelLinear(
        c.tie_word_embeddings ? embed : rows("lm_head.weight", s.vocab), Tensor());
  }
  for (int64_t i = s.layers.first; i < s.layers.last; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    auto bias = [&](const char* n, Range rg) {
      return c.attention_bias ? rows(p + n, rg) : Tensor();
    };
    LlamaLayer l;
    l.input_norm = whole(p + "input_layernorm.weight");
    l.q = ColumnParallelLinear(rows(p + "self_attn.q_proj.weight", q_rows),
                               bias("self_attn.q_proj.bias", q_rows));
    l.k = ColumnParallelLinear(rows(p + "self_attn.k_proj.weight", kv_rows),
                               bias("self_attn.k_proj.bias", kv_rows));
    l.v = ColumnParallelLinear(rows(p + "self_attn.v_proj.weight", kv_rows),
                               bias("self_attn.v_proj.bias", kv_rows));
    l.o = RowParallelLinear(cols(p + "self_attn.o_proj.weight", q_rows), tp);
    l.post_norm = whole(p + "post_attention_layernorm.weight");
    l.gate = ColumnParallelLinear(rows(p + "mlp.gate_proj.weight", s.ffn), Tensor());
    l.up = ColumnParallelLinear(rows(p + "mlp.up_proj.weight", s.ffn), Tensor());
    l.down = RowParallelLinear(cols(p + "mlp.down_proj.weight", s.ffn), tp);
    m.layers_.push_back(std::move(l));
  }
  m.rope_inv_freq_ = ops::rope_inv_freq(int(hd), c.rope_theta, c.rope_scaling);
  if (r.has_weight("rope_freqs.weight")) {  // GGUF-style explicit per-frequency divisors
    const Tensor f = whole("rope_freqs.weight");
    for (int64_t i = 0; i < hd / 2; ++i) m.rope_inv_freq_[size_t(i)] /= f.data<float>()[i];
  }
  return m;
}

SequenceKvCache::SequenceKvCache(int64_t layers, int64_t kv_heads, int64_t head_dim,
                                 int64_t capacity)
    : capacity_(capacity) {
  for (int64_t i = 0; i < layers; ++i) {
    k_.push_back(Tensor::empty({capacity, kv_heads, head_dim}, DType::kF32));
    v_.push_back(Tensor::empty({capacity, kv_heads, head_dim}, DType::kF32));
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

SequenceKvCache LlamaModel::make_cache(int64_t capacity) const {
  return SequenceKvCache(shard_.layers.size(), shard_.heads.kv.size(), config_.head_dim, capacity);
}

void LlamaModel::attention_block(const LlamaLayer& w, int64_t layer, const Tensor& x,
                                 const std::vector<int32_t>& positions, SequenceKvCache& cache,
                                 Tensor& out) const {
  const int64_t n = x.dim(0), start = cache.length(), hd = config_.head_dim;
  const int64_t heads = shard_.heads.q.size();
  Tensor q = Tensor::empty({n, heads, hd}, DType::kF32);
  // New keys and values go straight into the cache rows [start, start + n).
  Tensor k = cache.keys(layer).rows(start, start + n);
  Tensor v = cache.values(layer).rows(start, start + n);
  w.q.forward(x, q);
  w.k.forward(x, k);
  w.v.forward(x, v);
  ops::rope_inplace(q, positions, rope_inv_freq_);
  ops::rope_inplace(k, positions, rope_inv_freq_);
  Tensor attn = Tensor::empty({n, heads, hd}, DType::kF32);
  ops::causal_attention(q, cache.keys(layer).rows(0, start + n),
                        cache.values(layer).rows(0, start + n), positions,
                        1.0f / std::sqrt(float(hd)), attn);
  w.o.forward(attn.view({n, heads * hd}), out);
}

void LlamaModel::mlp_block(const LlamaLayer& w, const Tensor& x, Tensor& out) const {
  const int64_t n = x.dim(0), f = shard_.ffn.size();
  Tensor gate = Tensor::empty({n, f}, DType::kF32);
  Tensor up = Tensor::empty({n, f}, DType::kF32);
  w.gate.forward(x, gate);
  w.up.forward(x, up);
  ops::swiglu(gate, up, gate);
  w.down.forward(gate, out);
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
  if (stage_.first())
    embed_.forward(tokens, x);
  else
    stage_.receive(x);
  Tensor normed = Tensor::empty({n, c.hidden_size}, DType::kF32);
  Tensor delta = Tensor::empty({n, c.hidden_size}, DType::kF32);
  for (int64_t i = 0; i < int64_t(layers_.size()); ++i) {  // i: the layer's index in this stage
    const LlamaLayer& w = layers_[size_t(i)];
    ops::rms_norm(x, w.input_norm, c.rms_norm_eps, normed);
    attention_block(w, i, normed, positions, cache, delta);
    ops::add_inplace(x, delta);
    ops::rms_norm(x, w.post_norm, c.rms_norm_eps, normed);
    mlp_block(w, normed, delta);
    ops::add_inplace(x, delta);
  }
  cache.advance(n);
  if (!stage_.last()) {
    stage_.send(x);
    return Tensor();
  }
  if (n_logits == 0) return Tensor();

  if (n_logits < 0 || n_logits > n) n_logits = n;
  Tensor last = x.rows(n - n_logits, n);
  Tensor last_normed = Tensor::empty({n_logits, c.hidden_size}, DType::kF32);
  ops::rms_norm(last, norm_, c.rms_norm_eps, last_normed);
  Tensor logits = Tensor::empty({n_logits, shard_.vocab.size()}, DType::kF32);
  lm_head_.forward(last_normed, logits);
  return logits;
}

Tensor LlamaModel::prefill(const std::vector<int32_t>& tokens, SequenceKvCache& cache,
                           int64_t microbatch, int64_t n_logits) const {
  const int64_t n = int64_t(tokens.size());
  if (microbatch <= 0 || microbatch >= n) return forward(tokens, cache, n_logits);
  // Stage s works on microbatch i while stage s + 1 works on microbatch i - 1: each forward()
  // blocks only on its own input from the stage before.
  std::vector<Tensor> parts;
  const int64_t want = n_logits < 0 || n_logits > n ? n : n_logits;
  for (int64_t b = 0; b < n; b += microbatch) {
    const int64_t e = std::min(n, b + microbatch);
    const std::vector<int32_t> chunk(tokens.begin() + b, tokens.begin() + e);
    const int64_t rows_wanted = std::clamp<int64_t>(want - (n - e), 0, e - b);
    Tensor t = forward(chunk, cache, rows_wanted);
    if (t.defined()) parts.push_back(t);
  }
  if (!stage_.last()) return Tensor();
  if (parts.size() == 1) return parts[0];
  int64_t total = 0;
  for (const Tensor& t : parts) total += t.dim(0);
  Tensor out = Tensor::empty({total, shard_.vocab.size()}, DType::kF32);
  int64_t row = 0;
  for (const Tensor& t : parts) {
    std::memcpy(out.rows(row, row + t.dim(0)).raw(), t.raw(), t.nbytes());
    row += t.dim(0);
  }
  return out;
}

Tensor LlamaModel::gather_logits(const Tensor& local) const {
  if (shard_.tp_size == 1) return local;
  const int64_t m = local.dim(0), part = local.dim(1), tp = shard_.tp_size;
  Tensor stacked = Tensor::empty({tp, m, part}, DType::kF32);  // rank-major
  tp_->all_gather(local, stacked);
  Tensor full = Tensor::empty({m, tp * part}, DType::kF32);
  const float* src = stacked.data<float>();
  float* dst = full.data<float>();
  for (int64_t r = 0; r < tp; ++r)
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(dst + i * tp * part + r * part, src + (r * m + i) * part, size_t(part) * 4);
  return full;
}

}  // namespace tessera
