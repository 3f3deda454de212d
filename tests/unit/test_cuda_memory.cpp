// GPU memory through the Tensor interface: random host data to the GPU and back unchanged,
// device-to-device copies, pieces returned to the pool when tensors die, and a request larger
// than the reservation refused with the numbers. Skips, saying why, where there is no GPU.
#include <gtest/gtest.h>

#include <random>

#include "kernels/tensor.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#endif

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
TEST(CudaMemory, TensorsGoToTheGpuAndBackUnchanged) {
  if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU here: " << cuda::no_device_reason();
  constexpr size_t kReserved = 64u << 20;
  cuda::reserve_memory(0, kReserved);
  EXPECT_THROW(cuda::reserve_memory(0, kReserved), Error);  // once per GPU
  std::mt19937 g(3);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  for (const int64_t n : {1, 255, 256, 1000, 1 << 20}) {
    std::vector<float> values(static_cast<size_t>(n));
    for (float& v : values) v = u(g);
    const Tensor host = Tensor::from_f32(values, {n});
    {
      const Tensor gpu = host.to(Device::cuda(0));
      EXPECT_EQ(gpu.device(), Device::cuda(0));
      EXPECT_GE(cuda::memory_stats(0).used, size_t(n) * 4);
      const Tensor gpu2 = gpu.clone();  // device to device
      const Tensor back = gpu2.to(Device::cpu());
      const std::vector<float> got = back.to_f32_vector();
      ASSERT_EQ(got.size(), values.size());
      for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], values[i]) << "n " << n << ", " << i;
      EXPECT_EQ(gpu.rows(1, n).to(Device::cpu()).to_f32_vector().size(), size_t(n - 1));
    }
    EXPECT_EQ(cuda::memory_stats(0).used, 0u) << "freed tensors give their pieces back";
    EXPECT_EQ(cuda::memory_stats(0).free_ranges, 1u);
  }
  try {
    (void)Tensor::empty({int64_t(kReserved)}, DType::kF32, Device::cuda(0));
    FAIL() << "a tensor larger than the reservation was granted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("exhausted"), std::string::npos) << e.what();
  }
}
#else
TEST(CudaMemory, TensorsGoToTheGpuAndBackUnchanged) {
  GTEST_SKIP() << "this tessera was built without CUDA (no nvcc at configure time)";
}
#endif

}  // namespace
}  // namespace tessera
