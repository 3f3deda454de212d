#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/cuda_memory.h"
#include "kernels/cuda/launchers.h"

namespace tessera::cuda {
namespace {

Elem elem_of(DType t, const char* what) {
  switch (t) {
    case DType::kF32:
      return Elem::kF32;
    case DType::kF16:
      return Elem::kF16;
    case DType::kBF16:
      return Elem::kBF16;
    default:
      break;
  }
  TESSERA_ASSERT(false, what << " is " << dtype_name(t) << ", not f32, f16 or bf16");
  return Elem::kF32;
}
Elem elem_of(const Tensor& t, const char* what) { return elem_of(t.dtype(), what); }

void check_gpu(const Tensor& t, const char* what) {
  TESSERA_ASSERT(t.defined(), what << " is undefined");
  TESSERA_ASSERT(t.device().type == DeviceType::kCUDA,
                 what << " is on " << t.device().str() << ", not a GPU");
}

void check_f32(const Tensor& t, const char* what) {
  check_gpu(t, what);
  TESSERA_ASSERT(t.dtype() == DType::kF32, what << " is " << dtype_name(t.dtype()) << ", not f32");
}

// The element type every one of the tensors has (they must agree, and share a GPU).
Elem common_elem(std::initializer_list<std::pair<const Tensor*, const char*>> tensors) {
  const auto& [first, first_name] = *tensors.begin();
  for (const auto& [t, name] : tensors) {
    check_gpu(*t, name);
    TESSERA_ASSERT(t->dtype() == first->dtype(), name << " is " << dtype_name(t->dtype()) << " but "
                                                      << first_name << " is "
                                                      << dtype_name(first->dtype()));
    TESSERA_ASSERT(t->device() == first->device(), name << " is on " << t->device().str() << ", "
                                                        << first_name << " on "
                                                        << first->device().str());
  }
  return elem_of(*first, first_name);
}

// The launchers for the memory t lives in: the emulator's for an emulated GPU.
const Launchers& kernels_for(const Tensor& t) {
  return is_emulated(t.device().index) ? emulator_launchers() : gpu_launchers();
}

// The compute stream of the GPU t is on.
void* stream_of(const Tensor& t) { return compute_stream(t.device().index); }

void check_launch(const std::string& error, const char* what) {
  TESSERA_CHECK_IO(error.empty(), what << " on the GPU failed: " << error);
}

Tensor upload_i32(const std::vector<int32_t>& v, Device d) {
  return Tensor::from_i32(v, {int64_t(v.size())}).to(d);
}

}  // namespace

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const Elem t = common_elem({{&x, "linear input"}, {&w, "linear weight"}, {&y, "linear output"}});
  const int64_t k = x.dim(-1), m = x.numel() / k, n = w.dim(0);
  TESSERA_ASSERT(w.ndim() == 2 && w.dim(1) == k && y.numel() == m * n,
                 "linear: x " << shape_str(x.shape()) << " w " << shape_str(w.shape()) << " y "
                              << shape_str(y.shape()));
  if (bias) {
    common_elem({{&x, "linear input"}, {bias, "linear bias"}});
    TESSERA_ASSERT(bias->numel() == n, "linear bias has " << bias->numel() << " values for " << n);
  }
  check_launch(kernels_for(x).linear(t, x.raw(), w.raw(), bias ? bias->raw() : nullptr, m, n, k,
                                     y.raw(), stream_of(x)),
               "linear");
}

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  const Elem t =
      common_elem({{&x, "rms_norm input"}, {&weight, "rms_norm weight"}, {&y, "rms_norm output"}});
  const int64_t d = x.dim(-1), m = x.numel() / d;
  TESSERA_ASSERT(weight.numel() == d && y.numel() == x.numel(), "rms_norm shapes");
  check_launch(kernels_for(x).rms_norm(t, x.raw(), weight.raw(), eps, m, d, y.raw(), stream_of(x)),
               "rms_norm");
}

void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y) {
  const Elem t = common_elem({{&x, "residual"},
                              {&delta, "residual delta"},
                              {&weight, "rms_norm weight"},
                              {&y, "rms_norm output"}});
  const int64_t d = x.dim(-1), m = x.numel() / d;
  TESSERA_ASSERT(delta.numel() == x.numel() && weight.numel() == d && y.numel() == x.numel(),
                 "add_rms_norm shapes");
  check_launch(kernels_for(x).add_rms_norm(t, x.raw(), delta.raw(), weight.raw(), eps, m, d,
                                           y.raw(), stream_of(x)),
               "add_rms_norm");
}

void add_inplace(Tensor& a, const Tensor& b) {
  const Elem t = common_elem({{&a, "sum"}, {&b, "addend"}});
  TESSERA_ASSERT(a.numel() == b.numel(),
                 "add_inplace shapes " << shape_str(a.shape()) << " and " << shape_str(b.shape()));
  check_launch(kernels_for(a).add(t, a.raw(), b.raw(), a.numel(), stream_of(a)), "add");
}

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  const Elem t = common_elem({{&gate, "swiglu gate"}, {&up, "swiglu up"}, {&out, "swiglu output"}});
  TESSERA_ASSERT(gate.numel() == up.numel() && out.numel() == up.numel(), "swiglu shapes");
  check_launch(kernels_for(gate).swiglu(t, gate.raw(), up.raw(), gate.numel(), out.raw(), stream_of(gate)),
               "swiglu");
}

