#include "runtime/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "io/llama_tensors.h"
#include "kernels/ops.h"

namespace tessera {

LlamaModel LlamaModel::load(const ModelReader& r, Communicator* tp, Communicator* pp,
                            Communicator* sp, const std::vector<double>& stage_weights) {
  const ModelConfig& c = r.config();
  LlamaModel m;
  m.config_ = c;
  m.tp_ = tp;
  m.sp_ = sp;
  m.stage_ = PipelineStage(pp, c.num_layers, stage_weights);
  ModelShard& s = m.shard_;
  s.layers = m.stage_.layers();
  s.tp_rank = tp->rank();
  s.tp_size = tp->size();
  s.sp_rank = sp ? sp->rank() : 0;
  s.sp_size = sp ? sp->size() : 1;
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
      std::memcpy(bigger.raw(), t.raw(), t.rows(0, rows_).nbytes());
      t = bigger;
    }
  capacity_ = n;
}

Range LlamaModel::sp_chunk(int64_t n, int sp_rank) const {
  const int64_t per = (n + shard_.sp_size - 1) / shard_.sp_size;
  const int64_t begin = std::min(n, sp_rank * per);
  return {begin, std::min(n, begin + per)};
}

int64_t LlamaModel::kv_rows_needed(int64_t prompt, int64_t total) const {
  const int64_t sp = shard_.sp_size;
  if (sp == 1) return total;
  int64_t most = 0;
  for (int r = 0; r < sp; ++r) {
    // decode positions p in [prompt, total) with p % sp == r
    auto upto = [&](int64_t x) { return x <= r ? 0 : (x - r + sp - 1) / sp; };  // p in [0, x)
    most = std::max(most, sp_chunk(prompt, r).size() + upto(total) - upto(prompt));
  }
  return most;
}

SequenceKvCache LlamaModel::make_cache(int64_t capacity) const {
  return SequenceKvCache(shard_.layers.size(), shard_.heads.kv.size(), config_.head_dim, capacity);
}

void LlamaModel::attention_block(const LlamaLayer& w, int64_t layer, const Tensor& x,
                                 const std::vector<int32_t>& positions, SequenceKvCache& cache,
                                 bool keep_kv, int64_t sp_prompt, Tensor& out) const {
  const int64_t n = x.dim(0), start = cache.rows(), hd = config_.head_dim;
  const int64_t heads = shard_.heads.q.size(), kv_heads = shard_.heads.kv.size();
  Tensor q = Tensor::empty({n, heads, hd}, DType::kF32);
  // New keys and values go straight into the cache rows [start, start + n) when this rank keeps
  // them (with sequence parallelism a decode token's K/V is kept by one SP rank).
  Tensor k = keep_kv ? cache.keys(layer).rows(start, start + n)
                     : Tensor::empty({n, kv_heads, hd}, DType::kF32);
  Tensor v = keep_kv ? cache.values(layer).rows(start, start + n)
                     : Tensor::empty({n, kv_heads, hd}, DType::kF32);
  w.q.forward(x, q);
  w.k.forward(x, k);
  w.v.forward(x, v);
  ops::rope_inplace(q, positions, rope_inv_freq_);
  ops::rope_inplace(k, positions, rope_inv_freq_);
  Tensor attn = Tensor::empty({n, heads, hd}, DType::kF32);
  const int64_t kept = start + (keep_kv ? n : 0);
  if (shard_.sp_size == 1) {
    ops::causal_attention(q, cache.keys(layer).rows(0, kept), cache.values(layer).rows(0, kept),
                          positions, 1.0f / std::sqrt(float(hd)), attn);
  } else if (sp_prompt > 0) {
    ring_attention(q, k, v, sp_prompt, attn);  // a prompt split over the SP group
  } else {
    sp_decode_attention(q, cache.keys(layer).rows(0, kept), cache.values(layer).rows(0, kept), attn);
  }
  w.o.forward(attn.view({n, heads * hd}), out);
}

void LlamaModel::ring_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                int64_t n_prompt, Tensor& out) const {
  // Each SP rank holds one contiguous chunk of the prompt. Its queries attend causally to its own
  // keys, and fully to the keys of every earlier chunk, which arrive around the ring (KV blocks
  // are passed on S - 1 times); partial results combine by log-sum-exp.
  const int sp = shard_.sp_size, me = shard_.sp_rank;
  const int64_t m = q.dim(0), heads = q.dim(1), hd = q.dim(2), kvh = k.dim(1);
  const float scale = 1.0f / std::sqrt(float(hd));
  ops::AttentionState state = ops::AttentionState::empty(m, heads, hd);
  ops::attention_accumulate(q, k, v, 0, scale, state);
  Tensor block = Tensor::empty({2, m, kvh, hd}, DType::kF32);  // K then V
  std::memcpy(block.raw(), k.raw(), k.nbytes());
  std::memcpy(static_cast<char*>(block.raw()) + k.nbytes(), v.raw(), v.nbytes());
  for (int step = 1; step < sp; ++step) {
    const int origin = (me - step + sp) % sp;  // whose chunk arrives now
    const int64_t rows = sp_chunk(n_prompt, origin).size();
    Tensor incoming = Tensor::empty({2, rows, kvh, hd}, DType::kF32);
    sp_->send_recv(block, (me + 1) % sp, incoming, (me - 1 + sp) % sp, 21);
    if (origin < me && rows > 0) {
      const Tensor flat = incoming.view({2, rows * kvh * hd});
      ops::attention_accumulate(q, flat.rows(0, 1).view({rows, kvh, hd}),
                                flat.rows(1, 2).view({rows, kvh, hd}), ops::kAllKeysVisible, scale,
                                state);
    }
    block = incoming;
  }
  ops::attention_finish(state, out);
}

