// The CUDA emulator that runs the kernel sources in these tests: collectives compute what the GPU
// computes, and the mistakes it exists to catch are caught (an order-dependent race, a divergent
// barrier, a shuffle from a lane that is not there, a launch the GPU refuses).
#include <gtest/gtest.h>

#if TESSERA_HAVE_CUDA_EMULATOR
#include <numeric>
#include <vector>

#include "kernels/cuda/device_common.cuh"

namespace tessera::cuda::emulated {
namespace {

__global__ void sum_of_indices(const int* values, int* out) {
  const int i = int(blockIdx.x * blockDim.x + threadIdx.x);
  const float total = block_sum(float(values[i]));
  if (threadIdx.x == 0) out[blockIdx.x] = int(total);
}

__global__ void rotate_left_through_shared(const int* in, int* out, bool with_barrier) {
  __shared__ int s[256];
  s[threadIdx.x] = in[threadIdx.x];
  if (with_barrier) __syncthreads();
  out[threadIdx.x] = s[(threadIdx.x + 1) % blockDim.x];
}

__global__ void barrier_in_divergent_code(int* out) {
  if (threadIdx.x < 16) __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void shuffle_xor(int lane_mask, int* out) {
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, int(threadIdx.x), lane_mask);
}

__global__ void shuffle_down_and_up(int* down, int* up) {
  down[threadIdx.x] = __shfl_down_sync(0xffffffffu, int(threadIdx.x), 3);
  up[threadIdx.x] = __shfl_up_sync(0xffffffffu, int(threadIdx.x), 5);
}

__global__ void ballot_of_odd_multiples_of_three(unsigned* out) {
  out[threadIdx.x] = __ballot_sync(0xffffffffu, threadIdx.x % 3 == 0 && threadIdx.x % 2 == 1);
}

__global__ void fill_dynamic_shared(int n, int* out) {
  TESSERA_DYNAMIC_SHARED(int, s);
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) s[i] = i;
  __syncthreads();
  if (threadIdx.x == 0) *out = s[n - 1];
}

TEST(SimtEmulator, BlockSumOfEveryBlock) {
  const int blocks = 5, threads = 256;
  std::vector<int> values(blocks * threads);
  std::iota(values.begin(), values.end(), -300);
  std::vector<int> out(blocks, -1);
  TESSERA_LAUNCH(blocks, threads, 0, nullptr, sum_of_indices)(values.data(), out.data());
  ASSERT_EQ(launch_error(), "");
  for (int b = 0; b < blocks; ++b) {
    int want = 0;
    for (int t = 0; t < threads; ++t) want += values[size_t(b * threads + t)];
    EXPECT_EQ(out[size_t(b)], want) << "block " << b;
  }
}

TEST(SimtEmulator, AMissingBarrierGivesWrongAnswersAndTheBarrierFixesThem) {
  std::vector<int> in(256), out(256);
  const auto correct = [&] {
    for (int t = 0; t < 256; ++t)
      if (out[size_t(t)] != in[size_t((t + 1) % 256)]) return false;
    return true;
  };
  int wrong_without = 0;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    simt::set_schedule_seed(seed);
    // New values each time: the shared array still holds the last launch's.
    std::iota(in.begin(), in.end(), int(1000 * seed));
    TESSERA_LAUNCH(1, 256, 0, nullptr, rotate_left_through_shared)(in.data(), out.data(), true);
    ASSERT_EQ(launch_error(), "");
    EXPECT_TRUE(correct()) << "seed " << seed;
    std::iota(in.begin(), in.end(), int(1000 * seed + 500));
    TESSERA_LAUNCH(1, 256, 0, nullptr, rotate_left_through_shared)(in.data(), out.data(), false);
    ASSERT_EQ(launch_error(), "");
    wrong_without += !correct();
  }
  EXPECT_GT(wrong_without, 0) << "without the barrier, every order happened to work";
}

TEST(SimtEmulator, ADivergentBarrierIsReportedNotHung) {
  std::vector<int> out(64);
  TESSERA_LAUNCH(1, 64, 0, nullptr, barrier_in_divergent_code)(out.data());
  const std::string e = launch_error();
  EXPECT_NE(e.find("deadlock"), std::string::npos) << e;
  EXPECT_NE(e.find("16 threads wait at __syncthreads, 0 at a warp collective, 48 have returned"),
            std::string::npos)
      << e;
  // A later launch is not disturbed.
  std::vector<int> values(256, 1), sums(1);
  TESSERA_LAUNCH(1, 256, 0, nullptr, sum_of_indices)(values.data(), sums.data());
  ASSERT_EQ(launch_error(), "");
  EXPECT_EQ(sums[0], 256);
}

TEST(SimtEmulator, ShufflesReadTheLanesTheGpuReads) {
  std::vector<int> out(64), down(64), up(64);
  TESSERA_LAUNCH(1, 64, 0, nullptr, shuffle_xor)(5, out.data());
  ASSERT_EQ(launch_error(), "");
  for (int t = 0; t < 64; ++t) EXPECT_EQ(out[size_t(t)], t ^ 5);
  TESSERA_LAUNCH(1, 64, 0, nullptr, shuffle_down_and_up)(down.data(), up.data());
  ASSERT_EQ(launch_error(), "");
  for (int t = 0; t < 64; ++t) {
    EXPECT_EQ(down[size_t(t)], t % 32 + 3 < 32 ? t + 3 : t) << t;
    EXPECT_EQ(up[size_t(t)], t % 32 >= 5 ? t - 5 : t) << t;
  }
  std::vector<unsigned> ballots(64);
  TESSERA_LAUNCH(1, 64, 0, nullptr, ballot_of_odd_multiples_of_three)(ballots.data());
  ASSERT_EQ(launch_error(), "");
  for (int t = 0; t < 64; ++t) {
    unsigned want = 0;
    for (int l = 0; l < 32; ++l)
      if ((t / 32 * 32 + l) % 6 == 3) want |= 1u << l;
    EXPECT_EQ(ballots[size_t(t)], want) << t;
  }
  // 48 threads: the second warp has lanes 0..15 only, so a full-mask shuffle is an error.
  TESSERA_LAUNCH(1, 48, 0, nullptr, shuffle_xor)(16, out.data());
  const std::string e = launch_error();
  EXPECT_NE(e.find("mask"), std::string::npos) << e;
}

TEST(SimtEmulator, LaunchesTheGpuRefusesAreRefused) {
  std::vector<int> out(2048);
  TESSERA_LAUNCH(1, 2048, 0, nullptr, shuffle_xor)(1, out.data());
  EXPECT_NE(launch_error().find("invalid configuration"), std::string::npos);
  int last = 0;
  const int n = 20000;  // 80000 bytes: more than the default 48 KiB
  TESSERA_LAUNCH(1, 128, n * sizeof(int), nullptr, fill_dynamic_shared)(n, &last);
  EXPECT_NE(launch_error().find("too much shared memory"), std::string::npos);
  ASSERT_EQ(allow_shared_memory(fill_dynamic_shared, n * sizeof(int)), "");
  TESSERA_LAUNCH(1, 128, n * sizeof(int), nullptr, fill_dynamic_shared)(n, &last);
  ASSERT_EQ(launch_error(), "");
  EXPECT_EQ(last, n - 1);
}

}  // namespace
}  // namespace tessera::cuda::emulated

#else
TEST(SimtEmulator, NeedsTheCudaHeaders) {
  GTEST_SKIP() << "this tessera was built without the CUDA toolkit, so without the emulator";
}
#endif
