// kernels/ops.h: each op goes to the backend of its tensors' device (kernels/backend.h).
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/backend.h"

namespace tessera::ops {
namespace {

Backend& on(const Tensor& t) { return backend_for(t.device().type); }

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  on(x).linear(x, w, bias, y);
}
void linear_group(const Tensor& x, const std::vector<LinearPart>& parts) {
  on(x).linear_group(x, parts);
}
RowTiling linear_row_tiling(DType weight, Device d) {
  return backend_for(d.type).linear_row_tiling(weight);
}
DType resident_weight_dtype(Device d, DType stored, DType act) {
  return backend_for(d.type).computes_on(stored, act) ? stored : act;
}
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  on(x).rms_norm(x, weight, eps, y);
}
void add_inplace(Tensor& a, const Tensor& b) { on(a).add_inplace(a, b); }
void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y) {
  on(x).add_rms_norm(x, delta, weight, eps, y);
}
void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  on(table).embedding(table, ids, out);
}
void gather_columns(const Tensor& x, const Tensor& order, Tensor& y) {
  TESSERA_ASSERT(order.device() == x.device() && y.device() == x.device(),
                 "gather_columns of a tensor on " << x.device().str() << " with its order on "
                                                  << order.device().str() << " into "
                                                  << y.device().str());
  TESSERA_ASSERT(x.ndim() == 2 && order.dtype() == DType::kI32 && order.ndim() == 1 &&
                     y.ndim() == 2 && y.dim(0) == x.dim(0) && y.dim(1) == order.dim(0) &&
                     y.dtype() == x.dtype(),
                 "gather_columns: x " << shape_str(x.shape()) << " order "
                                      << shape_str(order.shape()) << " y " << shape_str(y.shape()));
  on(x).gather_columns(x, order, y);
}
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) { on(gate).swiglu(gate, up, out); }
void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  TESSERA_ASSERT(positions.device() == x.device() && inv_freq.device() == x.device(),
                 "rope of a tensor on " << x.device().str() << " with positions on "
                                        << positions.device().str() << " and frequencies on "
                                        << inv_freq.device().str());
  on(x).rope_inplace(x, positions, inv_freq);
}
void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, AttentionState& state) {
  on(q).attention_accumulate(q, k, v, visible_offset, scale, state);
}
PagedAttentionWork prepare_paged_attention(const std::vector<PagedSequence>& seqs, int64_t m,
                                           int64_t n_heads, const Tensor& k_pool,
                                           int64_t keys_capacity, DType q_dtype) {
  PagedAttentionWork w;
  w.device = k_pool.device();
  w.m = m, w.n_heads = n_heads, w.keys_capacity = keys_capacity;
  w.sequences = seqs;
  w.device_plan = on(k_pool).prepare_paged_attention(seqs, m, n_heads, k_pool, keys_capacity,
                                                     q_dtype);
  return w;
}
void refill_paged_attention(PagedAttentionWork& work, const std::vector<PagedSequence>& seqs) {
  TESSERA_ASSERT(work.keys_capacity > 0, "refill of paged attention work prepared for one step");
  TESSERA_ASSERT(seqs.size() == work.sequences.size(), "refill of paged attention work for "
                                                           << work.sequences.size()
                                                           << " sequences with " << seqs.size());
  for (size_t i = 0; i < seqs.size(); ++i)
    TESSERA_ASSERT(seqs[i].row == work.sequences[i].row && seqs[i].rows == work.sequences[i].rows &&
                       seqs[i].keys <= work.keys_capacity,
                   "refill of paged attention work: sequence " << i << " has other rows or more "
                                                               << "keys than its capacity");
  work.sequences = seqs;
  backend_for(work.device.type).refill_paged_attention(work);
}
namespace {
// Only an e4m3 cache has scales (f32, f16 and bf16 pools keep keys and values as they are).
void check_kv_scale(DType pool, KvScale s) {
  TESSERA_ASSERT(
      pool == DType::kE4M3 || (s.key == 1.0f && s.value == 1.0f),
      "a " << dtype_name(pool) << " KV cache takes no scales, got " << s.key << " / " << s.value);
}
}  // namespace

