// CPU ops against straightforward double-precision loops written here, on random data.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/ops.h"

namespace tessera {
namespace {

std::vector<float> random_vec(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel) {
  ASSERT_EQ(got.size(), want.size());
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], rel * scale + 1e-6) << "element " << i;
}

TEST(Dtype, HalfRoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = half_to_float(uint16_t(h));
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_half(f), uint16_t(h)) << "half bits " << h;
  }
}

// convert_to_f32's vector paths (F16C, AVX2) against the scalar conversions, every code, at
// lengths that leave a scalar tail.
TEST(Dtype, BufferConversionEqualsTheScalarOneForEveryHalfAndBf16Code) {
  std::vector<uint16_t> codes(0x10000 + 5);
  for (size_t i = 0; i < codes.size(); ++i) codes[i] = uint16_t(i * 40503u);
  std::vector<float> out(codes.size());
  for (DType type : {DType::kF16, DType::kBF16}) {
    convert_to_f32(type, codes.data(), out.data(), codes.size());
    for (size_t i = 0; i < codes.size(); ++i) {
      const float want = type == DType::kF16 ? half_to_float(codes[i]) : bf16_to_float(codes[i]);
      if (std::isnan(want)) {
        ASSERT_TRUE(std::isnan(out[i])) << dtype_name(type) << " code " << codes[i];
      } else {
        ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(want))
            << dtype_name(type) << " code " << codes[i];
      }
    }
  }
}

