// The ops of kernels/ops.h on GPU tensors (f32, or f16/bf16 activations where noted, float32
// arithmetic), with the same signatures and meaning: the CUDA backend (cuda_backend.cpp) calls
// these for tensors on Device::cuda(i). Each is tested against the CPU op on random data (tests/unit/test_cuda_*.cpp).
// Kernels and copies are queued on the GPU's compute stream (cuda::compute_stream, one per GPU a
// rank uses), in order; copies to the host wait for it. synchronize() waits and reports what a
// kernel raised.
// On a GPU that is emulated (cuda::emulate_gpu) the same kernel sources run on the CUDA emulator.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "kernels/cuda/quant_linear_launchers.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace tessera::cuda {

// w of x's type, or blocks of a quantized format with kernels here (gpu_quant_format): up to
// kQuantLinearMaxRows rows of x read them decoded in registers, more decode them into x's type
// for the dense GEMM.
void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);
// x += delta, then y = rms_norm(x, weight): the residual add fused with the next norm.
void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y);
void add_inplace(Tensor& a, const Tensor& b);
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);
void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq);
// out (ids, dim) = table rows; throws naming the problem when an id is outside the table.
void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out);
// The format of the GPU's quantized kernels for weights of type t (kernels/cuda/
// quant_linear_launchers.h: every quantized type), or none for a plain one.
std::optional<QFormat> gpu_quant_format(DType t);
void gather_columns(const Tensor& x, const Tensor& order, Tensor& y);
void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, ops::AttentionState& state);
// ops::PagedAttentionWork's GPU plan: made, rewritten in place, and run.
// Prefill chunks of bf16 queries (head_dim a multiple of 16) take tensor cores, unless the plan's
// shape is fixed (keys_capacity > 0: a decode graph's).
std::shared_ptr<void> prepare_paged_attention(const std::vector<ops::PagedSequence>& seqs,
                                              int64_t m, int64_t n_heads, const Tensor& k_pool,
                                              int64_t keys_capacity, DType q_dtype);
void refill_paged_attention(const std::shared_ptr<void>& work,
                            const std::vector<ops::PagedSequence>& seqs);
void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const std::shared_ptr<void>& work, float scale,
                                ops::KvScale kv_scale, ops::AttentionState& state);
void attention_merge(ops::AttentionState& state, const ops::AttentionState& other);
void attention_finish(const ops::AttentionState& state, Tensor& out);
void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v, const Tensor& slots,
              ops::KvScale kv_scale);
void round_through(Tensor& x, DType type, float scale);
// dst = src in dst's type (f32, f16, bf16), the same number of elements, on one GPU.
void convert(const Tensor& src, Tensor& dst);
void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                  float offset, float scale);
// Sampling's GPU half (kernels/cuda/sampling_launchers.h) on tensors. logits (rows, vocab) f32:
// for row r, ids[offsets[r] .. offsets[r + 1]) (int32 on the GPU, distinct within a row) are
// penalised in place (l > 0 ? l / penalty : l * penalty).
void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets, float penalty);
// values (rows, k) f32 and ids (rows, k) int32 = each row's k best logits, best first (lower id
// on ties, NaN as -inf): what Sampler::shard_candidates ranks. 1 <= k <= kMaxTopK (1024).
void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids);
void synchronize();

}  // namespace tessera::cuda
