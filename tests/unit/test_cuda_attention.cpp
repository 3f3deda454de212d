// The GPU's paged attention against ops::paged_attention_accumulate (the CPU op) on random data:
// a batch mixing decode rows, prefill chunks over a cached prefix, a fresh prompt, a sequence with
// no keys yet, a long context that is split over the KV length, and rows of no sequence; block
// tables scattered over the pool; a state that already holds earlier keys. GQA groups of 1 to 16,
// head_dim 8 to 128 (80: not a multiple of the warp); f32, f16 and bf16 pools; f32 and bf16
// queries. On the GPU and on the CUDA emulator (the same kernel source); the GPU cases skip, saying
// why, where there is no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"
#include "tests/unit/kernel_backends.h"

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
using cuda::PagedAttentionSequence;

struct Shape4 {
  int64_t hq, hkv, d;
};

struct AttentionCase {
  Shape4 heads;
  DType pool_type, q_type;
  bool split;  // cut the key lists into many pieces
};

std::vector<float> uniform(size_t n, std::mt19937_64& g, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = u(g);
  return v;
}

Tensor typed(const std::vector<float>& values, Shape shape, DType t) {
  Tensor out = Tensor::empty(shape, t);
  convert_from_f32(t, values.data(), out.raw(), values.size());
  return out;
}

class CudaAttention : public ::testing::TestWithParam<std::tuple<size_t, AttentionCase>> {
 protected:
  void SetUp() override {
    backend_ = testing::kernel_backends()[std::get<0>(GetParam())];
    std::string why;
    if (!backend_.available(&why)) GTEST_SKIP() << why;
  }
  testing::KernelBackend backend_;
};

