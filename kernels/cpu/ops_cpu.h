// The CPU implementations of the ops in kernels/ops.h, with the same signatures and meaning: the
// CPU backend (kernels/cpu/cpu_backend.cpp) calls these for tensors in host memory. Also the
// CPU's reference attention of one sequence (causal_attention), which tests compare against.
#pragma once

#include "kernels/ops.h"

namespace tessera::ops::cpu {

// Linear weights and embedding tables the CPU computes on as they are: f32, f16, bf16 and the
// quantized formats (kernels/cpu/quant_linear.h).
bool computes_on(DType weight);
void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
void linear_group(const Tensor& x, const std::vector<LinearPart>& parts);
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);
void add_inplace(Tensor& a, const Tensor& b);
void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out);
void gather_columns(const Tensor& x, const Tensor& order, Tensor& y);
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);
void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq);
// Causal attention of one sequence over its keys, the plain way (scores, softmax, sum): q(m,
// n_heads, d), k and v (t, n_kv_heads, d), key j at position j; query row r at q_positions[r]
// sees keys 0 .. q_positions[r]; query head h reads KV head h / (n_heads / n_kv_heads).
void causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                      const std::vector<int32_t>& q_positions, float scale, Tensor& out);
void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, AttentionState& state);
void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const std::vector<PagedSequence>& seqs, float scale,
                                KvScale kv_scale, AttentionState& state);
void attention_merge(AttentionState& state, const AttentionState& other);
void attention_finish(const AttentionState& state, Tensor& out);
void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v, const Tensor& slots,
              KvScale kv_scale);
void round_through(Tensor& x, DType type, float scale);
void convert(const Tensor& src, Tensor& dst);
void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                  float offset, float scale);
void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets, float penalty);
void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids);

}  // namespace tessera::ops::cpu
