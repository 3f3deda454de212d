// The NCCL communicator on one GPU: a group of one rank (NCCL refuses two ranks on one GPU; the
// MPI test binary covers groups of several ranks where each has its own GPU). Every collective's
// result is checked against the values it must give, on random data: a one-rank all_reduce,
// all_gather, reduce_scatter and broadcast leave the values as they are, and a send to itself
// arrives unchanged; host tensors take the host communicator's path. Skips, saying why, where
// there is no GPU or no NCCL library.
#include <gtest/gtest.h>

#include <random>

#include "kernels/ops.h"
#include "kernels/tensor.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#include "parallel/nccl_communicator.h"
#endif

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA
std::vector<float> random_values(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(g);
  return v;
}

// The values a tensor holds, as float32 on the host.
std::vector<float> values_of(const Tensor& t) {
  return t.to(Device::cpu()).to_f32_vector();
}

class NcclOneGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no GPU here: " << cuda::no_device_reason();
    const std::string why = NcclCommunicator::unavailable_reason();
    if (!why.empty()) GTEST_SKIP() << "no NCCL here: " << why;
    static bool reserved = false;
    if (!reserved) cuda::reserve_memory(0, size_t(256) << 20);
    reserved = true;
    comm_ = NcclCommunicator::create(make_local_communicator(), {0, 60.0});
  }
  // A random tensor of `dtype` on the GPU, and the values it holds.
  Tensor gpu_tensor(Shape shape, DType dtype, uint32_t seed, std::vector<float>* values) {
    Tensor host = Tensor::from_f32(random_values(size_t(shape_numel(shape)), seed), shape);
    Tensor gpu = Tensor::empty(shape, dtype, Device::cuda(0));
    Tensor typed = Tensor::empty(shape, dtype);
    ops::convert(host, typed);
    ops::copy(typed, gpu);
    *values = values_of(gpu);
    return gpu;
  }
  std::unique_ptr<NcclCommunicator> comm_;
};

TEST_F(NcclOneGpu, SaysWhichNcclItLoaded) {
  EXPECT_FALSE(NcclCommunicator::version().empty());
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
}

TEST_F(NcclOneGpu, CollectivesOfOneRankKeepTheValues) {
  for (const DType dtype : {DType::kF32, DType::kBF16}) {
    std::vector<float> want;
    Tensor t = gpu_tensor({37, 5}, dtype, 1, &want);
    comm_->all_reduce(t, ReduceOp::kSum);
    EXPECT_EQ(values_of(t), want) << dtype_name(dtype);
    comm_->all_reduce(t, ReduceOp::kMax);
    EXPECT_EQ(values_of(t), want) << dtype_name(dtype);
    Tensor gathered = Tensor::empty({37, 5}, dtype, Device::cuda(0));
    comm_->all_gather(t, gathered);
    EXPECT_EQ(values_of(gathered), want) << dtype_name(dtype);
    Tensor scattered = Tensor::empty({37, 5}, dtype, Device::cuda(0));
    comm_->reduce_scatter(t, scattered, ReduceOp::kSum);
    EXPECT_EQ(values_of(scattered), want) << dtype_name(dtype);
    comm_->broadcast(t, 0);
    EXPECT_EQ(values_of(t), want) << dtype_name(dtype);
  }
  comm_->synchronize();
}

TEST_F(NcclOneGpu, SendToItselfArrives) {
  std::vector<float> want;
  Tensor out = gpu_tensor({3, 1000}, DType::kF32, 2, &want);
  Tensor in = Tensor::zeros({3, 1000}, DType::kF32).to(Device::cuda(0));
  comm_->send_recv(out, 0, in, 0, 7);
  EXPECT_EQ(values_of(in), want);
}

TEST_F(NcclOneGpu, HostTensorsTakeTheHostPath) {
  Tensor t = Tensor::from_f32(random_values(64, 3), {64});
  const std::vector<float> want = t.to_f32_vector();
  comm_->all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(t.to_f32_vector(), want);
  std::string bytes = "plan";
  comm_->broadcast_bytes(bytes, 0);
  EXPECT_EQ(bytes, "plan");
  comm_->barrier();
}

TEST_F(NcclOneGpu, RefusesATensorOfAnotherDevice) {
  cuda::emulate_gpu(7, size_t(1) << 20);
  Tensor t = Tensor::zeros({4}, DType::kF32).to(Device::cuda(7));
  EXPECT_THROW(comm_->all_reduce(t, ReduceOp::kSum), Error);
}
#else
TEST(NcclOneGpu, NeedsTheCudaBackend) {
  GTEST_SKIP() << "built without the CUDA backend";
}
#endif

}  // namespace
}  // namespace tessera