void rope_inplace(Tensor& x, const std::vector<int32_t>& positions,
                  const std::vector<float>& inv_freq) {
  const Elem t = common_elem({{&x, "rope input"}});
  TESSERA_ASSERT(x.ndim() == 3,
                 "rope expects (tokens, heads, head_dim), got " << shape_str(x.shape()));
  TESSERA_ASSERT(int64_t(positions.size()) == x.dim(0) && int64_t(inv_freq.size()) == x.dim(2) / 2,
                 "rope: positions/frequencies do not match " << shape_str(x.shape()));
  const Tensor pos = upload_i32(positions, x.device());
  const Tensor inv = Tensor::from_f32(inv_freq, {int64_t(inv_freq.size())}).to(x.device());
  check_launch(kernels_for(x).rope(t, x.raw(), pos.data<int32_t>(), inv.data<float>(), x.dim(0),
                                   x.dim(1), x.dim(2), stream_of(x)),
               "rope");
}

void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  const Elem t = common_elem({{&table, "embedding table"}, {&out, "embedding output"}});
  const int64_t vocab = table.dim(0), d = table.dim(1), n = int64_t(ids.size());
  TESSERA_ASSERT(out.numel() == n * d, "embedding output shape");
  for (const int32_t id : ids)  // the ids are on the host: check them here, not in the kernel
    TESSERA_CHECK(id >= 0 && id < vocab,
                  "token id " << id << " is outside the vocabulary (size " << vocab << ")");
  const Tensor gids = upload_i32(ids, table.device());
  check_launch(kernels_for(table).embedding(t, table.raw(), vocab, gids.data<int32_t>(), n, d,
                                            out.raw(), nullptr, stream_of(table)),
               "embedding");
}

void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const std::vector<ops::PagedSequence>& seqs, float scale,
                                ops::AttentionState& state) {
  check_gpu(q, "attention q");
  const Elem kv = common_elem({{&k_pool, "key pool"}, {&v_pool, "value pool"}});
  for (const Tensor* s : {&state.acc, &state.mx, &state.sum}) check_f32(*s, "attention state");
  const int64_t m = q.dim(0), hq = q.dim(1), d = q.dim(2);
  const int64_t num_blocks = k_pool.dim(0), hkv = k_pool.dim(1), bs = k_pool.dim(2);
  TESSERA_ASSERT(
      k_pool.ndim() == 4 && k_pool.dim(3) == d && v_pool.shape() == k_pool.shape() &&
          hq % hkv == 0 && state.acc.shape() == q.shape() && state.mx.numel() == m * hq,
      "paged attention: q " << shape_str(q.shape()) << " pool " << shape_str(k_pool.shape()));
  std::vector<PagedAttentionSequence> host;
  for (const ops::PagedSequence& s : seqs) {
    PagedAttentionSequence h;
    h.row = s.row, h.rows = s.rows, h.keys = s.keys, h.visible_offset = s.visible_offset;
    h.blocks.assign(s.blocks, s.blocks + (s.keys + bs - 1) / bs);
    for (const int32_t b : h.blocks)
      TESSERA_ASSERT(b >= 0 && b < num_blocks,
                     "paged attention: block " << b << " of a pool of " << num_blocks);
    host.push_back(std::move(h));
  }
  const PagedAttentionPlan plan = plan_paged_attention(host, m, hq, hkv, d, 264, 256);
  if (plan.n_tiles == 0) return;
  const Device dev = q.device();
  const Tensor tiles = upload_i32(plan.tiles, dev), sequences = upload_i32(plan.sequences, dev);
  const Tensor tables =
      upload_i32(plan.block_tables.empty() ? std::vector<int32_t>{0} : plan.block_tables, dev);
  Tensor scratch = Tensor::empty({std::max<int64_t>(1, plan.scratch_floats)}, DType::kF32, dev);
  PagedAttentionArgs a;
  a.q_type = elem_of(q, "attention q");
  a.kv_type = kv;
  a.q = q.raw(), a.k_pool = k_pool.raw(), a.v_pool = v_pool.raw();
  a.m = m, a.n_heads = hq, a.n_kv_heads = hkv, a.head_dim = d, a.block_size = bs, a.scale = scale;
  a.tiles = tiles.data<int32_t>(), a.sequences = sequences.data<int32_t>();
  a.block_tables = tables.data<int32_t>();
  a.n_tiles = plan.n_tiles, a.splits = plan.splits, a.keys_per_split = plan.keys_per_split;
  a.scratch = scratch.data<float>();
  a.acc = state.acc.data<float>(), a.mx = state.mx.data<float>(), a.sum = state.sum.data<float>();
  a.stream = stream_of(q);
  check_launch(kernels_for(q).paged_attention(a), "paged attention");
}

