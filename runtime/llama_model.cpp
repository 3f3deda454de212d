#include "runtime/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>

#include "io/llama_tensors.h"
#include <chrono>

#include "kernels/backend.h"
#include "kernels/ops.h"
#include "parallel/sp_split.h"
#include "runtime/weight_source.h"

namespace tessera {

LlamaModel LlamaModel::load(const ModelReader& reader, Communicator* tp, Communicator* pp,
                            Communicator* sp, const LoadOptions& options) {
  return build(FileWeights(reader), tp, pp, sp, options);
}

LlamaModel LlamaModel::random(const ModelConfig& config, uint64_t seed, Communicator* tp,
                              Communicator* pp, Communicator* sp, const LoadOptions& options) {
  return build(RandomWeights(config, seed), tp, pp, sp, options);
}

LlamaModel LlamaModel::build(const WeightSource& src, Communicator* tp, Communicator* pp,
                             Communicator* sp, const LoadOptions& options) {
  const ModelConfig& c = src.config();
  LlamaModel m;
  m.config_ = c;
  m.tp_ = tp;
  m.sp_ = sp;
  m.device_ = options.device;
  m.act_ = options.dtype;
  TESSERA_CHECK(m.act_ == DType::kF32 || m.act_ == DType::kBF16,
                "weights and activations are f32 or bf16, not " << dtype_name(m.act_));
  TESSERA_CHECK(m.act_ == DType::kF32 || !m.device_.is_cpu(),
                "bf16 weights and activations need a GPU (the CPU computes in f32)");
  m.stage_ = PipelineStage(pp, c.num_layers, options.stage_weights);
  ModelShard& s = m.shard_;
  s.layers = m.stage_.layers();
  s.tp_rank = tp->rank();
  s.tp_size = tp->size();
  s.sp_rank = sp ? sp->rank() : 0;
  s.sp_size = sp ? sp->size() : 1;
  s.heads = head_shard(c.num_heads, c.num_kv_heads, s.tp_size, s.tp_rank);
  s.ffn = even_shard(c.intermediate_size, s.tp_size, s.tp_rank);
  s.vocab = even_shard(c.vocab_size, s.tp_size, s.tp_rank);

  // Only this rank's slice of each tensor, in the model's dtype on its device.
  const auto whole = [&](const std::string& name) {
    return src.read(name, Range{0, c.hidden_size}, Range{}, m.act_, m.device_);
  };
  const auto rows = [&](const std::string& name, Range rg) {
    return src.read(name, rg, Range{}, m.act_, m.device_);
  };
  const auto cols = [&](const std::string& name, Range rg, int64_t out_features) {
    return src.read(name, Range{0, out_features}, rg, m.act_, m.device_);
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
    l.o = RowParallelLinear(cols(p + "self_attn.o_proj.weight", q_rows, c.hidden_size), tp);
    l.post_norm = whole(p + "post_attention_layernorm.weight");
    l.gate = ColumnParallelLinear(rows(p + "mlp.gate_proj.weight", s.ffn), Tensor());
    l.up = ColumnParallelLinear(rows(p + "mlp.up_proj.weight", s.ffn), Tensor());
    l.down = RowParallelLinear(cols(p + "mlp.down_proj.weight", s.ffn, c.hidden_size), tp);
    m.layers_.push_back(std::move(l));
  }
  m.rope_inv_freq_ = ops::rope_inv_freq(int(hd), c.rope_theta, c.rope_scaling);
  if (src.has("rope_freqs.weight")) {  // GGUF-style explicit per-frequency divisors
    const Tensor f = src.read_whole_f32("rope_freqs.weight");
    for (int64_t i = 0; i < hd / 2; ++i) m.rope_inv_freq_[size_t(i)] /= f.data<float>()[i];
  }
  m.rope_inv_freq_device_ =
      Tensor::from_f32(m.rope_inv_freq_, {int64_t(m.rope_inv_freq_.size())}).to(m.device_);
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

Range LlamaModel::sp_chunk(int64_t n, int sp_rank) const {
  return sp_prompt_chunk(n, shard_.sp_size, sp_rank);
}

int64_t LlamaModel::kv_rows_needed(int64_t prompt, int64_t total) const {
  int64_t most = 0;
  for (int r = 0; r < shard_.sp_size; ++r)
    most = std::max(most, sp_rows_held(prompt, total, shard_.sp_size, r));
  return most;
}

KvPoolShape LlamaModel::kv_shape(int64_t block_size, DType dtype) const {
  return {
      shard_.layers.size(), shard_.heads.kv.size(), config_.head_dim, block_size, dtype, device_};
}

struct LlamaModel::Segment {
  const BatchRows* seq = nullptr;
  int64_t row = 0;         // its first row of this rank's hidden state
  int64_t rows = 0;        // rows this rank computes for it
  int64_t token = 0;       // its first token in the step's token list
  int64_t tokens = 0;      // its tokens in the step (over the whole SP group)
  int64_t position = 0;    // position of this rank's first row
  bool keep = true;        // this rank keeps their K/V
  bool sp_prompt = false;  // a prompt split over the SP group
  int64_t logits = 0;      // logits rows wanted (resolved: 0 .. tokens)
};

std::vector<LlamaModel::Segment> LlamaModel::segments(const std::vector<BatchRows>& batch) const {
  const int sp = shard_.sp_size;
  std::vector<Segment> segs;
  int64_t row = 0, token = 0;
  for (const BatchRows& b : batch) {
    TESSERA_ASSERT(b.pool && b.tokens > 0, "a batch sequence without a KV pool or tokens");
    TESSERA_ASSERT(b.pool == batch[0].pool, "the sequences of a batch use different KV pools");
    Segment s;
    s.seq = &b;
    s.tokens = b.tokens;
    s.token = token;
    s.row = row;
    s.logits = b.logits < 0 || b.logits > b.tokens ? b.tokens : b.logits;
    const int64_t length = b.length;
    s.sp_prompt = sp > 1 && length == 0;
    if (s.sp_prompt) {
      TESSERA_ASSERT(batch.size() == 1 && s.logits <= 1,
                     "a sequence-parallel prompt is a step of its own with one logits row");
      const Range mine = sp_chunk(b.tokens, shard_.sp_rank);
      s.rows = mine.size();
      s.position = mine.begin;
    } else {
      TESSERA_ASSERT(sp == 1 || b.tokens == 1, "sequence-parallel decode is one token a step");
      s.rows = b.tokens;
      s.position = length;
      s.keep = sp == 1 || length % sp == shard_.sp_rank;
    }
    segs.push_back(s);
    row += s.rows;
    token += b.tokens;
  }
  return segs;
}

int64_t LlamaModel::local_rows(const std::vector<BatchRows>& batch) const {
  int64_t n = 0;
  for (const Segment& s : segments(batch)) n += s.rows;
  return n;
}

struct LlamaModel::HostRows {
  std::vector<int32_t> positions;             // (n) each row's position
  std::vector<int64_t> slots;                 // (n) each row's K/V slot in the pool (-1: not kept)
  std::vector<ops::PagedSequence> attention;  // paged attention's sequences (none: SP prompt)
};

struct LlamaModel::StepRows {
  const std::vector<Segment>* segs = nullptr;
  Tensor positions;                   // (n) int32 on the model's device
  Tensor slots;                       // (n) int64 on the model's device
  ops::PagedAttentionWork attention;  // prepared once for every layer (not for an SP prompt)
};

LlamaModel::HostRows LlamaModel::host_rows(const std::vector<Segment>& segs, int64_t n) const {
  HostRows h;
  h.positions.resize(size_t(n));
  h.slots.assign(size_t(n), -1);
  const int64_t bs = segs.front().seq->pool->block_size();
  for (const Segment& s : segs) {
    for (int64_t i = 0; i < s.rows; ++i) {
      h.positions[size_t(s.row + i)] = int32_t(s.position + i);
      // New keys and values go after the rows each sequence holds (with sequence parallelism
      // a decode token's K/V is kept by one SP rank).
      const int64_t row = s.seq->rows + i;
      if (s.keep) h.slots[size_t(s.row + i)] = int64_t(s.seq->blocks[row / bs]) * bs + row % bs;
    }
    if (s.sp_prompt) continue;  // ring attention
    if (shard_.sp_size > 1)     // each SP rank attends over the positions it keeps
      h.attention.push_back({s.row, s.rows, s.seq->blocks, s.seq->rows + (s.keep ? s.rows : 0),
                             ops::kAllKeysVisible});
    else  // key j of a sequence is its position j: row r sees keys up to its own position
      h.attention.push_back({s.row, s.rows, s.seq->blocks, s.seq->rows + s.rows, s.position});
  }
  return h;
}

LlamaModel::StepRows LlamaModel::upload(const HostRows& h, int64_t n,
                                        const std::vector<Segment>& segs,
                                        int64_t keys_capacity) const {
  StepRows r;
  r.segs = &segs;
  r.positions = Tensor::from_i32(h.positions, {n}).to(device_);
  r.slots = Tensor::from_i64(h.slots, {n}).to(device_);
  if (!h.attention.empty())
    r.attention = ops::prepare_paged_attention(h.attention, n, shard_.heads.q.size(),
                                               segs.front().seq->pool->keys(0), keys_capacity,
                                               act_);
  return r;
}

struct LlamaModel::LayerBuffers {
  Tensor q;                   // (n, heads, head_dim), the model's dtype
  Tensor k, v;                // (n, kv_heads, head_dim), the model's dtype
  Tensor k32, v32;            // (n, kv_heads, head_dim) f32: what the cache takes (= k, v in f32)
  Tensor attn;                // (n, heads, head_dim), the model's dtype
  ops::AttentionState state;  // (n, heads, head_dim), (n, heads) f32
  Tensor gate, up;            // (n, ffn / tp), the model's dtype
};

void LlamaModel::attention_block(const LlamaLayer& w, int64_t layer, const Tensor& x,
                                 const StepRows& rows, LayerBuffers& b, Tensor& out) const {
  const int64_t n = x.dim(0), hd = config_.head_dim, heads = shard_.heads.q.size();
  const std::vector<Segment>& segs = *rows.segs;
  w.q.forward(x, b.q);  // the whole batch in one matmul each
  w.k.forward(x, b.k);
  w.v.forward(x, b.v);
  ops::rope_inplace(b.q, rows.positions, rope_inv_freq_device_);
  ops::rope_inplace(b.k, rows.positions, rope_inv_freq_device_);
  KvPool& pool = *segs.front().seq->pool;
  if (act_ != DType::kF32) {  // the cache and ring attention take float32 keys and values
    ops::convert(b.k, b.k32);
    ops::convert(b.v, b.v32);
  }
  // Every use of this step's K/V (ring attention too) sees the values the cache keeps.
  ops::round_through(b.k32, pool.shape().dtype);
  ops::round_through(b.v32, pool.shape().dtype);
  ops::store_kv(pool.keys(layer), pool.values(layer), b.k32, b.v32, rows.slots);
  const float scale = 1.0f / std::sqrt(float(hd));
  if (shard_.sp_size > 1 && segs[0].sp_prompt) {
    ring_attention(b.q, b.k32, b.v32, segs[0].tokens, b.attn);  // a prompt split over SP ranks
  } else if (shard_.sp_size > 1) {
    sp_decode_attention(b.q, layer, rows, b.attn);
  } else {
    b.state.reset();
    ops::paged_attention_accumulate(b.q, pool.keys(layer), pool.values(layer), rows.attention,
                                    scale, b.state);
    ops::attention_finish(b.state, b.attn);
  }
  w.o.forward(b.attn.view({n, heads * hd}), out);
}

void LlamaModel::ring_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_prompt,
                                Tensor& out) const {
  // Each SP rank holds one contiguous chunk of the prompt. Its queries attend causally to its own
  // keys, and fully to the keys of every earlier chunk, which arrive around the ring (KV blocks
  // are passed on S - 1 times); partial results combine by log-sum-exp.
  const int sp = shard_.sp_size, me = shard_.sp_rank;
  const int64_t m = q.dim(0), heads = q.dim(1), hd = q.dim(2), kvh = k.dim(1);
  const float scale = 1.0f / std::sqrt(float(hd));
  ops::AttentionState state = ops::AttentionState::empty(m, heads, hd, device_);
  ops::attention_accumulate(q, k, v, 0, scale, state);
  Tensor block = Tensor::empty({2, m, kvh, hd}, DType::kF32, device_);  // K then V
  Tensor block_k = block.rows(0, 1), block_v = block.rows(1, 2);
  ops::copy(k, block_k);
  ops::copy(v, block_v);
  for (int step = 1; step < sp; ++step) {
    const int origin = (me - step + sp) % sp;  // whose chunk arrives now
    const int64_t rows = sp_chunk(n_prompt, origin).size();
    Tensor incoming = Tensor::empty({2, rows, kvh, hd}, DType::kF32, device_);
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

void LlamaModel::sp_decode_attention(const Tensor& q, int64_t layer, const StepRows& rows,
                                     Tensor& out) const {
  // Every SP rank attends over the positions it keeps (including this step's token where it
  // keeps it); the partial states of the whole batch are gathered in one go and merged in rank
  // order, so every rank ends with the same result.
  const int sp = shard_.sp_size;
  const int64_t m = q.dim(0), heads = q.dim(1), hd = q.dim(2);
  ops::AttentionState mine = ops::AttentionState::empty(m, heads, hd, device_);
  KvPool& pool = *rows.segs->front().seq->pool;
  ops::paged_attention_accumulate(q, pool.keys(layer), pool.values(layer), rows.attention,
                                  1.0f / std::sqrt(float(hd)), mine);
  Tensor accs = Tensor::empty({sp, m, heads, hd}, DType::kF32, device_);
  Tensor mxs = Tensor::empty({sp, m, heads}, DType::kF32, device_);
  Tensor sums = Tensor::empty({sp, m, heads}, DType::kF32, device_);
  sp_->all_gather(mine.acc, accs);
  sp_->all_gather(mine.mx, mxs);
  sp_->all_gather(mine.sum, sums);
  ops::AttentionState merged = ops::AttentionState::empty(m, heads, hd, device_);
  for (int r = 0; r < sp; ++r) {
    ops::AttentionState part{accs.rows(r, r + 1).view({m, heads, hd}),
                             mxs.rows(r, r + 1).view({m, heads}),
                             sums.rows(r, r + 1).view({m, heads})};
    ops::attention_merge(merged, part);
  }
  ops::attention_finish(merged, out);
}

void LlamaModel::mlp_block(const LlamaLayer& w, const Tensor& x, LayerBuffers& b,
                           Tensor& out) const {
  w.gate.forward(x, b.gate);
  w.up.forward(x, b.up);
  ops::swiglu(b.gate, b.up, b.gate);
  w.down.forward(b.gate, out);
}

void LlamaModel::run_layers(Tensor& x, const StepRows& rows) const {
  const ModelConfig& c = config_;
  const int64_t n = x.dim(0);
  Tensor normed = Tensor::empty({n, c.hidden_size}, act_, device_);
  Tensor delta = Tensor::empty({n, c.hidden_size}, act_, device_);
  // The same buffers for every layer (a captured graph holds one layer's worth, not all).
  const int64_t hd = c.head_dim, heads = shard_.heads.q.size(), kvh = shard_.heads.kv.size();
  LayerBuffers buf;
  buf.q = Tensor::empty({n, heads, hd}, act_, device_);
  buf.k = Tensor::empty({n, kvh, hd}, act_, device_);
  buf.v = Tensor::empty({n, kvh, hd}, act_, device_);
  buf.k32 = act_ == DType::kF32 ? buf.k : Tensor::empty({n, kvh, hd}, DType::kF32, device_);
  buf.v32 = act_ == DType::kF32 ? buf.v : Tensor::empty({n, kvh, hd}, DType::kF32, device_);
  buf.attn = Tensor::empty({n, heads, hd}, act_, device_);
  buf.state = ops::AttentionState::empty(n, heads, hd, device_);
  buf.gate = Tensor::empty({n, shard_.ffn.size()}, act_, device_);
  buf.up = Tensor::empty({n, shard_.ffn.size()}, act_, device_);
  // x += attn(norm(x)); x += mlp(norm(x)), each residual add fused with the norm after it.
  const int64_t n_layers = int64_t(layers_.size());
  if (n_layers > 0) ops::rms_norm(x, layers_[0].input_norm, c.rms_norm_eps, normed);
  for (int64_t i = 0; i < n_layers; ++i) {  // i: the layer's index in this stage
    const LlamaLayer& w = layers_[size_t(i)];
    attention_block(w, i, normed, rows, buf, delta);
    ops::add_rms_norm(x, delta, w.post_norm, c.rms_norm_eps, normed);
    mlp_block(w, normed, buf, delta);
    if (i + 1 < n_layers)
      ops::add_rms_norm(x, delta, layers_[size_t(i + 1)].input_norm, c.rms_norm_eps, normed);
    else
      ops::add_inplace(x, delta);
  }
}

Tensor LlamaModel::head(const Tensor& h) const {
  Tensor normed = Tensor::empty(h.shape(), act_, device_);
  ops::rms_norm(h, norm_, config_.rms_norm_eps, normed);
  Tensor logits = Tensor::empty({h.dim(0), shard_.vocab.size()}, act_, device_);
  lm_head_.forward(normed, logits);
  return logits;
}

namespace {

// t as float32 in host memory, or where it is with on_device (itself when it is already).
Tensor as_f32(const Tensor& t, bool on_device = false) {
  const Device d = on_device ? t.device() : Device::cpu();
  if (t.device() == d && t.dtype() == DType::kF32) return t;
  Tensor h = Tensor::empty(t.shape(), DType::kF32, d);
  ops::convert(t, h);
  return h;
}
Tensor on_host(const Tensor& t) {
  return as_f32(t);
}

}  // namespace

Tensor LlamaModel::forward_stage(const std::vector<int32_t>& tokens, std::vector<BatchRows>& batch,
                                 const Tensor& hidden, bool outputs_on_device) const {
  const ModelConfig& c = config_;
  TESSERA_ASSERT(!batch.empty(), "forward called with no sequences");
  const std::vector<Segment> segs = segments(batch);
  int64_t n = 0;  // rows this rank computes
  for (const Segment& s : segs) n += s.rows;
  TESSERA_ASSERT(
      segs.back().token + segs.back().tokens == int64_t(tokens.size()) || !stage_.first(),
      "the batch has " << segs.back().token + segs.back().tokens << " tokens, " << tokens.size()
                       << " given");
  TESSERA_ASSERT(
      stage_.first() || (hidden.defined() && hidden.dim(0) == n && hidden.dim(1) == c.hidden_size),
      "stage input has shape " << shape_str(hidden.shape()) << ", the batch needs (" << n << ", "
                               << c.hidden_size << ")");
  for (size_t i = 0; i < segs.size(); ++i) batch[i].kept = segs[i].keep ? segs[i].rows : 0;
  if (decode_graph_fits(segs)) {
    Tensor out = forward_decode_graph(tokens, segs, hidden, outputs_on_device);
    if (out.defined()) return out;  // (else its graph could not be captured: kernel by kernel)
  }

  Tensor x;  // the residual stream (n, hidden)
  if (stage_.first()) {
    std::vector<int32_t> my_tokens(static_cast<size_t>(n));
    for (const Segment& s : segs)  // a sequence-parallel prompt's rows start at its chunk
      for (int64_t i = 0; i < s.rows; ++i)
        my_tokens[size_t(s.row + i)] = tokens[size_t(s.token + (s.sp_prompt ? s.position : 0) + i)];
    x = Tensor::empty({n, c.hidden_size}, act_, device_);
    embed_.forward(my_tokens, x);
  } else if (hidden.device() == device_ && hidden.dtype() == act_) {
    x = hidden;
  } else {
    x = Tensor::empty(hidden.shape(), act_, device_);
    ops::convert(hidden, x);
  }
  run_layers(x, upload(host_rows(segs, n), n, segs, 0));
  if (!stage_.last()) return outputs_on_device ? x : on_host(x);

  int64_t wanted = 0;
  for (const Segment& s : segs) wanted += s.logits;
  if (wanted == 0) return Tensor::empty({0, shard_.vocab.size()}, DType::kF32);
  if (segs[0].sp_prompt) {  // the SP rank with the prompt's last token computes, the others receive
    const int owner = sp_last_token_owner(segs[0].tokens, shard_.sp_size);
    Tensor logits = Tensor::empty({wanted, shard_.vocab.size()}, DType::kF32);
    if (shard_.sp_rank == owner) ops::convert(head(x.rows(n - 1, n)), logits);
    sp_->broadcast(logits, owner);
    return logits;
  }
  Tensor last = Tensor::empty({wanted, c.hidden_size}, act_, device_);
  int64_t at = 0;
  for (const Segment& s : segs) {
    const int64_t end = s.row + s.rows;
    Tensor to = last.rows(at, at + s.logits);
    ops::copy(x.rows(end - s.logits, end), to);
    at += s.logits;
  }
  return as_f32(head(last), outputs_on_device);
}

// ---- decode steps as CUDA graph replays ----------------------------------------------------

struct LlamaModel::DecodeGraph {
  int64_t rows = 0;  // the bucket: rows of every step it runs
  Tensor x;          // (rows, hidden): the residual stream, the step's input
  Tensor out;        // the last stage's logits (rows, vocab / tp); else x is the output
  const void* pool_keys = nullptr;  // the pool whose blocks the captured kernels read and write
  int64_t pool_blocks = 0;          // (a pool that grew has moved)
  StepRows step;                    // positions, slots and the attention plan, rewritten every step
  std::unique_ptr<DeviceGraph> graph;
  std::vector<std::shared_ptr<Storage>> kept;  // the memory the captured kernels use
};

void LlamaModel::use_decode_graphs(int64_t max_batch, int64_t max_keys) {
  TESSERA_CHECK(max_batch >= 0 && max_keys >= 0, "decode graphs need max_batch and max_keys >= 0");
  graphs_.clear();
  failed_buckets_.clear();
  graph_max_batch_ = max_batch;
  graph_max_keys_ = max_keys;
}

double LlamaModel::time_graph_replays(int64_t bucket, int times) const {
  const auto it = graphs_.find(bucket);
  TESSERA_CHECK(it != graphs_.end() && it->second->graph,
                "no decode graph for " << bucket << " rows");
  synchronize(device_);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < times; ++i) it->second->graph->replay();
  synchronize(device_);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / times;
}

bool LlamaModel::decode_graph_fits(const std::vector<Segment>& segs) const {
  if (graph_max_batch_ == 0 || device_.is_cpu() || shard_.sp_size > 1) return false;
  if (!tp_->graph_capturable() || int64_t(segs.size()) > graph_max_batch_) return false;
  for (const Segment& s : segs)
    if (s.tokens != 1 || s.rows != 1 || s.seq->rows + 1 > graph_max_keys_) return false;
  int64_t bucket = 1;
  while (bucket < int64_t(segs.size())) bucket *= 2;
  return failed_buckets_.count(bucket) == 0;
}

Tensor LlamaModel::forward_decode_graph(const std::vector<int32_t>& tokens,
                                        const std::vector<Segment>& segs, const Tensor& hidden,
                                        bool outputs_on_device) const {
  const ModelConfig& c = config_;
  const int64_t n = int64_t(segs.size());
  int64_t bucket = 1;
  while (bucket < n) bucket *= 2;
  std::shared_ptr<DecodeGraph>& slot = graphs_[bucket];
  KvPool& pool = *segs.front().seq->pool;
  if (slot && (slot->pool_keys != pool.keys(0).raw() || slot->pool_blocks != pool.num_blocks()))
    slot.reset();  // captured for another pool, or before this one grew
  // The step's rows, then idle rows up to the bucket: position 0, nothing stored, no keys.
  static const int32_t idle_table[1] = {0};
  HostRows h = host_rows(segs, n);
  h.positions.resize(size_t(bucket), 0);
  h.slots.resize(size_t(bucket), -1);
  for (int64_t r = n; r < bucket; ++r) h.attention.push_back({r, 1, idle_table, 0, 0});
  if (!slot) {
    auto g = std::make_shared<DecodeGraph>();
    g->rows = bucket;
    g->x = Tensor::empty({bucket, c.hidden_size}, act_, device_);
    g->pool_keys = pool.keys(0).raw();
    g->pool_blocks = pool.num_blocks();
    g->step = upload(h, bucket, segs, graph_max_keys_);
    slot = g;
  } else {
    Tensor positions = Tensor::from_i32(h.positions, {bucket});
    Tensor slots = Tensor::from_i64(h.slots, {bucket});
    ops::copy(positions, slot->step.positions);
    ops::copy(slots, slot->step.slots);
    ops::refill_paged_attention(slot->step.attention, h.attention);
  }
  DecodeGraph& g = *slot;
  g.step.segs = &segs;  // this step's (the capture reads them; a replay reads nothing here)
  // The step's input into the graph's residual buffer (outside the graph: the embedding reads
  // token ids from the host, and a stage's input arrives in host memory).
  Tensor x_rows = g.x.rows(0, n);
  if (stage_.first())
    embed_.forward(tokens, x_rows);
  else
    ops::convert(hidden, x_rows);
  if (!g.graph) {
    KeepAllocations keep;
    try {
      g.graph = capture_graph(device_, [&] {
        run_layers(g.x, g.step);
        if (stage_.last()) g.out = head(g.x);
      });
    } catch (const std::exception&) {
      g.graph.reset();
    }
    if (!g.graph) {
      // A graph is an optimisation: when one cannot be captured (no memory left for its
      // buffers), this bucket's steps run kernel by kernel. (Nothing captured ran, so every rank
      // still issues the same collectives in the same order.)
      slot.reset();
      failed_buckets_.insert(bucket);
      return Tensor();
    }
    g.kept = keep.take();
  }
  tp_->check_healthy();  // a TP collective that failed before is not replayed
  g.graph->replay();
  tp_->watch_queued_work("a decode step's CUDA graph (its TP collectives)");
  ++graph_replays_;
  // The outputs are copied out of the graph's buffers (the next replay overwrites them).
  if (!stage_.last()) return outputs_on_device ? g.x.rows(0, n).clone() : on_host(g.x.rows(0, n));
  int64_t wanted = 0;
  for (const Segment& s : segs) wanted += s.logits;
  // The logits are copied out of the graph's buffer (the next replay overwrites it).
  Tensor logits = Tensor::empty({wanted, shard_.vocab.size()}, DType::kF32,
                                outputs_on_device ? device_ : Device::cpu());
  int64_t at = 0;
  for (const Segment& s : segs)
    if (s.logits > 0) {
      Tensor to = logits.rows(at, at + 1);
      ops::convert(g.out.rows(s.row, s.row + 1), to);
      ++at;
    }
  return logits;
}

Tensor LlamaModel::forward(const std::vector<int32_t>& tokens, SequenceKvCache& cache,
                           int64_t n_logits) const {
  cache.reserve(cache.rows() + int64_t(tokens.size()));
  std::vector<BatchRows> batch = {{&cache.pool(), cache.blocks().data(), cache.length(),
                                   cache.rows(), int64_t(tokens.size()), n_logits}};
  Tensor hidden;
  if (!stage_.first()) {
    hidden = Tensor::empty({local_rows(batch), config_.hidden_size}, DType::kF32);
    stage_.receive(hidden);
  }
  Tensor out = forward_stage(tokens, batch, hidden);
  cache.advance(int64_t(tokens.size()), batch[0].kept);
  if (!stage_.last()) {
    stage_.send(out);
    return Tensor();
  }
  return out;
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