TEST(Dtype, HalfKnownValues) {
  EXPECT_EQ(half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(half_to_float(0xc000), -2.0f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(half_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(float_to_half(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie rounds to even
  EXPECT_EQ(float_to_half(1e6f), 0x7c00);                          // overflow to inf
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  // 1 + 2^-8 is halfway between two bf16 values: rounds to the even one (1.0).
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
}

TEST(Ops, LinearMatchesLoops) {
  const int64_t m = 7, k = 37, n = 13;
  auto x = random_vec(size_t(m * k), 1), w = random_vec(size_t(n * k), 2),
       b = random_vec(size_t(n), 3);
  Tensor tx = Tensor::from_f32(x, {m, k}), tw = Tensor::from_f32(w, {n, k}),
         tb = Tensor::from_f32(b, {n});
  Tensor y = Tensor::empty({m, n}, DType::kF32);
  ops::linear(tx, tw, &tb, y);
  std::vector<double> want(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = b[size_t(j)];
      for (int64_t l = 0; l < k; ++l) s += double(x[size_t(i * k + l)]) * w[size_t(j * k + l)];
      want[size_t(i * n + j)] = s;
    }
  expect_close(y.to_f32_vector(), want, 1e-5);
}

// Decode batches (up to kSkinnyMaxRows rows) and prefill-sized inputs, with k both a multiple of
// the vector width and not, short and long enough that x does not fit L1.
TEST(Ops, LinearOfEveryBatchSizeMatchesLoops) {
  for (int64_t k : {1539, 576, 37, 16, 8, 3})
    for (int64_t m : {1, 2, 3, 4, 5, 8, 15, 16, 17, 40}) {
      const int64_t n = 29;
      SCOPED_TRACE("m " + std::to_string(m) + " k " + std::to_string(k));
      auto x = random_vec(size_t(m * k), uint64_t(m * 100 + k)), w = random_vec(size_t(n * k), 5);
      Tensor y = Tensor::empty({m, n}, DType::kF32);
      ops::linear(Tensor::from_f32(x, {m, k}), Tensor::from_f32(w, {n, k}), nullptr, y);
      std::vector<double> want(static_cast<size_t>(m * n));
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) {
          double s = 0;
          for (int64_t i = 0; i < k; ++i) s += double(x[size_t(r * k + i)]) * w[size_t(c * k + i)];
          want[size_t(r * n + c)] = s;
        }
      expect_close(std::vector<float>(y.data<float>(), y.data<float>() + m * n), want, 1e-5);
    }
}

// A row's result does not depend on the rows batched with it (decode batches of any size up to
// kSkinnyMaxRows): bit for bit, so a sequence's tokens do not depend on its neighbours.
TEST(Ops, DecodeBatchRowsAreBitIdenticalToOneRow) {
  for (const int64_t k : {200, 1539}) {
    const int64_t n = 50;
    const auto w = random_vec(size_t(n * k), 9);
    const Tensor tw = Tensor::from_f32(w, {n, k});
    for (int64_t m = 1; m <= 16; ++m) {
      const auto x = random_vec(size_t(m * k), uint64_t(m));
      Tensor all = Tensor::empty({m, n}, DType::kF32);
      ops::linear(Tensor::from_f32(x, {m, k}), tw, nullptr, all);
      for (int64_t r = 0; r < m; ++r) {
        Tensor one = Tensor::empty({1, n}, DType::kF32);
        ops::linear(Tensor::from_f32(std::vector<float>(x.begin() + r * k, x.begin() + (r + 1) * k),
                                     {1, k}),
                    tw, nullptr, one);
        for (int64_t c = 0; c < n; ++c)
          ASSERT_EQ(all.data<float>()[r * n + c], one.data<float>()[c])
              << "k " << k << ", m " << m << ", row " << r;
      }
    }
  }
}

TEST(Ops, RmsNormMatchesLoops) {
  const int64_t m = 5, d = 67;
  auto x = random_vec(size_t(m * d), 4, 3.0f), w = random_vec(size_t(d), 5);
  Tensor tx = Tensor::from_f32(x, {m, d}), tw = Tensor::from_f32(w, {d});
  Tensor y = Tensor::empty({m, d}, DType::kF32);
  ops::rms_norm(tx, tw, 1e-5f, y);
  std::vector<double> want(static_cast<size_t>(m * d));
  for (int64_t i = 0; i < m; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += double(x[size_t(i * d + j)]) * x[size_t(i * d + j)];
    const double inv = 1.0 / std::sqrt(ss / double(d) + 1e-5);
    for (int64_t j = 0; j < d; ++j)
      want[size_t(i * d + j)] = x[size_t(i * d + j)] * inv * w[size_t(j)];
  }
  expect_close(y.to_f32_vector(), want, 1e-6);
}

TEST(Ops, SwigluMatchesFormula) {
  // Rows long enough for the vector loop and a tail; gates out to where e^-g under- and
  // overflows.
  for (const int64_t f : {10, 1539}) {
    const int64_t m = 6;
    auto g = random_vec(size_t(m * f), 6, 12.0f), u = random_vec(size_t(m * f), 7);
    g[0] = -100.0f, g[1] = 100.0f, g[2] = -87.5f, g[3] = 88.5f, g[4] = 0.0f;
    Tensor tg = Tensor::from_f32(g, {m, f}), tu = Tensor::from_f32(u, {m, f});
    Tensor out = Tensor::empty({m, f}, DType::kF32);
    ops::swiglu(tg, tu, out);
    const std::vector<float> got = out.to_f32_vector();
    for (size_t i = 0; i < g.size(); ++i) {  // each element to within a few float32 roundings
      const double want = g[i] / (1.0 + std::exp(-double(g[i]))) * u[i];
      ASSERT_NEAR(got[i], want, 1e-6 * std::abs(want) + 1e-30) << "f " << f << ", element " << i;
    }
  }
}

TEST(Ops, EmbeddingGathersRowsAndRejectsBadIds) {
  auto t = random_vec(5 * 3, 8);
  Tensor table = Tensor::from_f32(t, {5, 3});
  Tensor out = Tensor::empty({2, 3}, DType::kF32);
  ops::embedding(table, {4, 1}, out);
  auto o = out.to_f32_vector();
  for (int j = 0; j < 3; ++j) {
    EXPECT_EQ(o[size_t(j)], t[size_t(12 + j)]);
    EXPECT_EQ(o[size_t(3 + j)], t[size_t(3 + j)]);
  }
  EXPECT_THROW(ops::embedding(table, {5, 0}, out), Error);
}

// The CPU backend's sampling ops against a plain sort of each row and the penalty's formula.
TEST(Ops, TopKAndRepetitionPenaltyRankAsTheSamplerDoes) {
  const int64_t rows = 2, vocab = 50;
  std::vector<float> l = random_vec(size_t(rows * vocab), 40);
  l[3] = l[8] = l[11] = 5.0f;  // a tie: the lower id first
  l[vocab + 1] = NAN;  // last
  Tensor logits = Tensor::from_f32(l, {rows, vocab});
  ops::repetition_penalty(logits, Tensor::from_i32({3, 20, 1}, {3}),
                          Tensor::from_i32({0, 2, 3}, {3}), 2.0f);
  l[3] /= 2.0f;  // id 3 of row 0 penalised: 8 and 11 still tie
  l[20] = l[20] > 0 ? l[20] / 2.0f : l[20] * 2.0f;
  const float nan_penalised = logits.data<float>()[vocab + 1];
  EXPECT_TRUE(std::isnan(nan_penalised));
  for (int64_t i = 0; i < rows * vocab; ++i)
    if (i != vocab + 1) EXPECT_EQ(logits.data<float>()[i], l[size_t(i)]) << i;
  const int k = 50;
  Tensor values = Tensor::empty({rows, k}, DType::kF32), ids = Tensor::empty({rows, k}, DType::kI32);
  ops::top_k(logits, k, values, ids);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<std::pair<float, int32_t>> want;
    for (int32_t v = 0; v < vocab; ++v) {
      const float x = logits.data<float>()[r * vocab + v];
      want.push_back({std::isnan(x) ? -INFINITY : x, v});
    }
    std::stable_sort(want.begin(), want.end(), [](auto a, auto b) { return a.first > b.first; });
    for (int j = 0; j < k; ++j) {
      EXPECT_EQ(ids.data<int32_t>()[r * k + j], want[size_t(j)].second) << r << " " << j;
      EXPECT_EQ(values.data<float>()[r * k + j], want[size_t(j)].first) << r << " " << j;
    }
  }
  EXPECT_EQ(ids.data<int32_t>()[0], 8);  // 5.0 beats the penalised 2.5; 8 before 11
  EXPECT_EQ(ids.data<int32_t>()[1], 11);
}

TEST(Ops, RopeRotatesHalvesByPositionAngle) {
  const int64_t m = 3, heads = 2, d = 8;
  auto x = random_vec(size_t(m * heads * d), 9);
  Tensor t = Tensor::from_f32(x, {m, heads, d});
  const auto inv = ops::rope_inv_freq(int(d), 10000.0f, {});
  const std::vector<int32_t> pos = {0, 5, 17};
  ops::rope_inplace(t, Tensor::from_i32(pos, {m}), Tensor::from_f32(inv, {d / 2}));
  std::vector<double> want(x.size());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < d / 2; ++i) {
        const double theta = pos[size_t(r)] * std::pow(10000.0, -2.0 * double(i) / double(d));
        const size_t base = size_t((r * heads + h) * d);
        const double a = x[base + size_t(i)], b = x[base + size_t(i + d / 2)];
        want[base + size_t(i)] = a * std::cos(theta) - b * std::sin(theta);
        want[base + size_t(i + d / 2)] = b * std::cos(theta) + a * std::sin(theta);
      }
  expect_close(t.to_f32_vector(), want, 1e-5);
}

TEST(Ops, Llama3RopeScalingBands) {
  ops::RopeScaling s;
  s.type = ops::RopeScaling::Type::kLlama3;
  s.factor = 8;
  s.low_freq_factor = 1;
  s.high_freq_factor = 4;
  s.original_max_position = 8192;
  const auto plain = ops::rope_inv_freq(128, 500000.0f, {});
  const auto scaled = ops::rope_inv_freq(128, 500000.0f, s);
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * M_PI / plain[i];
    if (wavelen < 8192.0 / 4)
      EXPECT_EQ(scaled[i], plain[i]);  // high frequency: kept
    else if (wavelen > 8192.0)
      EXPECT_FLOAT_EQ(scaled[i], plain[i] / 8);  // low: divided
    else
      EXPECT_TRUE(scaled[i] < plain[i] && scaled[i] > plain[i] / 8);  // medium: between
  }
}

TEST(Ops, CausalAttentionMatchesLoopsWithGqa) {
  const int64_t t = 9, m = 4, hq = 6, hkv = 2, d = 5;
  auto q = random_vec(size_t(m * hq * d), 10), k = random_vec(size_t(t * hkv * d), 11),
       v = random_vec(size_t(t * hkv * d), 12);
  Tensor tq = Tensor::from_f32(q, {m, hq, d}), tk = Tensor::from_f32(k, {t, hkv, d}),
         tv = Tensor::from_f32(v, {t, hkv, d});
  Tensor out = Tensor::empty({m, hq, d}, DType::kF32);
  const std::vector<int32_t> pos = {5, 6, 7, 8};  // the last 4 of 9 positions
  const float scale = 0.37f;
  ops::cpu::causal_attention(tq, tk, tv, pos, scale, out);
  std::vector<double> want(q.size());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t h = 0; h < hq; ++h) {
      const int64_t kh = h / (hq / hkv);
      std::vector<double> s;
      for (int64_t j = 0; j <= pos[size_t(r)]; ++j) {
        double dot = 0;
        for (int64_t i = 0; i < d; ++i)
          dot += double(q[size_t((r * hq + h) * d + i)]) * k[size_t((j * hkv + kh) * d + i)];
        s.push_back(dot * scale);
      }
      double mx = *std::max_element(s.begin(), s.end()), sum = 0;
      for (double& x : s) sum += x = std::exp(x - mx);
      for (int64_t i = 0; i < d; ++i) {
        double o = 0;
        for (size_t j = 0; j < s.size(); ++j)
          o += s[j] / sum * v[(j * size_t(hkv) + size_t(kh)) * size_t(d) + size_t(i)];
        want[size_t((r * hq + h) * d + i)] = o;
      }
    }
  expect_close(out.to_f32_vector(), want, 1e-5);
}