void attention_accumulate(const Tensor& q, const Tensor& k, const Tensor& v, int64_t visible_offset,
                          float scale, ops::AttentionState& state) {
  // Contiguous keys (t, n_kv_heads, d) are a pool of t blocks of one key each, in order.
  const int64_t t = k.dim(0);
  if (t == 0) return;
  const Tensor k_pool = k.view({t, k.dim(1), 1, k.dim(2)});
  const Tensor v_pool = v.view({t, v.dim(1), 1, v.dim(2)});
  std::vector<int32_t> order(static_cast<size_t>(t));
  for (int64_t j = 0; j < t; ++j) order[size_t(j)] = int32_t(j);
  const std::vector<ops::PagedSequence> one = {{0, q.dim(0), order.data(), t, visible_offset}};
  cuda::paged_attention_accumulate(q, k_pool, v_pool, one, scale, state);
}

void attention_merge(ops::AttentionState& state, const ops::AttentionState& other) {
  for (const Tensor* s : std::initializer_list<const Tensor*>{&state.acc, &state.mx, &state.sum,
                                                              &other.acc, &other.mx, &other.sum})
    check_f32(*s, "attention state");
  const int64_t n = state.mx.numel(), d = state.acc.dim(-1);
  TESSERA_ASSERT(other.mx.numel() == n && other.acc.shape() == state.acc.shape(),
                 "attention_merge shapes");
  check_launch(
      kernels_for(state.acc).attention_merge(
          state.acc.data<float>(), state.mx.data<float>(), state.sum.data<float>(),
          other.acc.data<float>(), other.mx.data<float>(), other.sum.data<float>(), n, d, stream_of(state.acc)),
      "attention merge");
}

void attention_finish(const ops::AttentionState& state, Tensor& out) {
  check_f32(state.acc, "attention state");
  check_f32(state.sum, "attention state");
  check_gpu(out, "attention output");
  const int64_t n = state.mx.numel(), d = state.acc.dim(-1);
  TESSERA_ASSERT(out.numel() == n * d, "attention_finish shapes");
  check_launch(
      kernels_for(out).attention_finish(elem_of(out, "attention output"), state.acc.data<float>(),
                                        state.sum.data<float>(), n, d, out.raw(), stream_of(out)),
      "attention finish");
}

void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v,
              const std::vector<int64_t>& slots) {
  const Elem t = common_elem({{&k_pool, "key pool"}, {&v_pool, "value pool"}});
  check_f32(k, "keys to store");
  check_f32(v, "values to store");
  const int64_t rows = int64_t(slots.size()), heads = k_pool.dim(1), bs = k_pool.dim(2),
                d = k_pool.dim(3);
  TESSERA_ASSERT(k.numel() == rows * heads * d && v.numel() == k.numel(),
                 "store_kv: " << rows << " slots for keys " << shape_str(k.shape()));
  const Tensor gslots = Tensor::from_i64(slots, {rows}).to(k.device());
  check_launch(
      kernels_for(k).store_kv(t, k_pool.raw(), v_pool.raw(), k.data<float>(), v.data<float>(),
                              gslots.data<int64_t>(), rows, heads, bs, d, stream_of(k)),
      "store_kv");
}

void round_through(Tensor& x, DType type) {
  check_f32(x, "values to round");
  if (type == DType::kF32) return;
  check_launch(kernels_for(x).round_through(elem_of(type, "cache type"), x.data<float>(),
                                            x.numel(), stream_of(x)),
               "round_through");
}

void convert(const Tensor& src, Tensor& dst) {
  check_gpu(src, "conversion input");
  check_gpu(dst, "conversion output");
  TESSERA_ASSERT(src.numel() == dst.numel() && src.device() == dst.device(),
                 "convert " << shape_str(src.shape()) << " on " << src.device().str() << " to "
                            << shape_str(dst.shape()) << " on " << dst.device().str());
  check_launch(kernels_for(src).convert(elem_of(src, "conversion input"), src.raw(),
                                        elem_of(dst, "conversion output"), dst.raw(), src.numel(),
                                        stream_of(src)),
               "convert");
}

void fill_uniform(Tensor& out, int64_t full_cols, int64_t row0, int64_t col0, uint64_t seed,
                  float offset, float scale) {
  check_gpu(out, "random tensor");
  const int64_t cols = out.ndim() == 1 ? out.dim(0) : out.dim(-1), rows = out.numel() / std::max<int64_t>(1, cols);
  check_launch(kernels_for(out).fill_uniform(elem_of(out, "random tensor"), out.raw(), rows, cols,
                                             full_cols, row0, col0, seed, offset, scale,
                                             stream_of(out)),
               "fill_uniform");
}

void synchronize() {
  if (device_count() == 0) return;  // only emulated GPUs, which run each launch to its end
  const cudaError_t err = cudaDeviceSynchronize();
  TESSERA_CHECK_IO(err == cudaSuccess, "a kernel on the GPU failed: " << cudaGetErrorString(err));
}

}  // namespace tessera::cuda
