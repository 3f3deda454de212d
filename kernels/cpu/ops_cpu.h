// The CPU implementations of the ops in kernels/ops.h, with the same signatures and meaning;
// kernels/ops.cpp calls these for tensors in host memory.
#pragma once

#include "kernels/ops.h"

namespace tessera::ops::cpu {

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);
void add_inplace(Tensor& a, const Tensor& b);
void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out);
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);
void rope_inplace(Tensor& x, const std::vector<int32_t>& positions,
                  const std::vector<float>& inv_freq);
void causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                      const std::vector<int32_t>& q_positions, float scale, Tensor& out);
void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, AttentionState& state);
void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const std::vector<PagedSequence>& seqs, float scale,
                                AttentionState& state);
void attention_merge(AttentionState& state, const AttentionState& other);
void attention_finish(const AttentionState& state, Tensor& out);
void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
              const std::vector<int64_t>& slots);
void round_through(Tensor& x, DType type);

}  // namespace tessera::ops::cpu
