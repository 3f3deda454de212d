// Every GPU elementwise kernel against the CPU op of the same name, on random inputs (never
// zeros), every output element checked, for f32, f16 and bf16 tensors, on the GPU and on the CUDA
// emulator (the same kernel sources, compiled for the host). The GPU cases skip, saying why, where
// there is no GPU; the emulator's run everywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"
#include "tests/unit/kernel_backends.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_ops.h"
#endif

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
using testing::KernelBackend;

std::vector<float> random_values(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<float> u(0.05f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = (g() % 2 ? 1.0f : -1.0f) * scale * u(g);  // |x| >= 0.05 * scale
  return v;
}

cuda::Elem elem_of(DType t) {
  return t == DType::kF32   ? cuda::Elem::kF32
         : t == DType::kF16 ? cuda::Elem::kF16
                            : cuda::Elem::kBF16;
}

// The largest error an output of type t may have, relative to the largest reference value: the
// element's own rounding (2^-8 for bf16, 2^-11 for f16) with room for inputs rounded alike.
double tolerance(DType t, double f32_tolerance) {
  return t == DType::kF32 ? f32_tolerance : t == DType::kF16 ? 2e-3 : 1e-2;
}

class CudaOps : public ::testing::TestWithParam<std::tuple<size_t, DType>> {
 protected:
  void SetUp() override {
    backend_ = testing::kernel_backends()[std::get<0>(GetParam())];
    dtype_ = std::get<1>(GetParam());
    std::string why;
    if (!backend_.available(&why)) GTEST_SKIP() << why;
  }
  // values as this test's element type on the host (rounded), and the float32 values it holds.
  Tensor host(const std::vector<float>& values, Shape shape) const {
    Tensor t = Tensor::empty(shape, dtype_);
    convert_from_f32(dtype_, values.data(), t.raw(), values.size());
    return t;
  }
  static Tensor f32(const Tensor& t) { return Tensor::from_f32(t.to_f32_vector(), t.shape()); }
  Tensor on_backend(const Tensor& t) const { return t.to(backend_.memory); }
  // got (on the backend) within rel * max|want| of want, element by element.
  void expect_near_all(const Tensor& got, const Tensor& want, double rel, const char* what) const {
    const std::vector<float> g = got.to(Device::cpu()).to_f32_vector(), w = want.to_f32_vector();
    ASSERT_EQ(g.size(), w.size()) << what;
    double scale = 0;
    for (float x : w) scale = std::max(scale, double(std::abs(x)));
    for (size_t i = 0; i < g.size(); ++i)
      ASSERT_NEAR(g[i], w[i], rel * scale) << what << ", element " << i << " of " << g.size();
  }
  static void ok(const std::string& launch_error) { ASSERT_EQ(launch_error, ""); }

  KernelBackend backend_;
  DType dtype_ = DType::kF32;
};

TEST_P(CudaOps, RmsNormAndFusedResidualAddMatchTheCpu) {
  for (const int64_t d : {7, 576, 4096}) {
    const int64_t m = 5;
    const Tensor x = host(random_values(size_t(m * d), 1, 3.0f), {m, d});
    const Tensor delta = host(random_values(size_t(m * d), 2), {m, d});
    const Tensor w = host(random_values(size_t(d), 3), {d});
    Tensor want = Tensor::empty({m, d}, DType::kF32);
    ops::rms_norm(f32(x), f32(w), 1e-5f, want);
    Tensor gx = on_backend(x), gw = on_backend(w), gdelta = on_backend(delta);
    Tensor y = Tensor::empty({m, d}, dtype_, backend_.memory);
    ok(backend_.rms_norm(elem_of(dtype_), gx.raw(), gw.raw(), 1e-5f, m, d, y.raw(), nullptr));
    expect_near_all(y, want, tolerance(dtype_, 1e-5), "rms_norm");
    expect_near_all(gx, f32(x), 0.0, "rms_norm's input, unchanged");

    Tensor sum = f32(x);
    ops::add_inplace(sum, f32(delta));
    ops::rms_norm(sum, f32(w), 1e-5f, want);
    ok(backend_.add_rms_norm(elem_of(dtype_), gx.raw(), gdelta.raw(), gw.raw(), 1e-5f, m, d,
                             y.raw(), nullptr));
    // f32: the same float additions; otherwise the sum rounded once to the element type.
    expect_near_all(gx, sum, dtype_ == DType::kF32 ? 0.0 : tolerance(dtype_, 0), "residual");
    expect_near_all(y, want, tolerance(dtype_, 1e-5), "add_rms_norm");
  }
}

TEST_P(CudaOps, SwigluMatchesTheCpu) {
  const int64_t n = 3 * 1539;
  std::vector<float> g = random_values(size_t(n), 4, 12.0f);
  g[0] = -100.0f, g[1] = 100.0f;
  const Tensor gate = host(g, {3, 1539});
  const Tensor up = host(random_values(size_t(n), 5), {3, 1539});
  Tensor want = Tensor::empty({3, 1539}, DType::kF32);
  ops::swiglu(f32(gate), f32(up), want);
  Tensor got = Tensor::empty({3, 1539}, dtype_, backend_.memory);
  ok(backend_.swiglu(elem_of(dtype_), on_backend(gate).raw(), on_backend(up).raw(), n, got.raw(),
                     nullptr));
  expect_near_all(got, want, tolerance(dtype_, 1e-6), "swiglu");
}

TEST_P(CudaOps, RopeMatchesTheCpu) {
  const int64_t m = 6, heads = 4, d = 64;
  const Tensor x = host(random_values(size_t(m * heads * d), 6), {m, heads, d});
  const std::vector<int32_t> positions = {0, 1, 17, 255, 4095, 131071};
  const std::vector<float> inv = ops::rope_inv_freq(int(d), 500000.0f, {});
  Tensor want = f32(x);
  ops::rope_inplace(want, Tensor::from_i32(positions, {m}),
                    Tensor::from_f32(inv, {int64_t(inv.size())}));
  Tensor got = on_backend(x);
  const Tensor gpos = on_backend(Tensor::from_i32(positions, {m}));
  const Tensor ginv = on_backend(Tensor::from_f32(inv, {int64_t(inv.size())}));
  ok(backend_.rope(elem_of(dtype_), got.raw(), gpos.data<int32_t>(), ginv.data<float>(), m, heads,
                   d, nullptr));
  expect_near_all(got, want, tolerance(dtype_, 1e-5), "rope");
}

TEST_P(CudaOps, EmbeddingGathersRowsAndFlagsBadIds) {
  const int64_t vocab = 50, d = 33;
  const Tensor table = host(random_values(size_t(vocab * d), 7), {vocab, d});
  const std::vector<int32_t> ids = {3, 0, 49, 3, 17};
  Tensor want = Tensor::empty({5, d}, DType::kF32);
  ops::embedding(f32(table), ids, want);
  const Tensor gtable = on_backend(table);
  Tensor got = Tensor::empty({5, d}, dtype_, backend_.memory);
  Tensor bad = on_backend(Tensor::from_i32({0}, {1}));
  const Tensor gids = on_backend(Tensor::from_i32(ids, {5}));
  ok(backend_.embedding(elem_of(dtype_), gtable.raw(), vocab, gids.data<int32_t>(), 5, d, got.raw(),
                        bad.data<int32_t>(), nullptr));
  expect_near_all(got, want, 0.0, "embedding");  // copies, exact in any type
  EXPECT_EQ(bad.to(Device::cpu()).data<int32_t>()[0], 0);
  const Tensor bad_ids = on_backend(Tensor::from_i32({1, 50}, {2}));
  ok(backend_.embedding(elem_of(dtype_), gtable.raw(), vocab, bad_ids.data<int32_t>(), 2, d,
                        got.raw(), bad.data<int32_t>(), nullptr));
  EXPECT_EQ(bad.to(Device::cpu()).data<int32_t>()[0], 1) << "id 50 of a vocabulary of 50";
}

// The Tensor-level wrapper turns the flag into an error that names the vocabulary (GPU only).
TEST(CudaOpsTensors, EmbeddingRefusesAnIdOutsideTheTable) {
  std::string why;
  if (!testing::gpu_available(&why)) GTEST_SKIP() << why;
  const Tensor table = Tensor::from_f32(random_values(50 * 8, 8), {50, 8}).to(Device::cuda(0));
  Tensor out = Tensor::empty({2, 8}, DType::kF32, Device::cuda(0));
  try {
    cuda::embedding(table, {1, 50}, out);
    FAIL() << "an id outside the table was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside the vocabulary (size 50)"), std::string::npos)
        << e.what();
  }
  cuda::synchronize();
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<size_t, DType>>& info) {
  return testing::kernel_backends()[std::get<0>(info.param)].name + "_" +
         std::string(dtype_name(std::get<1>(info.param)));
}

INSTANTIATE_TEST_SUITE_P(
    Backends, CudaOps,
    ::testing::Combine(::testing::Range(size_t(0), testing::kernel_backends().size()),
                       ::testing::Values(DType::kF32, DType::kF16, DType::kBF16)),
    case_name);
#else
TEST(CudaOps, Skipped) {
  GTEST_SKIP() << "this tessera was built without CUDA (no nvcc at configure time)";
}
#endif

}  // namespace
}  // namespace tessera