TEST_P(CudaAttention, PagedAttentionMatchesTheCpu) {
  const AttentionCase c = std::get<1>(GetParam());
  const int64_t hq = c.heads.hq, hkv = c.heads.hkv, d = c.heads.d, bs = 16;
  std::mt19937_64 g(uint64_t(hq * 1000 + d + int(c.pool_type) * 7 + c.split));
  // (rows, keys, visible_offset) per sequence; rows [gap_row, gap_row + 2) belong to none.
  struct Spec {
    int64_t rows, keys, offset;
  };
  const std::vector<Spec> specs = {
      {1, 37, 36},    // decode
      {21, 71, 50},   // a prefill chunk after 50 cached keys
      {0, 0, 0},      // no query rows this step
      {13, 13, 0},    // a fresh prompt
      {1, 700, 699},  // a long decode: split over the KV length
      {2, 0, -1},     // rows that see no key yet (state unchanged)
      {1, 1, 0},      // one key
  };
  std::vector<PagedAttentionSequence> seqs;
  int64_t m = 0, blocks_needed = 0;
  for (const Spec& s : specs) {
    if (m == 3) m += 2;  // the gap
    PagedAttentionSequence q;
    q.row = m;
    q.rows = s.rows;
    q.keys = s.keys;
    q.visible_offset = s.offset;
    m += s.rows;
    blocks_needed += (s.keys + bs - 1) / bs;
    seqs.push_back(q);
  }
  const int64_t num_blocks = blocks_needed + 5;
  std::vector<int32_t> ids(static_cast<size_t>(num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), g);
  size_t next = 0;
  for (PagedAttentionSequence& q : seqs)
    for (int64_t b = 0; b < (q.keys + bs - 1) / bs; ++b) q.blocks.push_back(ids[next++]);

  const size_t pool_n = size_t(num_blocks * hkv * bs * d);
  const Tensor k_pool = typed(uniform(pool_n, g, -1, 1), {num_blocks, hkv, bs, d}, c.pool_type);
  const Tensor v_pool = typed(uniform(pool_n, g, -2, 2), {num_blocks, hkv, bs, d}, c.pool_type);
  const Tensor q = typed(uniform(size_t(m * hq * d), g, -1.5f, 1.5f), {m, hq, d}, c.q_type);
  // A state that already holds some earlier keys (mx, sum > 0, acc) for every row.
  ops::AttentionState want = ops::AttentionState::empty(m, hq, d);
  want.acc = Tensor::from_f32(uniform(size_t(m * hq * d), g, -1, 1), {m, hq, d});
  want.mx = Tensor::from_f32(uniform(size_t(m * hq), g, -1, 1), {m, hq});
  want.sum = Tensor::from_f32(uniform(size_t(m * hq), g, 0.5f, 2), {m, hq});
  const ops::AttentionState before{want.acc.clone(), want.mx.clone(), want.sum.clone()};

  // The CPU reference: f32 queries; f32 or f16 pools (a bf16 pool's values widened, exactly).
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<ops::PagedSequence> cpu_seqs;
  for (const PagedAttentionSequence& s : seqs)
    cpu_seqs.push_back({s.row, s.rows, s.blocks.data(), s.keys, s.visible_offset});
  const auto widened = [](const Tensor& t) {
    return t.dtype() == DType::kBF16 ? Tensor::from_f32(t.to_f32_vector(), t.shape()) : t;
  };
  // An e4m3 pool holds its values over scales the CPU and GPU apply alike.
  const ops::KvScale kv_scale =
      c.pool_type == DType::kE4M3 ? ops::KvScale{0.3f, 1.7f} : ops::KvScale{};
  const Tensor cpu_k_pool = widened(k_pool);
  ops::paged_attention_accumulate(
      Tensor::from_f32(q.to_f32_vector(), q.shape()), cpu_k_pool, widened(v_pool),
      ops::prepare_paged_attention(cpu_seqs, m, hq, cpu_k_pool), scale, want, kv_scale);

  // bf16 queries with head_dim a multiple of 16 take the tensor-core kernel's 64-vector tiles.
  const cuda::Elem q_elem = c.q_type == DType::kF32 ? cuda::Elem::kF32 : cuda::Elem::kBF16;
  const int64_t tile_vectors =
      cuda::tensor_core_attention(q_elem, d) ? cuda::kTcQueryVectors : cuda::kMaxQueryVectors;
  const cuda::PagedAttentionPlan plan = cuda::plan_paged_attention(
      seqs, m, hq, hkv, d, c.split ? 4096 : 1, c.split ? 32 : 1 << 30, 0, tile_vectors);
  if (c.split) {
    EXPECT_GE(plan.splits, 700 / 64) << "the long decode is cut into pieces";
  } else {
    EXPECT_EQ(plan.splits, 1);
  }
  const Device dev = backend_.memory;
  const auto i32 = [&](const std::vector<int32_t>& v) {
    return Tensor::from_i32(v, {int64_t(v.size())}).to(dev);
  };
  const Tensor tiles = i32(plan.tiles), sequences = i32(plan.sequences),
               tables = i32(plan.block_tables);
  Tensor scratch = Tensor::empty({plan.scratch_floats}, DType::kF32, dev);
  Tensor acc = before.acc.to(dev), mx = before.mx.to(dev), sum = before.sum.to(dev);
  const Tensor gq = q.to(dev), gk = k_pool.to(dev), gv = v_pool.to(dev);
  cuda::PagedAttentionArgs a;
  a.q_type = q_elem;
  a.kv_type = c.pool_type == DType::kF32    ? cuda::Elem::kF32
              : c.pool_type == DType::kF16  ? cuda::Elem::kF16
              : c.pool_type == DType::kE4M3 ? cuda::Elem::kE4M3
                                            : cuda::Elem::kBF16;
  a.q = gq.raw();
  a.k_pool = gk.raw();
  a.v_pool = gv.raw();
  a.m = m, a.n_heads = hq, a.n_kv_heads = hkv, a.head_dim = d, a.block_size = bs;
  a.scale = scale * kv_scale.key, a.v_scale = kv_scale.value;
  a.tiles = tiles.data<int32_t>();
  a.sequences = sequences.data<int32_t>();
  a.block_tables = tables.data<int32_t>();
  a.n_tiles = plan.n_tiles, a.splits = plan.splits, a.keys_per_split = plan.keys_per_split;
  a.tile_vectors = plan.tile_vectors;
  a.scratch = scratch.data<float>();
  a.acc = acc.data<float>(), a.mx = mx.data<float>(), a.sum = sum.data<float>();
  ASSERT_EQ(backend_.paged_attention(a), "");

  // Compare what the state means: the output acc / sum and the total weight sum * e^mx (acc and
  // sum are both relative to mx, which may differ in its last bits).
  const std::vector<float> ga = acc.to(Device::cpu()).to_f32_vector(),
                           gm = mx.to(Device::cpu()).to_f32_vector(),
                           gs = sum.to(Device::cpu()).to_f32_vector();
  const std::vector<float> wa = want.acc.to_f32_vector(), wm = want.mx.to_f32_vector(),
                           ws = want.sum.to_f32_vector();
  const std::vector<float> ba = before.acc.to_f32_vector();
  // float32 sums over a few hundred keys; bf16 queries of prefill chunks take tensor cores, whose
  // products round the softmax weights (and f32 or f16 keys and values) to bf16.
  const bool bf16_products = c.q_type == DType::kBF16 && d % 16 == 0;
  const double tol = 2e-5, out_tol = bf16_products ? 1e-2 : tol * 4,
               total_tol = bf16_products ? 1e-2 : tol * 10;
  int64_t changed_rows = 0;
  for (int64_t s = 0; s < m * hq; ++s) {
    const bool changed = wm[size_t(s)] != before.mx.to_f32_vector()[size_t(s)] ||
                         ws[size_t(s)] != before.sum.to_f32_vector()[size_t(s)];
    changed_rows += changed;
    const double w_total = ws[size_t(s)] * std::exp(double(wm[size_t(s)]));
    const double g_total = gs[size_t(s)] * std::exp(double(gm[size_t(s)]));
    ASSERT_NEAR(g_total, w_total, total_tol * w_total) << "row " << s / hq << " head " << s % hq;
    for (int64_t i = 0; i < d; ++i) {
      const size_t e = size_t(s * d + i);
      ASSERT_NEAR(ga[e] / gs[size_t(s)], wa[e] / ws[size_t(s)], out_tol)
          << "row " << s / hq << " head " << s % hq << " dim " << i;
      if (!changed) {
        ASSERT_EQ(ga[e], ba[e]) << "a row that saw no key was touched";
      }
    }
  }
  EXPECT_GT(changed_rows, (m - 4) * hq) << "most rows see keys";
}

