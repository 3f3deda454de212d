#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/cuda_memory.h"
#include "kernels/cuda/launchers.h"
#include "kernels/cuda/sampling_launchers.h"

static_assert(tessera::cuda::kMaxTopK == tessera::ops::kMaxTopK, "one top-k limit");

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
    case DType::kE4M3:
      return Elem::kE4M3;
    default:
      break;
  }
  TESSERA_ASSERT(false, what << " is " << dtype_name(t) << ", not f32, f16, bf16 or e4m3");
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

std::optional<QFormat> gpu_quant_format(DType t) {
  switch (t) {
    case DType::kQ8_0: return QFormat::kQ8_0;
    case DType::kQ4_0: return QFormat::kQ4_0;
    case DType::kQ4_1: return QFormat::kQ4_1;
    case DType::kQ5_0: return QFormat::kQ5_0;
    case DType::kQ5_1: return QFormat::kQ5_1;
    case DType::kQ4_K: return QFormat::kQ4_K;
    case DType::kQ5_K: return QFormat::kQ5_K;
    case DType::kQ6_K: return QFormat::kQ6_K;
    case DType::kI4G32: return QFormat::kI4G32;
    case DType::kI4G128: return QFormat::kI4G128;
    case DType::kF8E4M3: return QFormat::kF8E4M3;
    default: return std::nullopt;
  }
}

