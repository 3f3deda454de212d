#include "runtime/llama_model.h"

#include <cmath>
#include <string>

#include "kernels/ops.h"
#include "runtime/weight_source.h"

namespace tessera {

LlamaModel LlamaModel::load(const ModelReader& reader, Communicator* tp, Communicator* pp,
                            Communicator* sp, const LoadOptions& options) {
  return build(FileWeights(reader), tp, pp, sp, options);
}

LlamaModel LlamaModel::random(const ModelConfig& config, uint64_t seed, Communicator* tp,
                              Communicator* pp, Communicator* sp, const LoadOptions& options) {
  return build(RandomWeights(config, seed, options.random_matrices), tp, pp, sp, options);
}

LlamaModel LlamaModel::build(const WeightSource& src, Communicator* tp, Communicator* pp,
                             Communicator* sp, const LoadOptions& options) {
  const ModelConfig& c = src.config();
  LlamaModel m;
  m.config_ = c;
  m.tp_ = tp;
  m.sp_ = sp;
  m.sp_attention_ = SequenceParallelAttention(sp);
  m.device_ = options.device;
  m.act_ = options.dtype;
  TESSERA_CHECK(m.act_ == DType::kF32 || m.act_ == DType::kBF16,
                "weights and activations are f32 or bf16, not " << dtype_name(m.act_));
  TESSERA_CHECK(m.act_ == DType::kF32 || !m.device_.is_cpu(),
                "bf16 weights and activations need a GPU (the CPU computes in f32)");
  m.stage_ = PipelineStage(pp, c.num_layers, options.stage_weights, options.wire);
  m.wire_ = options.wire;
  ModelShard& s = m.shard_;
  s.layers = m.stage_.layers();
  s.tp_rank = tp->rank();
  s.tp_size = tp->size();
  s.sp_rank = sp ? sp->rank() : 0;
  s.sp_size = sp ? sp->size() : 1;
  s.heads = head_shard(c.num_heads, c.num_kv_heads, s.tp_size, s.tp_rank);
  s.ffn = even_shard(c.intermediate_size, s.tp_size, s.tp_rank);
  s.vocab = even_shard(c.vocab_size, s.tp_size, s.tp_rank);

  // Only this rank's slice of each tensor on its device: matrices as stored where the device
  // computes on that (quantized blocks on the CPU), else and for vectors in the model's dtype.
  const auto matrix_dtype = [&](const std::string& name) {
    return ops::resident_weight_dtype(m.device_, src.stored(name), m.act_);
  };
  const auto whole = [&](const std::string& name) {
    return src.read(name, Range{0, c.hidden_size}, Range{}, m.act_, m.device_);
  };
  const auto bias_rows = [&](const std::string& name, Range rg) {
    return src.read(name, rg, Range{}, m.act_, m.device_);
  };
  const auto rows = [&](const std::string& name, Range rg) {
    return src.read(name, rg, Range{}, matrix_dtype(name), m.device_);
  };
  const auto cols = [&](const std::string& name, Range rg, int64_t out_features) {
    return src.read(name, Range{0, out_features}, rg, matrix_dtype(name), m.device_);
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
  // A linear whose weight's columns are stored in another order than its input features (GPTQ
  // act-order) reads its input in that order (parallel/parallel_layers.h).
  const auto column = [&](const std::string& linear, Range rg, Tensor bias) {
    const std::string order = linear + ".input_order";
    return ColumnParallelLinear(
        rows(linear + ".weight", rg), std::move(bias),
        src.has(order) ? read_input_order(src, order, c.hidden_size, m.device_) : Tensor());
  };
  const auto row = [&](const std::string& linear, Range features, int64_t in_features) {
    const std::string order = linear + ".input_order";
    if (!src.has(order))
      return RowParallelLinear(cols(linear + ".weight", features, c.hidden_size), tp, options.wire);
    ReorderedShard shard = read_reordered_columns(src, linear + ".weight", order, c.hidden_size,
                                                  in_features, features, m.act_, m.device_);
    return RowParallelLinear(std::move(shard.weight), tp, options.wire,
                             std::move(shard.input_order));
  };
  for (int64_t i = s.layers.first; i < s.layers.last; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    auto bias = [&](const char* n, Range rg) {
      return c.attention_bias ? bias_rows(p + n, rg) : Tensor();
    };
    LlamaLayer l;
    l.input_norm = whole(p + "input_layernorm.weight");
    l.q = column(p + "self_attn.q_proj", q_rows, bias("self_attn.q_proj.bias", q_rows));
    l.k = column(p + "self_attn.k_proj", kv_rows, bias("self_attn.k_proj.bias", kv_rows));
    l.v = column(p + "self_attn.v_proj", kv_rows, bias("self_attn.v_proj.bias", kv_rows));
    l.o = row(p + "self_attn.o_proj", q_rows, c.q_size());
    l.post_norm = whole(p + "post_attention_layernorm.weight");
    l.gate = column(p + "mlp.gate_proj", s.ffn, Tensor());
    l.up = column(p + "mlp.up_proj", s.ffn, Tensor());
    l.down = row(p + "mlp.down_proj", s.ffn, c.intermediate_size);
    m.layers_.push_back(std::move(l));
    const auto kv_scale = [&](const std::string& name) {
      return src.has(name) ? src.read_whole_f32(name).data<float>()[0] : 1.0f;
    };
    m.kv_scales_.push_back({kv_scale(p + "self_attn.k_scale"), kv_scale(p + "self_attn.v_scale")});
  }
  std::vector<float> inv_freq = ops::rope_inv_freq(int(hd), c.rope_theta, c.rope_scaling);
  if (src.has("rope_freqs.weight")) {  // GGUF-style explicit per-frequency divisors
    const Tensor f = src.read_whole_f32("rope_freqs.weight");
    for (int64_t i = 0; i < hd / 2; ++i) inv_freq[size_t(i)] /= f.data<float>()[i];
  }
  m.rope_inv_freq_ = Tensor::from_f32(inv_freq, {hd / 2}).to(m.device_);
  return m;
}

int64_t LlamaModel::weight_bytes() const {
  const auto bytes = [](const Tensor& t) { return t.defined() ? int64_t(t.nbytes()) : 0; };
  int64_t n = bytes(embed_.table()) + bytes(norm_);
  if (!(config_.tie_word_embeddings && stage_.first())) n += bytes(lm_head_.weight());
  for (const LlamaLayer& l : layers_) {
    n += bytes(l.input_norm) + bytes(l.post_norm);
    for (const ColumnParallelLinear* c : {&l.q, &l.k, &l.v, &l.gate, &l.up})
      n += bytes(c->weight()) + bytes(c->bias());
    n += bytes(l.o.weight()) + bytes(l.down.weight());
  }
  return n;
}

int64_t LlamaModel::decode_weight_bytes() const {
  const Tensor& table = embed_.table();
  const bool gathered_only = table.defined() && !(config_.tie_word_embeddings && stage_.last());
  return weight_bytes() - (gathered_only ? int64_t(table.nbytes()) : 0);
}

ops::RowTiling LlamaModel::row_tiling() const {
  if (layers_.empty()) return {};
  ops::RowTiling t = ops::linear_row_tiling(layers_[0].gate.weight().dtype(), device_);
  // The rows every linear of the stage takes alike: the least limit over their weights' types
  // (a head or a layer kept in another type than the FFN's may have a lower one; 0: none).
  const auto limit = [&](const Tensor& w) {
    if (!w.defined()) return;
    const int64_t most = ops::linear_row_tiling(w.dtype(), device_).max_rows;
    if (most > 0) t.max_rows = t.max_rows > 0 ? std::min(t.max_rows, most) : most;
  };
  for (const LlamaLayer& l : layers_) {
    for (const ColumnParallelLinear* c : {&l.q, &l.k, &l.v, &l.gate, &l.up}) limit(c->weight());
    limit(l.o.weight());
    limit(l.down.weight());
  }
  if (stage_.last()) limit(lm_head_.weight());
  return t;
}

KvPoolShape LlamaModel::kv_shape(int64_t block_size, DType dtype) const {
  return {
      shard_.layers.size(), shard_.heads.kv.size(), config_.head_dim, block_size, dtype, device_};
}

void LlamaModel::embed(const std::vector<int32_t>& tokens, Tensor& x) const {
  embed_.forward(tokens, x);
}

struct LlamaModel::Buffers {
  Tensor normed, delta;       // (n, hidden), the model's dtype
  Tensor q;                   // (n, heads, head_dim), the model's dtype
  Tensor k, v;                // (n, kv_heads, head_dim), the model's dtype
  Tensor k32, v32;            // (n, kv_heads, head_dim) f32: what the cache takes (= k, v in f32)
  Tensor attn;                // (n, heads, head_dim), the model's dtype
  ops::AttentionState state;  // (n, heads, head_dim), (n, heads) f32
  Tensor gate, up;            // (n, ffn / tp), the model's dtype
};

void LlamaModel::attention(const LlamaLayer& w, int64_t layer, const Tensor& x,
                           const StepInputs& in, KvPool& pool, Buffers& b, Tensor& out) const {
  const int64_t n = x.dim(0), hd = config_.head_dim, heads = shard_.heads.q.size();
  const float scale = 1.0f / std::sqrt(float(hd));
  column_parallel_forward(x, {{&w.q, &b.q}, {&w.k, &b.k}, {&w.v, &b.v}});  // the whole batch
  ops::rope_inplace(b.q, in.device.positions, rope_inv_freq_);
  ops::rope_inplace(b.k, in.device.positions, rope_inv_freq_);
  if (act_ != DType::kF32) {  // the cache and ring attention take float32 keys and values
    ops::convert(b.k, b.k32);
    ops::convert(b.v, b.v32);
  }
  // Every use of this step's K/V (ring attention too) sees the values the cache keeps.
  const ops::KvScale kv_scale = pool.scale(layer);
  ops::round_through(b.k32, pool.shape().dtype, kv_scale.key);
  ops::round_through(b.v32, pool.shape().dtype, kv_scale.value);
  ops::store_kv(pool.keys(layer), pool.values(layer), b.k32, b.v32, in.device.slots, kv_scale);
  if (in.sp_prompt()) {  // a prompt split over the SP group: ring attention
    sp_attention_.prompt(b.q, b.k32, b.v32, in.sequences[0].tokens, scale, b.attn);
  } else if (sp_attention_.active()) {  // decode: each SP rank's keys, merged
    PackedAttentionState mine = PackedAttentionState::empty(n, heads, hd, device_);
    ops::paged_attention_accumulate(b.q, pool.keys(layer), pool.values(layer), in.device.attention,
                                    scale, mine.state, kv_scale);
    sp_attention_.merge_decode(mine, b.attn);
  } else {
    b.state.reset();
    ops::paged_attention_accumulate(b.q, pool.keys(layer), pool.values(layer), in.device.attention,
                                    scale, b.state, kv_scale);
    ops::attention_finish(b.state, b.attn);
  }
  w.o.forward(b.attn.view({n, heads * hd}), out);
}

void LlamaModel::mlp(const LlamaLayer& w, const Tensor& x, Buffers& b, Tensor& out) const {
  column_parallel_forward(x, {{&w.gate, &b.gate}, {&w.up, &b.up}});
  ops::swiglu(b.gate, b.up, b.gate);
  w.down.forward(b.gate, out);
}

void LlamaModel::forward(Tensor& x, const StepInputs& in, KvPool& pool) const {
  const ModelConfig& c = config_;
  const int64_t n = x.dim(0), hd = c.head_dim;
  const int64_t heads = shard_.heads.q.size(), kvh = shard_.heads.kv.size();
  TESSERA_ASSERT(
      n == in.rows && x.dim(1) == c.hidden_size,
      "the residual stream " << shape_str(x.shape()) << " for a step of " << in.rows << " rows");
  // The same buffers for every layer (a captured graph holds one layer's worth, not all).
  const auto make = [&](Shape shape, DType t = DType::kF32) {
    return Tensor::empty(std::move(shape), t, device_);
  };
  Buffers b;
  b.normed = make({n, c.hidden_size}, act_);
  b.delta = make({n, c.hidden_size}, act_);
  b.q = make({n, heads, hd}, act_);
  b.k = make({n, kvh, hd}, act_);
  b.v = make({n, kvh, hd}, act_);
  b.k32 = act_ == DType::kF32 ? b.k : make({n, kvh, hd});
  b.v32 = act_ == DType::kF32 ? b.v : make({n, kvh, hd});
  b.attn = make({n, heads, hd}, act_);
  b.state = ops::AttentionState::empty(n, heads, hd, device_);
  b.gate = make({n, shard_.ffn.size()}, act_);
  b.up = make({n, shard_.ffn.size()}, act_);
  // x += attn(norm(x)); x += mlp(norm(x)), each residual add fused with the norm after it.
  const int64_t n_layers = int64_t(layers_.size());
  if (n_layers > 0) ops::rms_norm(x, layers_[0].input_norm, c.rms_norm_eps, b.normed);
  for (int64_t i = 0; i < n_layers; ++i) {  // i: the layer's index in this stage (and pool)
    const LlamaLayer& w = layers_[size_t(i)];
    attention(w, i, b.normed, in, pool, b, b.delta);
    ops::add_rms_norm(x, b.delta, w.post_norm, c.rms_norm_eps, b.normed);
    mlp(w, b.normed, b, b.delta);
    if (i + 1 < n_layers)
      ops::add_rms_norm(x, b.delta, layers_[size_t(i + 1)].input_norm, c.rms_norm_eps, b.normed);
    else
      ops::add_inplace(x, b.delta);
  }
}

Tensor LlamaModel::head(const Tensor& h) const {
  Tensor normed = Tensor::empty(h.shape(), act_, device_);
  ops::rms_norm(h, norm_, config_.rms_norm_eps, normed);
  Tensor logits = Tensor::empty({h.dim(0), shard_.vocab.size()}, act_, device_);
  lm_head_.forward(normed, logits);
  return logits;
}

}  // namespace tessera