std::vector<AttentionCase> attention_cases() {
  std::vector<AttentionCase> cases;
  for (const Shape4 h : {Shape4{9, 3, 64}, Shape4{8, 2, 128}, Shape4{4, 4, 64}, Shape4{16, 1, 32},
                         Shape4{8, 2, 8}, Shape4{4, 2, 80}})
    for (const bool split : {false, true}) cases.push_back({h, DType::kF32, DType::kF32, split});
  cases.push_back({{9, 3, 64}, DType::kF16, DType::kF32, true});
  cases.push_back({{8, 2, 128}, DType::kBF16, DType::kBF16, true});
  // Tensor cores (bf16 queries, head_dim a multiple of 16): the pools a bf16 model uses (f32 by
  // default, f16), GQA groups of 1 to 16, split and whole key lists.
  cases.push_back({{9, 3, 64}, DType::kF32, DType::kBF16, false});
  cases.push_back({{9, 3, 64}, DType::kF32, DType::kBF16, true});
  cases.push_back({{8, 2, 128}, DType::kF16, DType::kBF16, false});
  cases.push_back({{4, 4, 80}, DType::kF32, DType::kBF16, true});
  cases.push_back({{16, 1, 32}, DType::kF32, DType::kBF16, false});
  cases.push_back({{8, 2, 8}, DType::kF32, DType::kBF16, false});  // d 8: the float32 kernel
  // An FP8 KV cache, by the float32 kernel and by tensor cores.
  cases.push_back({{9, 3, 64}, DType::kE4M3, DType::kF32, true});
  cases.push_back({{8, 2, 128}, DType::kE4M3, DType::kBF16, false});
  return cases;
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<size_t, AttentionCase>>& info) {
  const AttentionCase& c = std::get<1>(info.param);
  return testing::kernel_backends()[std::get<0>(info.param)].name + "_q" +
         std::to_string(c.heads.hq) + "_kv" + std::to_string(c.heads.hkv) + "_d" +
         std::to_string(c.heads.d) + "_" + std::string(dtype_name(c.pool_type)) + "pool_" +
         std::string(dtype_name(c.q_type)) + "q" + (c.split ? "_split" : "");
}

INSTANTIATE_TEST_SUITE_P(Backends, CudaAttention,
                         ::testing::Combine(::testing::Range(size_t(0),
                                                             testing::kernel_backends().size()),
                                            ::testing::ValuesIn(attention_cases())),
                         case_name);
#else
TEST(CudaAttention, Skipped) {
  GTEST_SKIP() << "this tessera was built without CUDA";
}
#endif

}  // namespace
}  // namespace tessera