// Ring attention's pieces: keys split into blocks (two of past keys, one aligned with the queries),
// accumulated on two "ranks" and merged, equal causal attention over all keys at once.
TEST(Ops, AttentionInBlocksEqualsWholeCausalAttention) {
  const int64_t t = 12, m = 5, hq = 4, hkv = 2, d = 6;
  auto q = random_vec(size_t(m * hq * d), 20), k = random_vec(size_t(t * hkv * d), 21),
       v = random_vec(size_t(t * hkv * d), 22);
  Tensor tq = Tensor::from_f32(q, {m, hq, d}), tk = Tensor::from_f32(k, {t, hkv, d}),
         tv = Tensor::from_f32(v, {t, hkv, d});
  const std::vector<int32_t> pos = {7, 8, 9, 10, 11};
  Tensor want = Tensor::empty({m, hq, d}, DType::kF32);
  ops::cpu::causal_attention(tq, tk, tv, pos, 0.4f, want);

  ops::AttentionState a = ops::AttentionState::empty(m, hq, d);
  ops::AttentionState b = ops::AttentionState::empty(m, hq, d);
  ops::attention_accumulate(tq, tk.rows(0, 4), tv.rows(0, 4), ops::kAllKeysVisible, 0.4f, a);
  ops::attention_accumulate(tq, tk.rows(7, 12), tv.rows(7, 12), 0, 0.4f, a);  // own block
  ops::attention_accumulate(tq, tk.rows(4, 7), tv.rows(4, 7), ops::kAllKeysVisible, 0.4f, b);
  ops::attention_merge(a, b);
  Tensor got = Tensor::empty({m, hq, d}, DType::kF32);
  ops::attention_finish(a, got);
  const auto w = want.to_f32_vector();
  expect_close(got.to_f32_vector(), std::vector<double>(w.begin(), w.end()), 1e-5);
}

