// The math ops the forward pass is made of. Each op goes to the backend of its tensors' device
// (kernels/backend.h): host tensors to the CPU's (kernels/cpu/: AVX2 via the compiler, OpenMP
// threads, OpenBLAS for GEMM; float32 activations), GPU tensors to the CUDA backend's
// (kernels/cuda/: f32, or bf16 activations with float32 accumulation). The tensors of one call
// are on one device.
#pragma once

#include <climits>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/tensor.h"

namespace tessera::ops {

// y(m, n) = x(m, k) @ w(n, k)^T (+ bias(n) when given). w is the (out_features, in_features)
// matrix as stored in the model file, of a type the device computes on (resident_weight_dtype):
// on the CPU also f16, bf16 and the quantized formats (kernels/quant.h), read as they are.
void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);

// Several linears of one input (the q, k and v projections; gate and up): y = x @ w^T (+ bias)
// for each part, as one op, so that a device can spread all their rows over its threads at once
// (the CPU: one parallel region, and x's activation blocks made once).
struct LinearPart {
  const Tensor* w;
  const Tensor* bias;  // or null
  Tensor* y;
};
void linear_group(const Tensor& x, const std::vector<LinearPart>& parts);

// How a device's linear takes the rows of x (a step's tokens) for weights of type `weight`, for
// the scheduler to size steps of speculative decoding: in steps of up to max_rows rows, a row's
// result is the same bits whatever else the step holds (the batch-invariant kernels; 0: no such
// limit is known), and rows go `tile` at a time, a last group of at most tile / 2 rows one row
// at a time, each at about the cost of a pass over the weights. tile 1: rows cost alike.
struct RowTiling {
  int64_t tile = 1;
  int64_t max_rows = 0;
};
RowTiling linear_row_tiling(DType weight, Device d);

// The type a weight stored as `stored` is kept in on device d whose activations are `act`: as
// stored where d's backend computes on it (the CPU: f32, f16, bf16, every quantized format), else
// act (converted or dequantized once, at load: a GPU keeps its weights in its activations' type).
DType resident_weight_dtype(Device d, DType stored, DType act);

// y(m, d) = x / sqrt(mean(x^2) + eps) * weight(d), row by row. y may alias x.
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);

// a += b, same shape.
void add_inplace(Tensor& a, const Tensor& b);

// x += delta, then y = rms_norm(x, weight, eps): the residual add and the next norm in one pass
// on a GPU (the same arithmetic as the two ops: the norm reads x as stored).
void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y);

// out(n, d) = table(vocab, d)[ids[i]] (f32; a table of another type the device computes on is
// decoded row by row); an id outside the table throws.
void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out);

// y(m, n) = the columns `order` of x(m, k): y[r][j] = x[r][order[j]], or 0 where order[j] is -1
// (order: n i32 on x's device, each -1 or in [0, k)). The input features of a weight stored in
// another order than its checkpoint's (GPTQ act-order: io/quantized_checkpoint.h).
void gather_columns(const Tensor& x, const Tensor& order, Tensor& y);

// out(m, f) = silu(gate(m, f)) * up(m, f). out may alias gate.
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);

// Rotary position embedding frequencies (the "rotate half" convention used by Hugging Face
// Llama: dimension i pairs with i + rot_dim / 2).
struct RopeScaling {
  enum class Type { kNone, kLinear, kLlama3 } type = Type::kNone;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;     // llama3
  float high_freq_factor = 4.0f;    // llama3
  int original_max_position = 8192; // llama3
};
std::vector<float> rope_inv_freq(int rot_dim, float theta, const RopeScaling& scaling);

// x(m, heads, head_dim) rotated in place; row r is at position positions[r]. positions (m) int32
// and inv_freq (head_dim / 2) f32 are tensors on x's device: a step uploads its positions once
// for every layer, and a CUDA graph's kernels read them there.
void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq);

