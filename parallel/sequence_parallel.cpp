#include "parallel/sequence_parallel.h"

#include "parallel/sp_split.h"

namespace tessera {

PackedAttentionState PackedAttentionState::empty(int64_t m, int64_t n_heads, int64_t d,
                                                 Device device) {
  const int64_t rows = m * n_heads;
  PackedAttentionState p;
  p.packed = Tensor::empty({rows * (d + 2)}, DType::kF32, device);
  p.state = {p.packed.rows(0, rows * d).view({m, n_heads, d}),
             p.packed.rows(rows * d, rows * (d + 1)).view({m, n_heads}),
             p.packed.rows(rows * (d + 1), rows * (d + 2)).view({m, n_heads})};
  p.state.reset();
  return p;
}

void SequenceParallelAttention::prompt(const Tensor& q, const Tensor& k, const Tensor& v,
                                       int64_t n_prompt, float scale, Tensor& out) const {
  const int sp = sp_->size(), me = sp_->rank();
  const int64_t m = q.dim(0), heads = q.dim(1), hd = q.dim(2), kvh = k.dim(1);
  const Device device = q.device();
  ops::AttentionState state = ops::AttentionState::empty(m, heads, hd, device);
  ops::attention_accumulate(q, k, v, 0, scale, state);
  Tensor block = Tensor::empty({2, m, kvh, hd}, DType::kF32, device);  // K then V
  Tensor block_k = block.rows(0, 1), block_v = block.rows(1, 2);
  ops::copy(k, block_k);
  ops::copy(v, block_v);
  for (int step = 1; step < sp; ++step) {
    const int origin = (me - step + sp) % sp;  // whose chunk arrives now
    const int64_t rows = sp_prompt_chunk(n_prompt, sp, origin).size();
    Tensor incoming = Tensor::empty({2, rows, kvh, hd}, DType::kF32, device);
    sp_->send_recv(block, (me + 1) % sp, incoming, (me - 1 + sp) % sp, kRingTag);
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

void SequenceParallelAttention::merge_decode(const PackedAttentionState& mine, Tensor& out) const {
  const int sp = sp_->size();
  const int64_t m = mine.state.acc.dim(0), heads = mine.state.acc.dim(1), d = mine.state.acc.dim(2),
                per_rank = mine.packed.numel();
  Tensor all = Tensor::empty({sp * per_rank}, DType::kF32, mine.packed.device());
  sp_->all_gather(mine.packed, all);
  ops::AttentionState merged = ops::AttentionState::empty(m, heads, d, all.device());
  const int64_t rows = m * heads;
  for (int r = 0; r < sp; ++r) {
    const Tensor part = all.rows(r * per_rank, (r + 1) * per_rank);
    const ops::AttentionState theirs{part.rows(0, rows * d).view({m, heads, d}),
                                     part.rows(rows * d, rows * (d + 1)).view({m, heads}),
                                     part.rows(rows * (d + 1), rows * (d + 2)).view({m, heads})};
    ops::attention_merge(merged, theirs);
  }
  ops::attention_finish(merged, out);
}

}  // namespace tessera