void linear(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  const std::optional<QFormat> quantized = gpu_quant_format(w.dtype());
  const Elem t = quantized ? common_elem({{&x, "linear input"}, {&y, "linear output"}})
                           : common_elem({{&x, "linear input"}, {&w, "linear weight"},
                                          {&y, "linear output"}});
  const int64_t k = x.dim(-1), m = x.numel() / k, n = w.dim(0);
  TESSERA_ASSERT(w.ndim() == 2 && w.dim(1) == k && y.numel() == m * n,
                 "linear: x " << shape_str(x.shape()) << " w " << shape_str(w.shape()) << " y "
                              << shape_str(y.shape()));
  if (bias) {
    common_elem({{&x, "linear input"}, {bias, "linear bias"}});
    TESSERA_ASSERT(bias->numel() == n, "linear bias has " << bias->numel() << " values for " << n);
  }
  if (quantized) {
    check_gpu(w, "linear weight");
    TESSERA_ASSERT(w.device() == x.device(), "linear weight on " << w.device().str());
    // decode batches (every bucket a decode graph captures: no allocation here): the weight read
    // once per 8 rows, decoded in registers
    if (m <= kQuantLinearMaxRows) {
      check_launch(kernels_for(x).quant_linear(t, *quantized, x.raw(), w.raw(),
                                               bias ? bias->raw() : nullptr, m, n, k, y.raw(),
                                               stream_of(x)),
                   "quant_linear");
      return;
    }
    // more rows (prompts, never captured): the weight decoded into the activations' type, then
    // the dense GEMM
    Tensor dense = Tensor::empty({n, k}, x.dtype(), x.device());
    check_launch(kernels_for(x).dequantize_rows(t, *quantized, w.raw(), k, nullptr, n,
                                                dense.raw(), stream_of(x)),
                 "dequantize_rows");
    check_launch(kernels_for(x).linear(t, x.raw(), dense.raw(), bias ? bias->raw() : nullptr, m,
                                       n, k, y.raw(), stream_of(x)),
                 "linear");
    return;
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

void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  const Elem t = common_elem({{&x, "rope input"}});
  TESSERA_ASSERT(x.ndim() == 3,
                 "rope expects (tokens, heads, head_dim), got " << shape_str(x.shape()));
  check_gpu(positions, "rope positions");
  check_f32(inv_freq, "rope frequencies");
  TESSERA_ASSERT(positions.dtype() == DType::kI32 && positions.numel() == x.dim(0) &&
                     inv_freq.numel() == x.dim(2) / 2,
                 "rope: positions/frequencies do not match " << shape_str(x.shape()));
  check_launch(kernels_for(x).rope(t, x.raw(), positions.data<int32_t>(), inv_freq.data<float>(),
                                   x.dim(0), x.dim(1), x.dim(2), stream_of(x)),
               "rope");
}

void gather_columns(const Tensor& x, const Tensor& order, Tensor& y) {
  const Elem t = common_elem({{&x, "gather_columns input"}, {&y, "gather_columns output"}});
  check_launch(kernels_for(x).gather_columns(t, x.raw(), x.dim(0), x.dim(1), order.data<int32_t>(),
                                             order.dim(0), y.raw(), stream_of(x)),
               "gather_columns");
}

void embedding(const Tensor& table, const std::vector<int32_t>& ids, Tensor& out) {
  const std::optional<QFormat> quantized = gpu_quant_format(table.dtype());
  const Elem t = quantized ? common_elem({{&out, "embedding output"}})
                           : common_elem({{&table, "embedding table"}, {&out, "embedding output"}});
  const int64_t vocab = table.dim(0), d = table.dim(1), n = int64_t(ids.size());
  TESSERA_ASSERT(out.numel() == n * d, "embedding output shape");
  for (const int32_t id : ids)  // the ids are on the host: check them here, not in the kernel
    TESSERA_CHECK(id >= 0 && id < vocab,
                  "token id " << id << " is outside the vocabulary (size " << vocab << ")");
  const Tensor gids = upload_i32(ids, table.device());
  if (quantized) {
    check_gpu(table, "embedding table");
    check_launch(kernels_for(table).dequantize_rows(t, *quantized, table.raw(), d,
                                                    gids.data<int32_t>(), n, out.raw(),
                                                    stream_of(table)),
                 "embedding");
    return;
  }
  check_launch(kernels_for(table).embedding(t, table.raw(), vocab, gids.data<int32_t>(), n, d,
                                            out.raw(), nullptr, stream_of(table)),
               "embedding");
}

namespace {

// A step's paged attention plan in GPU memory (ops::PagedAttentionWork::gpu).
struct PreparedPagedAttention {
  PagedAttentionPlan plan;  // its sizes (and the host arrays it was made from)
  int64_t m = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, block_size = 0, num_blocks = 0;
  int64_t keys_capacity = 0;
  bool tensor_cores = false;  // bf16 queries and head_dim a multiple of 16, shape not fixed
  Tensor tiles, sequences, tables, scratch;  // on the GPU
};

PagedAttentionPlan host_plan(const PreparedPagedAttention& p,
                             const std::vector<ops::PagedSequence>& seqs) {
  const int64_t bs = p.block_size;
  std::vector<PagedAttentionSequence> host;
  for (const ops::PagedSequence& s : seqs) {
    PagedAttentionSequence h;
    h.row = s.row, h.rows = s.rows, h.keys = s.keys, h.visible_offset = s.visible_offset;
    h.blocks.assign(s.blocks, s.blocks + (s.keys + bs - 1) / bs);
    for (const int32_t b : h.blocks)
      TESSERA_ASSERT(b >= 0 && b < p.num_blocks,
                     "paged attention: block " << b << " of a pool of " << p.num_blocks);
    // A fixed-shape plan gives every table room for the capacity (block 0 where unused).
    if (p.keys_capacity > 0) h.blocks.resize(size_t((p.keys_capacity + bs - 1) / bs), 0);
    host.push_back(std::move(h));
  }
  bool prefill = false;  // tensor cores pay where tiles hold several rows
  for (const ops::PagedSequence& s : seqs) prefill |= s.rows > 1;
  return plan_paged_attention(host, p.m, p.n_heads, p.n_kv_heads, p.head_dim, 264, 256,
                              p.keys_capacity,
                              p.tensor_cores && prefill ? kTcQueryVectors : kMaxQueryVectors);
}

std::vector<int32_t> or_one(const std::vector<int32_t>& v) {
  return v.empty() ? std::vector<int32_t>{0} : v;
}

}  // namespace

std::shared_ptr<void> prepare_paged_attention(const std::vector<ops::PagedSequence>& seqs,
                                              int64_t m, int64_t n_heads, const Tensor& k_pool,
                                              int64_t keys_capacity, DType q_dtype) {
  common_elem({{&k_pool, "key pool"}});
  TESSERA_ASSERT(k_pool.ndim() == 4, "paged attention: pool " << shape_str(k_pool.shape()));
  auto p = std::make_shared<PreparedPagedAttention>();
  p->m = m, p->n_heads = n_heads, p->n_kv_heads = k_pool.dim(1), p->head_dim = k_pool.dim(3);
  p->block_size = k_pool.dim(2), p->num_blocks = k_pool.dim(0), p->keys_capacity = keys_capacity;
  p->tensor_cores = keys_capacity == 0 && q_dtype == DType::kBF16 &&
                    tensor_core_attention(Elem::kBF16, p->head_dim);
  p->plan = host_plan(*p, seqs);
  const Device dev = k_pool.device();
  p->tiles = upload_i32(or_one(p->plan.tiles), dev);
  p->sequences = upload_i32(or_one(p->plan.sequences), dev);
  p->tables = upload_i32(or_one(p->plan.block_tables), dev);
  p->scratch = Tensor::empty({std::max<int64_t>(1, p->plan.scratch_floats)}, DType::kF32, dev);
  return p;
}

void refill_paged_attention(const std::shared_ptr<void>& work,
                            const std::vector<ops::PagedSequence>& seqs) {
  auto& p = *static_cast<PreparedPagedAttention*>(work.get());
  const PagedAttentionPlan plan = host_plan(p, seqs);
  TESSERA_ASSERT(plan.n_tiles == p.plan.n_tiles && plan.splits == p.plan.splits &&
                     plan.keys_per_split == p.plan.keys_per_split &&
                     plan.tiles.size() == p.plan.tiles.size() &&
                     plan.sequences.size() == p.plan.sequences.size() &&
                     plan.block_tables.size() == p.plan.block_tables.size(),
                 "paged attention: a refilled plan changed shape");
  for (auto [from, to] : {std::pair{&plan.tiles, &p.tiles}, std::pair{&plan.sequences, &p.sequences},
                          std::pair{&plan.block_tables, &p.tables}}) {
    const Tensor host = Tensor::from_i32(or_one(*from), {int64_t(or_one(*from).size())});
    ops::copy(host, *to);
  }
  p.plan = plan;
}

void paged_attention_accumulate(const Tensor& q, const Tensor& k_pool, const Tensor& v_pool,
                                const std::shared_ptr<void>& work, float scale,
                                ops::KvScale kv_scale, ops::AttentionState& state) {
  const auto& p = *static_cast<const PreparedPagedAttention*>(work.get());
  check_gpu(q, "attention q");
  const Elem kv = common_elem({{&k_pool, "key pool"}, {&v_pool, "value pool"}});
  for (const Tensor* s : {&state.acc, &state.mx, &state.sum}) check_f32(*s, "attention state");
  const int64_t m = q.dim(0), hq = q.dim(1), d = q.dim(2);
  TESSERA_ASSERT(
      k_pool.ndim() == 4 && k_pool.dim(3) == d && v_pool.shape() == k_pool.shape() &&
          hq % k_pool.dim(1) == 0 && state.acc.shape() == q.shape() &&
          state.mx.numel() == m * hq && m == p.m && hq == p.n_heads &&
          k_pool.dim(0) == p.num_blocks && k_pool.dim(2) == p.block_size,
      "paged attention: q " << shape_str(q.shape()) << " pool " << shape_str(k_pool.shape()));
  if (p.plan.n_tiles == 0) return;
  PagedAttentionArgs a;
  a.q_type = elem_of(q, "attention q");
  a.kv_type = kv;
  a.q = q.raw(), a.k_pool = k_pool.raw(), a.v_pool = v_pool.raw();
  a.m = m, a.n_heads = hq, a.n_kv_heads = p.n_kv_heads, a.head_dim = d, a.block_size = p.block_size;
  a.scale = scale * kv_scale.key, a.v_scale = kv_scale.value;
  a.tiles = p.tiles.data<int32_t>(), a.sequences = p.sequences.data<int32_t>();
  a.block_tables = p.tables.data<int32_t>();
  a.n_tiles = p.plan.n_tiles, a.splits = p.plan.splits, a.keys_per_split = p.plan.keys_per_split;
  a.tile_vectors = p.plan.tile_vectors;
  a.scratch = p.scratch.data<float>();
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
  cuda::paged_attention_accumulate(
      q, k_pool, v_pool,
      cuda::prepare_paged_attention(one, q.dim(0), q.dim(1), k_pool, 0, q.dtype()), scale, {},
      state);
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

void store_kv(Tensor& k_pool, Tensor& v_pool, const Tensor& k, const Tensor& v, const Tensor& slots,
              ops::KvScale kv_scale) {
  const Elem t = common_elem({{&k_pool, "key pool"}, {&v_pool, "value pool"}});
  check_f32(k, "keys to store");
  check_f32(v, "values to store");
  check_gpu(slots, "slots");
  const int64_t rows = slots.numel(), heads = k_pool.dim(1), bs = k_pool.dim(2),
                d = k_pool.dim(3);
  TESSERA_ASSERT(slots.dtype() == DType::kI64 && k.numel() == rows * heads * d &&
                     v.numel() == k.numel(),
                 "store_kv: " << rows << " slots for keys " << shape_str(k.shape()));
  check_launch(kernels_for(k).store_kv(t, k_pool.raw(), v_pool.raw(), k.data<float>(),
                                       v.data<float>(), slots.data<int64_t>(), rows, heads, bs, d,
                                       kv_scale.key, kv_scale.value, stream_of(k)),
               "store_kv");
}

void round_through(Tensor& x, DType type, float scale) {
  check_f32(x, "values to round");
  if (type == DType::kF32) return;
  check_launch(kernels_for(x).round_through(elem_of(type, "cache type"), x.data<float>(), x.numel(),
                                            scale, stream_of(x)),
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

void repetition_penalty(Tensor& logits, const Tensor& ids, const Tensor& offsets, float penalty) {
  check_f32(logits, "logits");
  check_gpu(ids, "penalised ids");
  check_gpu(offsets, "penalised id offsets");
  const int64_t rows = logits.dim(0);
  TESSERA_ASSERT(logits.ndim() == 2 && ids.dtype() == DType::kI32 &&
                     offsets.dtype() == DType::kI32 && offsets.numel() == rows + 1,
                 "repetition_penalty: logits " << shape_str(logits.shape()) << ", offsets "
                                               << shape_str(offsets.shape()));
  check_launch(kernels_for(logits).repetition_penalty(logits.data<float>(), rows, logits.dim(1),
                                                      ids.data<int32_t>(),
                                                      offsets.data<int32_t>(), penalty,
                                                      stream_of(logits)),
               "repetition penalty");
}

void top_k(const Tensor& logits, int k, Tensor& values, Tensor& ids) {
  check_f32(logits, "logits");
  check_f32(values, "top-k values");
  check_gpu(ids, "top-k ids");
  const int64_t rows = logits.dim(0), vocab = logits.dim(1);
  TESSERA_ASSERT(logits.ndim() == 2 && k >= 1 && k <= kMaxTopK && k <= vocab &&
                     values.numel() == rows * k && ids.numel() == rows * k &&
                     ids.dtype() == DType::kI32,
                 "top_k " << k << " of logits " << shape_str(logits.shape()));
  check_launch(kernels_for(logits).top_k(logits.data<float>(), rows, vocab, k,
                                         values.data<float>(), ids.data<int32_t>(),
                                         stream_of(logits)),
               "top-k");
}

void synchronize() {
  if (device_count() == 0) return;  // only emulated GPUs, which run each launch to its end
  const cudaError_t err = cudaDeviceSynchronize();
  TESSERA_CHECK_IO(err == cudaSuccess, "a kernel on the GPU failed: " << cudaGetErrorString(err));
}

}  // namespace tessera::cuda