// Attention in pieces (online softmax), for keys that arrive in blocks (ring attention) or live on
// several ranks (sequence-parallel decode). For query row r and head h:
//   mx = max score seen, sum = sum_j exp(score_j - mx), acc = sum_j exp(score_j - mx) v_j.
struct AttentionState {
  Tensor acc;  // (m, n_heads, d)
  Tensor mx;   // (m, n_heads)
  Tensor sum;  // (m, n_heads)
  // Nothing seen yet (mx -inf, sum and acc 0), on `device`.
  static AttentionState empty(int64_t m, int64_t n_heads, int64_t d, Device device = Device::cpu());
  void reset();  // back to nothing seen
};
inline constexpr int64_t kAllKeysVisible = INT64_MAX / 4;
// Adds keys k, v (t, n_kv_heads, d) to the state of q (m, n_heads, d); query head h reads KV head
// h / (n_heads / n_kv_heads) (grouped-query attention). Query row r sees key j when
// j <= r + visible_offset: 0 for a block of keys aligned with the queries (causal), or
// kAllKeysVisible for keys that all come before the queries.
void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, AttentionState& state);
// Paged attention: the keys and values of many sequences live in fixed-size blocks of one pool,
// k_pool and v_pool (num_blocks, n_kv_heads, block_size, d): within a block each KV head's rows
// are contiguous, so one head's keys are read in block-sized runs. A sequence's key j sits in
// block blocks[j / block_size] at slot j % block_size.
struct PagedSequence {
  int64_t row = 0, rows = 0;         // its query rows [row, row + rows) of q
  const int32_t* blocks = nullptr;   // its block table
  int64_t keys = 0;                  // keys it has (all in the table's blocks)
  int64_t visible_offset = 0;        // query row r (from `row`) sees key j when j <= r + offset
};
// paged_attention_accumulate's work for one step, prepared once and used by every layer (the
// sequences and block tables are the same in each): on the CPU the sequences themselves (their
// block tables must outlive it); on a GPU also the kernel's plan, in GPU memory. Prepared with
// keys_capacity > 0, the plan's shape (its split of the key lists, the block tables' room) is
// fixed for up to that many keys per sequence, so refill() can rewrite it in place for another
// step of as many sequences and rows: a CUDA graph replays kernels that read it there.
struct PagedAttentionWork {
  Device device;
  int64_t m = 0, n_heads = 0, keys_capacity = 0;
  std::vector<PagedSequence> sequences;  // what it was prepared for
  std::shared_ptr<void> device_plan;     // the backend's (kernels/backend.h); null on the CPU
};
// For q (m, n_heads, d) of q_dtype over pools like k_pool.
PagedAttentionWork prepare_paged_attention(const std::vector<PagedSequence>& seqs, int64_t m,
                                           int64_t n_heads, const Tensor& k_pool,
                                           int64_t keys_capacity = 0,
                                           DType q_dtype = DType::kF32);
// Rewrites a fixed-shape work (keys_capacity > 0) for seqs: as many sequences, each with as many
// rows as before, and no more keys than the capacity.
void refill_paged_attention(PagedAttentionWork& work, const std::vector<PagedSequence>& seqs);
// A KV cache's scales: the key a pool of e4m3 keeps is e4m3(k / key) and it reads it as
// code * key (likewise the values); f32, f16 and bf16 pools take 1 (vLLM's k_scale and v_scale).
struct KvScale {
  float key = 1.0f, value = 1.0f;
};
// Adds every sequence's keys to the state of its query rows; the same arithmetic, in the same
// order, as attention_accumulate over the sequence's keys laid out contiguously. The pools are
// f32, f16 or e4m3 (a cache of lower precision: each element widened to f32 as it is read, an
// e4m3 key's scale folded into the score's and a value's into its weight), or bf16 on a GPU.
void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const PagedAttentionWork& work, float scale, AttentionState& state,
                                KvScale kv_scale = {});
// state = the union of state and other (log-sum-exp rescaling).
void attention_merge(AttentionState& state, const AttentionState& other);
// out(m, n_heads, d) = acc / sum.
void attention_finish(const AttentionState& state, Tensor& out);

// Writes row i of k and v (rows, n_kv_heads, d), f32, into the pools (num_blocks, n_kv_heads,
// block_size, d) at key slot slots[i] = block * block_size + slot, in the pools' type (e4m3:
// divided by kv_scale's first); a slot of -1 is skipped. slots (rows) int64 on the pools' device.
void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v, const Tensor& slots,
              KvScale kv_scale = {});
// x (f32) = x rounded to `type` and widened again: what a cache of that type keeps (e4m3:
// e4m3(x / scale) * scale).
void round_through(Tensor& x, DType type, float scale = 1.0f);
// dst = src (the same dtype and element count; any devices).
void copy(const Tensor& src, Tensor& dst);
// 24 uniform random bits of element e (splitmix64 of seed and e), as a float in [0, 1).
float uniform_bits(uint64_t seed, uint64_t e);
// out (rows, cols) = the block at (row0, col0) of a tensor with full_cols columns whose element
// e = r * full_cols + c is offset + scale * (2 * uniform_bits(seed, e) - 1), rounded to out's
// dtype: the same numbers on every device and for every slicing, so a random model's TP shards
// are slices of the one-rank model's tensors. A 1-d out is one row.
void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                  float offset, float scale);
// Every element of t (f32, f16 or bf16) = value, on any device.
void fill(Tensor& t, float value);
// Sampling's half on the logits' device. logits (rows, vocab) f32: for row r, ids[offsets[r] ..
// offsets[r + 1]) (int32; distinct within a row) are penalised in place (l > 0 ? l / penalty :
// l * penalty); ids and offsets (rows + 1) are on the logits' device.
void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets, float penalty);
// values (rows, k) f32 and ids (rows, k) int32 = each row's k best logits, best first, the lower
// id first on ties, NaN ranked as -inf (the order Sampler ranks candidates in);
// 1 <= k <= min(kMaxTopK, vocab).
inline constexpr int kMaxTopK = 1024;
void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids);
// dst = src converted to dst's dtype (f32, f16, bf16; the same element count); src and dst may
// be on different devices (the conversion happens where src is, then a copy).
void convert(const Tensor& src, Tensor& dst);

}  // namespace tessera::ops