void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const PagedAttentionWork& work, float scale, AttentionState& state,
                                KvScale kv_scale) {
  TESSERA_ASSERT(work.device == k_pool.device() && work.m == q.dim(0) && work.n_heads == q.dim(1),
                 "paged attention work prepared for other queries or pools");
  check_kv_scale(k_pool.dtype(), kv_scale);
  on(q).paged_attention_accumulate(q, k_pool, v_pool, work, scale, kv_scale, state);
}
void attention_merge(AttentionState& state, const AttentionState& other) {
  on(state.acc).attention_merge(state, other);
}
void attention_finish(const AttentionState& state, Tensor& out) {
  on(out).attention_finish(state, out);
}
void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v, const Tensor& slots,
              KvScale kv_scale) {
  TESSERA_ASSERT(slots.device() == k_pool.device(),
                 "store_kv into pools on " << k_pool.device().str() << " with slots on "
                                           << slots.device().str());
  check_kv_scale(k_pool.dtype(), kv_scale);
  on(k_pool).store_kv(k_pool, v_pool, k, v, slots, kv_scale);
}
void round_through(Tensor& x, DType type, float scale) {
  check_kv_scale(type, {scale, scale});
  on(x).round_through(x, type, scale);
}
void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets, float penalty) {
  on(logits).repetition_penalty(logits, ids, offsets, penalty);
}
void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids) {
  on(logits).top_k(logits, k, values, ids);
}

void copy(const Tensor& src, Tensor& dst) {
  TESSERA_ASSERT(src.dtype() == dst.dtype() && src.numel() == dst.numel(),
                 "copy of " << dtype_name(src.dtype()) << " " << shape_str(src.shape()) << " to "
                            << dtype_name(dst.dtype()) << " " << shape_str(dst.shape()));
  if (src.nbytes() == 0) return;
  const Device via = src.device().is_cpu() ? dst.device() : src.device();
  allocator_for(via.type).copy(dst.raw(), dst.device(), src.raw(), src.device(), src.nbytes());
}

float uniform_bits(uint64_t seed, uint64_t e) {
  uint64_t z = seed + (e + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(z >> 40) * (1.0f / 16777216.0f);
}

void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                  float offset, float scale) {
  on(out).fill_uniform(out, full_cols, row0, col0, seed, offset, scale);
}

void fill(Tensor& t, float value) {
  // value + 0 * (a uniform number): exactly value, -inf included, in one pass on any device.
  fill_uniform(t, t.numel(), 0, 0, 0, value, 0.0f);
}

void convert(const Tensor& src, Tensor& dst) {
  TESSERA_ASSERT(src.numel() == dst.numel(),
                 "convert of " << shape_str(src.shape()) << " to " << shape_str(dst.shape()));
  if (src.dtype() == dst.dtype()) return copy(src, dst);
  if (src.device() != dst.device()) {  // convert where src is, then copy
    Tensor there = Tensor::empty(dst.shape(), dst.dtype(), src.device());
    convert(src, there);
    return copy(there, dst);
  }
  on(src).convert(src, dst);
}

AttentionState AttentionState::empty(int64_t m, int64_t n_heads, int64_t d, Device device) {
  AttentionState st{Tensor::empty({m, n_heads, d}, DType::kF32, device),
                    Tensor::empty({m, n_heads}, DType::kF32, device),
                    Tensor::empty({m, n_heads}, DType::kF32, device)};
  st.reset();
  return st;
}

void AttentionState::reset() {
  fill(acc, 0.0f);
  fill(mx, -INFINITY);
  fill(sum, 0.0f);
}

std::vector<float> rope_inv_freq(int rot_dim, float theta, const RopeScaling& s) {
  TESSERA_CHECK(rot_dim > 0 && rot_dim % 2 == 0, "rope dimension " << rot_dim << " must be even");
  const int half = rot_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  // float32 throughout, as the reference (Hugging Face) computes it.
  for (int i = 0; i < half; ++i)
    inv[size_t(i)] = 1.0f / std::pow(theta, float(2 * i) / float(rot_dim));
  if (s.type == RopeScaling::Type::kLinear) {
    for (float& f : inv) f /= s.factor;
  } else if (s.type == RopeScaling::Type::kLlama3) {
    const float old_len = float(s.original_max_position);
    const float low_wavelen = old_len / s.low_freq_factor;
    const float high_wavelen = old_len / s.high_freq_factor;
    for (float& f : inv) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / f;
      if (wavelen > low_wavelen) {
        f = f / s.factor;
      } else if (wavelen >= high_wavelen) {  // medium band: interpolate
        const float smooth =
            (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = (1.0f - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

}  // namespace tessera::ops