void LlamaModel::sp_decode_attention(const Tensor& q, const Tensor& keys, const Tensor& values,
                                     Tensor& out) const {
  // Every SP rank attends over the positions it keeps; the partial states are gathered and
  // merged in rank order, so every rank ends with the same result.
  const int sp = shard_.sp_size;
  const int64_t m = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  ops::AttentionState mine = ops::AttentionState::empty(m, heads, hd);
  ops::attention_accumulate(q, keys, values, ops::kAllKeysVisible, 1.0f / std::sqrt(float(hd)),
                            mine);
  Tensor accs = Tensor::empty({sp, m, heads, hd}, DType::kF32);
  Tensor mxs = Tensor::empty({sp, m, heads}, DType::kF32);
  Tensor sums = Tensor::empty({sp, m, heads}, DType::kF32);
  sp_->all_gather(mine.acc, accs);
  sp_->all_gather(mine.mx, mxs);
  sp_->all_gather(mine.sum, sums);
  ops::AttentionState merged = ops::AttentionState::empty(m, heads, hd);
  for (int r = 0; r < sp; ++r) {
    ops::AttentionState part{accs.rows(r, r + 1).view({m, heads, hd}),
                             mxs.rows(r, r + 1).view({m, heads}),
                             sums.rows(r, r + 1).view({m, heads})};
    ops::attention_merge(merged, part);
  }
  ops::attention_finish(merged, out);
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
  const int sp = shard_.sp_size;
  // With sequence parallelism a prompt (into an empty cache) is split over the SP group; a decode
  // token is computed by every SP rank and kept by SP rank position % sp.
  const bool sp_prefill = sp > 1 && cache.length() == 0;
  TESSERA_ASSERT(!sp_prefill || n_logits == 1, "sequence-parallel prefill returns one logits row");
  TESSERA_ASSERT(sp == 1 || sp_prefill || n == 1, "sequence-parallel decode is one token a step");
  const Range mine = sp_prefill ? sp_chunk(n, shard_.sp_rank) : Range{0, n};
  const int64_t m = mine.size();
  const bool keep_kv = sp == 1 || sp_prefill || cache.length() % sp == shard_.sp_rank;
  const int64_t kept = keep_kv ? m : 0;
  TESSERA_ASSERT(cache.rows() + kept <= cache.capacity(),
                 "sequence needs " << cache.rows() + kept << " rows of KV cache; it holds "
                                   << cache.capacity());
  std::vector<int32_t> positions(static_cast<size_t>(m));
  for (int64_t i = 0; i < m; ++i) positions[size_t(i)] = int32_t(cache.length() + mine.begin + i);
  const std::vector<int32_t> my_tokens(tokens.begin() + mine.begin, tokens.begin() + mine.end);

  Tensor x = Tensor::empty({m, c.hidden_size}, DType::kF32);  // the residual stream
  if (stage_.first())
    embed_.forward(my_tokens, x);
  else
    stage_.receive(x);
  Tensor normed = Tensor::empty({m, c.hidden_size}, DType::kF32);
  Tensor delta = Tensor::empty({m, c.hidden_size}, DType::kF32);
  for (int64_t i = 0; i < int64_t(layers_.size()); ++i) {  // i: the layer's index in this stage
    const LlamaLayer& w = layers_[size_t(i)];
    ops::rms_norm(x, w.input_norm, c.rms_norm_eps, normed);
    attention_block(w, i, normed, positions, cache, keep_kv, sp_prefill ? n : 0, delta);
    ops::add_inplace(x, delta);
    ops::rms_norm(x, w.post_norm, c.rms_norm_eps, normed);
    mlp_block(w, normed, delta);
    ops::add_inplace(x, delta);
  }
  cache.advance(n, kept);
  if (!stage_.last()) {
    stage_.send(x);
    return Tensor();
  }
  if (n_logits == 0) return Tensor();

  if (sp_prefill) {  // the SP rank with the prompt's last token computes, the others receive
    const int owner = int(sp_chunk(n, 0).size() == 0 ? 0 : (n - 1) / sp_chunk(n, 0).size());
    Tensor logits = Tensor::empty({1, shard_.vocab.size()}, DType::kF32);
    if (shard_.sp_rank == owner) {
      Tensor last_normed = Tensor::empty({1, c.hidden_size}, DType::kF32);
      ops::rms_norm(x.rows(m - 1, m), norm_, c.rms_norm_eps, last_normed);
      lm_head_.forward(last_normed, logits);
    }
    sp_->broadcast(logits, owner);
    return logits;
  }
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
  // A sequence-parallel prompt is split over the SP group instead of into microbatches.
  if (microbatch <= 0 || microbatch >= n || shard_.sp_size > 1)
    return forward(tokens, cache, n_logits);
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
