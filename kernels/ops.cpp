// Dispatch of kernels/ops.h on the device of the tensors: host memory to ops::cpu
// (kernels/cpu/ops_cpu.h), GPUs to tessera::cuda (kernels/cuda/cuda_ops.h).
#include "kernels/ops.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/dtype.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace tessera::ops {
namespace {

bool on_gpu(const Tensor& t) {
  if (t.defined() && t.device().type == DeviceType::kCUDA) {
#if TESSERA_HAVE_CUDA
    return true;
#else
    TESSERA_ASSERT(false, "a tensor on " << t.device().str() << " in a build without CUDA");
#endif
  }
  return false;
}

}  // namespace

#if TESSERA_HAVE_CUDA
#define TESSERA_DISPATCH(first, call) \
  do {                                \
    if (on_gpu(first))                \
      cuda::call;                     \
    else                              \
      cpu::call;                      \
  } while (0)
#else
#define TESSERA_DISPATCH(first, call) \
  do {                                \
    on_gpu(first);                    \
    cpu::call;                        \
  } while (0)
#endif

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  TESSERA_DISPATCH(x, linear(x, w, bias, y));
}
void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  TESSERA_DISPATCH(x, rms_norm(x, weight, eps, y));
}
void add_inplace(Tensor& a, const Tensor& b) {
  TESSERA_DISPATCH(a, add_inplace(a, b));
}
void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y) {
  if (on_gpu(x)) {
#if TESSERA_HAVE_CUDA
    cuda::add_rms_norm(x, delta, weight, eps, y);
#endif
    return;
  }
  cpu::add_inplace(x, delta);
  cpu::rms_norm(x, weight, eps, y);
}
void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  TESSERA_DISPATCH(table, embedding(table, ids, out));
}
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  TESSERA_DISPATCH(gate, swiglu(gate, up, out));
}
void rope_inplace(Tensor& x, const std::vector<int32_t>& positions,
                  const std::vector<float>& inv_freq) {
  TESSERA_DISPATCH(x, rope_inplace(x, positions, inv_freq));
}
void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  if (on_gpu(x)) {
#if TESSERA_HAVE_CUDA
    cuda::rope_inplace(x, positions, inv_freq);
#endif
    return;
  }
  TESSERA_ASSERT(positions.device().is_cpu() && inv_freq.device().is_cpu(),
                 "rope of a host tensor with positions or frequencies off the host");
  const int32_t* p = positions.data<int32_t>();
  const float* f = inv_freq.data<float>();
  cpu::rope_inplace(x, std::vector<int32_t>(p, p + positions.numel()),
                    std::vector<float>(f, f + inv_freq.numel()));
}
void causal_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                      const std::vector<int32_t>& q_positions, float scale, Tensor& out) {
  TESSERA_ASSERT(!on_gpu(q),
                 "causal_attention is the CPU's reference op (use the attention state)");
  cpu::causal_attention(q, k, v, q_positions, scale, out);
}
void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, AttentionState& state) {
  TESSERA_DISPATCH(q, attention_accumulate(q, k, v, visible_offset, scale, state));
}
void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const std::vector<PagedSequence>& seqs, float scale,
                                AttentionState& state) {
  TESSERA_DISPATCH(q, paged_attention_accumulate(q, k_pool, v_pool, seqs, scale, state));
}
PagedAttentionWork prepare_paged_attention(const std::vector<PagedSequence>& seqs, int64_t m,
                                           int64_t n_heads, const Tensor& k_pool,
                                           int64_t keys_capacity, DType q_dtype) {
  PagedAttentionWork w;
  w.device = k_pool.device();
  w.m = m, w.n_heads = n_heads, w.keys_capacity = keys_capacity;
  w.sequences = seqs;
#if TESSERA_HAVE_CUDA
  if (on_gpu(k_pool))
    w.gpu = cuda::prepare_paged_attention(seqs, m, n_heads, k_pool, keys_capacity, q_dtype);
#else
  (void)q_dtype;
#endif
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
#if TESSERA_HAVE_CUDA
  if (work.gpu) cuda::refill_paged_attention(work.gpu, seqs);
#endif
}
void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const PagedAttentionWork& work, float scale,
                                AttentionState& state) {
  TESSERA_ASSERT(work.device == k_pool.device() && work.m == q.dim(0) && work.n_heads == q.dim(1),
                 "paged attention work prepared for other queries or pools");
  if (on_gpu(q)) {
#if TESSERA_HAVE_CUDA
    cuda::paged_attention_accumulate(q, k_pool, v_pool, work.gpu, scale, state);
#endif
    return;
  }
  cpu::paged_attention_accumulate(q, k_pool, v_pool, work.sequences, scale, state);
}
void attention_merge(AttentionState& state, const AttentionState& other) {
  TESSERA_DISPATCH(state.acc, attention_merge(state, other));
}
void attention_finish(const AttentionState& state, Tensor& out) {
  TESSERA_DISPATCH(out, attention_finish(state, out));
}
void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
              const std::vector<int64_t>& slots) {
  TESSERA_DISPATCH(k_pool, store_kv(k_pool, v_pool, k, v, slots));
}
void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
              const Tensor& slots) {
  if (on_gpu(k_pool)) {
#if TESSERA_HAVE_CUDA
    cuda::store_kv(k_pool, v_pool, k, v, slots);
#endif
    return;
  }
  TESSERA_ASSERT(slots.device().is_cpu(), "store_kv into host pools with slots off the host");
  const int64_t* p = slots.data<int64_t>();
  cpu::store_kv(k_pool, v_pool, k, v, std::vector<int64_t>(p, p + slots.numel()));
}
void round_through(Tensor& x, DType type) {
  TESSERA_DISPATCH(x, round_through(x, type));
}

#undef TESSERA_DISPATCH

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
#if TESSERA_HAVE_CUDA
  if (on_gpu(out)) return cuda::fill_uniform(out, full_cols, row0, col0, seed, offset, scale);
#endif
  const int64_t cols = out.ndim() == 1 ? out.dim(0) : out.dim(-1);
  const int64_t rows = out.numel() / std::max<int64_t>(1, cols);
  std::vector<float> v(static_cast<size_t>(out.numel()));
#pragma omp parallel for
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const volatile float x =
          2.0f * uniform_bits(seed, uint64_t((row0 + r) * full_cols + col0 + c)) - 1.0f;
      const volatile float product = scale * x;  // (two roundings, as on the GPU: no FMA)
      v[size_t(r * cols + c)] = offset + product;
    }
  convert_from_f32(out.dtype(), v.data(), out.raw(), v.size());
}

void fill(Tensor& t, float value) {
#if TESSERA_HAVE_CUDA
  // value + 0 * (a uniform number): exactly value, -inf included, in one kernel.
  if (on_gpu(t)) return cuda::fill_uniform(t, t.numel(), 0, 0, 0, value, 0.0f);
#endif
  const std::vector<float> v(static_cast<size_t>(t.numel()), value);
  convert_from_f32(t.dtype(), v.data(), t.raw(), v.size());
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
#if TESSERA_HAVE_CUDA
  if (on_gpu(src)) return cuda::convert(src, dst);
#endif
  std::vector<float> f(static_cast<size_t>(src.numel()));
  convert_to_f32(src.dtype(), src.raw(), f.data(), f.size());
  convert_from_f32(dst.dtype(), f.data(), dst.raw(), f.size());
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
