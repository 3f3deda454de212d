// Every GPU elementwise op against the CPU op of the same name on random inputs (never zeros),
// every output element checked. Skips, saying why, where there is no GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/ops.h"
#include "kernels/tensor.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#include "kernels/cuda/cuda_ops.h"
#endif

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
std::vector<float> random_values(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(0.05f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = (g() % 2 ? 1.0f : -1.0f) * scale * u(g);  // |x| >= 0.05 * scale
  return v;
}

// got within rel * max|want| of want, element by element.
void expect_near_all(const Tensor& got, const Tensor& want, double rel, const char* what) {
  const std::vector<float> g = got.to_f32_vector(), w = want.to_f32_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  double scale = 0;
  for (float x : w) scale = std::max(scale, double(std::abs(x)));
  for (size_t i = 0; i < g.size(); ++i)
    ASSERT_NEAR(g[i], w[i], rel * scale) << what << ", element " << i;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU here: " << cuda::no_device_reason();
    static const bool reserved = [] {
      cuda::reserve_memory(0, 256u << 20);
      return true;
    }();
    (void)reserved;
  }
  static Tensor gpu(const Tensor& t) { return t.to(Device::cuda(0)); }
};

TEST_F(CudaOps, RmsNormAndFusedResidualAddMatchTheCpu) {
  for (const int64_t d : {7, 576, 4096}) {
    const int64_t m = 5;
    const Tensor x = Tensor::from_f32(random_values(size_t(m * d), 1, 3.0f), {m, d});
    const Tensor delta = Tensor::from_f32(random_values(size_t(m * d), 2), {m, d});
    const Tensor w = Tensor::from_f32(random_values(size_t(d), 3), {d});
    Tensor want = Tensor::empty({m, d}, DType::kF32);
    ops::rms_norm(x, w, 1e-5f, want);
    Tensor y = gpu(want);  // (overwritten)
    cuda::rms_norm(gpu(x), gpu(w), 1e-5f, y);
    expect_near_all(y, want, 1e-5, "rms_norm");

    Tensor sum = x.clone();
    ops::add_inplace(sum, delta);
    ops::rms_norm(sum, w, 1e-5f, want);
    Tensor gx = gpu(x);
    cuda::add_rms_norm(gx, gpu(delta), gpu(w), 1e-5f, y);
    expect_near_all(gx, sum, 0.0, "residual after the fused add");  // the same float additions
    expect_near_all(y, want, 1e-5, "add_rms_norm");
  }
}

TEST_F(CudaOps, SwigluMatchesTheCpu) {
  const int64_t n = 3 * 1539;
  std::vector<float> g = random_values(size_t(n), 4, 12.0f);
  g[0] = -100.0f, g[1] = 100.0f;
  const Tensor gate = Tensor::from_f32(g, {3, 1539});
  const Tensor up = Tensor::from_f32(random_values(size_t(n), 5), {3, 1539});
  Tensor want = Tensor::empty({3, 1539}, DType::kF32);
  ops::swiglu(gate, up, want);
  Tensor got = gpu(want);
  cuda::swiglu(gpu(gate), gpu(up), got);
  expect_near_all(got, want, 1e-6, "swiglu");
}

TEST_F(CudaOps, RopeMatchesTheCpu) {
  const int64_t m = 6, heads = 4, d = 64;
  const Tensor x = Tensor::from_f32(random_values(size_t(m * heads * d), 6), {m, heads, d});
  const std::vector<int32_t> positions = {0, 1, 17, 255, 4095, 131071};
  const std::vector<float> inv = ops::rope_inv_freq(int(d), 500000.0f, {});
  Tensor want = x.clone();
  ops::rope_inplace(want, positions, inv);
  Tensor got = gpu(x);
  cuda::rope_inplace(got, gpu(Tensor::from_i32(positions, {m})),
                     gpu(Tensor::from_f32(inv, {int64_t(inv.size())})));
  expect_near_all(got, want, 1e-5, "rope");
}

TEST_F(CudaOps, EmbeddingGathersRowsAndRefusesBadIds) {
  const int64_t vocab = 50, d = 33;
  const Tensor table = Tensor::from_f32(random_values(size_t(vocab * d), 7), {vocab, d});
  const std::vector<int32_t> ids = {3, 0, 49, 3, 17};
  Tensor want = Tensor::empty({5, d}, DType::kF32);
  ops::embedding(table, ids, want);
  Tensor got = gpu(want);
  cuda::embedding(gpu(table), gpu(Tensor::from_i32(ids, {5})), got);
  expect_near_all(got, want, 0.0, "embedding");
  try {
    cuda::embedding(gpu(table), gpu(Tensor::from_i32({1, 50}, {2})), got);
    FAIL() << "an id outside the table was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos) << e.what();
  }
  cuda::synchronize();
}
#else
TEST(CudaOps, Skipped) { GTEST_SKIP() << "this tessera was built without CUDA (no nvcc at configure time)"; }
#endif

}  // namespace
}  // namespace tessera