// Paged attention over keys scattered in a pool's blocks (layout (blocks, kv heads, block slots,
// head dim)) is the same arithmetic as attention over the same keys laid out contiguously: equal
// bit for bit, for a batch of sequences of different lengths (prefill rows and decode rows).
TEST(Ops, PagedAttentionEqualsContiguousAttentionBitForBit) {
  // Pools of f32, and of f16 and e4m3 (compared with contiguous f32 attention over the same
  // values). The e4m3 pools' scales are powers of two, so that folding them into the scores and
  // weights rounds nothing.
  for (const DType pool_dtype : {DType::kF32, DType::kF16, DType::kE4M3})
  for (const int64_t d : {5, 64}) {
    const ops::KvScale kv_scale =
        pool_dtype == DType::kE4M3 ? ops::KvScale{0.5f, 4.0f} : ops::KvScale{};
    const int64_t hq = 6, hkv = 2, bs = 4, num_blocks = 40;
    // (keys before this step, rows of this step) per sequence
    const std::vector<std::pair<int64_t, int64_t>> shapes = {
        {0, 7}, {13, 1}, {2, 3}, {30, 1}, {8, 1}};
    int64_t m = 0;
    for (const auto& [before, rows] : shapes) m += rows;
    Tensor q = Tensor::from_f32(random_vec(size_t(m * hq * d), 30), {m, hq, d});
    std::vector<float> kp = random_vec(size_t(num_blocks * hkv * bs * d), 31);
    std::vector<float> vp = random_vec(size_t(num_blocks * hkv * bs * d), 32);
    // The f16 and e4m3 pools' bits; kp and vp become the values they hold.
    std::vector<uint16_t> kh, vh;
    std::vector<uint8_t> k8, v8;
    for (std::vector<float>* p : {&kp, &vp}) {
      const float by = p == &kp ? kv_scale.key : kv_scale.value;
      for (float& x : *p) {
        (p == &kp ? kh : vh).push_back(float_to_half(x));
        (p == &kp ? k8 : v8).push_back(float_to_fp8_e4m3(x / by));
        if (pool_dtype == DType::kF16) x = half_to_float(float_to_half(x));
        if (pool_dtype == DType::kE4M3) x = fp8_e4m3_to_float(float_to_fp8_e4m3(x / by)) * by;
      }
    }
    std::vector<int32_t> order(static_cast<size_t>(num_blocks));
    for (int32_t b = 0; b < num_blocks; ++b) order[size_t(b)] = b;
    std::shuffle(order.begin(), order.end(), std::mt19937(33));
    std::vector<std::vector<int32_t>> tables;
    std::vector<ops::PagedSequence> seqs;
    int64_t row = 0, next_block = 0;
    for (const auto& [before, rows] : shapes) {
      const int64_t keys = before + rows;
      std::vector<int32_t> table;
      for (int64_t b = 0; b < (keys + bs - 1) / bs; ++b)
        table.push_back(order[size_t(next_block++)]);
      tables.push_back(table);
      seqs.push_back({row, rows, nullptr, keys, before});
      row += rows;
    }
    for (size_t i = 0; i < seqs.size(); ++i) seqs[i].blocks = tables[i].data();
    Tensor k_pool = Tensor::from_f32(kp, {num_blocks, hkv, bs, d});
    Tensor v_pool = Tensor::from_f32(vp, {num_blocks, hkv, bs, d});
    if (pool_dtype == DType::kF16) {
      k_pool = Tensor::empty({num_blocks, hkv, bs, d}, DType::kF16);
      v_pool = Tensor::empty({num_blocks, hkv, bs, d}, DType::kF16);
      std::copy(kh.begin(), kh.end(), k_pool.data<uint16_t>());
      std::copy(vh.begin(), vh.end(), v_pool.data<uint16_t>());
    }
    if (pool_dtype == DType::kE4M3) {
      k_pool = Tensor::empty({num_blocks, hkv, bs, d}, DType::kE4M3);
      v_pool = Tensor::empty({num_blocks, hkv, bs, d}, DType::kE4M3);
      std::copy(k8.begin(), k8.end(), static_cast<uint8_t*>(k_pool.raw()));
      std::copy(v8.begin(), v8.end(), static_cast<uint8_t*>(v_pool.raw()));
    }
    ops::AttentionState paged = ops::AttentionState::empty(m, hq, d);
    ops::paged_attention_accumulate(q, k_pool, v_pool,
                                    ops::prepare_paged_attention(seqs, m, hq, k_pool), 0.3f, paged,
                                    kv_scale);
    Tensor got = Tensor::empty({m, hq, d}, DType::kF32);
    ops::attention_finish(paged, got);
    const std::vector<float> g = got.to_f32_vector();
    for (size_t i = 0; i < seqs.size(); ++i) {
      const ops::PagedSequence& s = seqs[i];
      // The sequence's keys gathered in order, (keys, kv heads, d), by the documented layout.
      std::vector<float> k, v;
      for (int64_t j = 0; j < s.keys; ++j)
        for (int64_t h = 0; h < hkv; ++h)
          for (int64_t e = 0; e < d; ++e) {
            const size_t at = size_t(((int64_t(s.blocks[j / bs]) * hkv + h) * bs + j % bs) * d + e);
            k.push_back(kp[at]);
            v.push_back(vp[at]);
          }
      const Tensor tk = Tensor::from_f32(k, {s.keys, hkv, d}),
                   tv = Tensor::from_f32(v, {s.keys, hkv, d});
      const Tensor sq = q.rows(s.row, s.row + s.rows).clone();
      ops::AttentionState alone = ops::AttentionState::empty(s.rows, hq, d);
      ops::attention_accumulate(sq, tk, tv, s.visible_offset, 0.3f, alone);
      Tensor want = Tensor::empty({s.rows, hq, d}, DType::kF32);
      ops::attention_finish(alone, want);
      const std::vector<float> w = want.to_f32_vector();
      for (size_t e = 0; e < w.size(); ++e)
        ASSERT_EQ(g[size_t(s.row * hq * d) + e], w[e])
            << dtype_name(pool_dtype) << " pool, d " << d << ", sequence " << i << ", element "
            << e;
    }
  }
}

TEST(Tensor, ViewsShareStorageAndCheckShapes) {
  Tensor t = Tensor::from_f32({0, 1, 2, 3, 4, 5}, {3, 2});
  Tensor r = t.rows(1, 3);
  EXPECT_EQ(r.shape(), (Shape{2, 2}));
  EXPECT_EQ(r.data<float>()[0], 2.0f);
  r.data<float>()[0] = 42;
  EXPECT_EQ(t.data<float>()[2], 42.0f);
  EXPECT_EQ(t.view({-1}).shape(), (Shape{6}));
  EXPECT_THROW(t.view({4}), Error);
  EXPECT_THROW(t.rows(2, 4), Error);
  EXPECT_THROW(t.data<int32_t>(), Error);  // same size as float, but the wrong type
}

}  // namespace
}  // namespace tessera
