#include "launch/gpu_setup.h"

#include <cstdio>

#include "kernels/error.h"

#include "parallel/mpi_communicator.h"
#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#include "parallel/nccl_communicator.h"
#endif

namespace tessera::cli {
namespace {

// This rank's index among the ranks of its node, and how many there are.
std::pair<int, int> node_rank_and_size() {
  if (!MpiCommunicator::initialized()) return {0, 1};
  const std::unique_ptr<MpiCommunicator> node = MpiCommunicator::world()->node_local();
  return {node->rank(), node->size()};
}

}  // namespace

void DeviceOptions::add_to(po::options_description& desc) {
  // clang-format off
  desc.add_options()
      ("device", po::value(&device)->default_value(device),
       "where each rank computes: auto (a GPU when there is one), cpu, cuda, or emulator (the "
       "GPU code on a CPU emulator of CUDA: very slow; for testing the GPU path without a GPU)")
      ("gpu-memory", po::value(&gpu_memory)->default_value(gpu_memory),
       "GPU memory reserved at start for weights, KV cache and activations: a fraction of the "
       "GPU's free memory (shared by the ranks on one GPU) or a size like 20GiB per rank")
      ("dtype", po::value(&dtype)->default_value(dtype),
       "weights and activations: auto (bf16 on a GPU, f32 on the CPU), f32 (the exact path), "
       "or bf16 (GPU only; float32 accumulation, attention and KV cache)")
      ("comm", po::value(&comm)->default_value(comm),
       "what carries tensors between the ranks of a model group: auto (NCCL when every rank "
       "has a GPU of its own, else MPI), mpi, or nccl")
      ("nccl-timeout", po::value(&nccl_timeout)->default_value(nccl_timeout),
       "seconds after which an NCCL collective that has not finished (a peer stuck or gone) "
       "aborts the run with an error naming it")
      ("step-timeout", po::value(&step_timeout)->default_value(step_timeout),
       "seconds an MPI operation of a step (a collective, or hidden states between stages) may "
       "wait for its peers before the job ends with one line naming it and the ranks and hosts "
       "it waits for (a rank stopped, or a link down); waits between steps do not count");
  // clang-format on
}

Device start_device(const DeviceOptions& o) {
  TESSERA_CHECK(
      o.device == "auto" || o.device == "cpu" || o.device == "cuda" || o.device == "emulator",
      "--device must be auto, cpu, cuda or emulator, got '" << o.device << "'");
  [[maybe_unused]] const auto [local_rank, local_size] =
      node_rank_and_size();  // collective: every rank calls it
  if (o.device == "cpu") return Device::cpu();
#if TESSERA_HAVE_CUDA
  // --gpu-memory: a fraction of the GPU's free memory (shared by the ranks on it), or a size.
  const MemoryAmount amount = parse_memory_amount(o.gpu_memory, "--gpu-memory");
  const int gpus = cuda::device_count();
  if (o.device == "emulator") {  // host memory, after any real GPU's index; a fraction: 4 GiB
    cuda::emulate_gpu(gpus, size_t(amount.fraction > 0 ? uint64_t(4) << 30 : amount.bytes));
    return Device::cuda(gpus);
  }
  if (gpus == 0) {
    TESSERA_CHECK(o.device == "auto",
                  "--device cuda: no GPU here (" << cuda::no_device_reason() << ")");
    return Device::cpu();
  }
  const int gpu = local_rank % gpus;
  const int sharing = local_size / gpus + (local_rank % gpus < local_size % gpus ? 1 : 0);
  cuda::reserve_memory(gpu, size_t(amount.of(double(cuda::free_memory(gpu)) / sharing)));
  return Device::cuda(gpu);
#else
  TESSERA_CHECK(o.device == "auto",
                "--device " << o.device << ": this tessera was built without CUDA");
  return Device::cpu();
#endif
}

GroupTransport group_transport(const DeviceOptions& o, Device device) {
  TESSERA_CHECK(o.comm == "auto" || o.comm == "mpi" || o.comm == "nccl",
                "--comm must be auto, mpi or nccl, got '" << o.comm << "'");
  TESSERA_CHECK(o.nccl_timeout > 0, "--nccl-timeout must be positive, got " << o.nccl_timeout);
  [[maybe_unused]] const auto [local_rank, local_size] = node_rank_and_size();  // collective
  std::string why_not;  // why this rank cannot use NCCL
  if (device.is_cpu()) why_not = "this rank computes on the CPU";
#if TESSERA_HAVE_CUDA
  else if (cuda::is_emulated(device.index))
    why_not = "this rank's GPU is emulated";
  else if (local_size > cuda::device_count())
    why_not = std::to_string(local_size) + " ranks share this node's " +
              std::to_string(cuda::device_count()) + " GPU(s) (NCCL needs one GPU per rank)";
  else
    why_not = NcclCommunicator::unavailable_reason();
#endif
  const int ok = why_not.empty() ? 1 : 0;
  Tensor every = Tensor::from_i32({ok}, {1});
  MpiCommunicator::world()->all_reduce(every, ReduceOp::kMin);
  const int all_ok = every.data<int32_t>()[0];
  if (o.comm == "mpi" || (o.comm == "auto" && !all_ok)) return {};
  TESSERA_CHECK(all_ok, "--comm nccl: " << (ok ? "another rank cannot use NCCL" : why_not.c_str()));
#if TESSERA_HAVE_CUDA
  const NcclOptions nccl{device.index, o.nccl_timeout};
  return [nccl](std::unique_ptr<MpiCommunicator> mpi) -> std::unique_ptr<Communicator> {
    return NcclCommunicator::create(std::move(mpi), nccl);
  };
#else
  return {};
#endif
}

std::string describe_transport(const GroupTransport& transport) {
#if TESSERA_HAVE_CUDA
  if (transport) return "NCCL " + NcclCommunicator::version();
#endif
  return transport ? "NCCL" : "MPI";
}

DType model_dtype(const DeviceOptions& o, Device device) {
  TESSERA_CHECK(o.dtype == "auto" || o.dtype == "f32" || o.dtype == "bf16",
                "--dtype must be auto, f32 or bf16, got '" << o.dtype << "'");
  if (o.dtype == "auto") return device.is_cpu() ? DType::kF32 : DType::kBF16;
  TESSERA_CHECK(o.dtype == "f32" || !device.is_cpu(),
                "--dtype bf16 needs a GPU (the CPU computes in f32)");
  return dtype_from_name(o.dtype);
}

std::string describe_device(Device d) {
  if (d.is_cpu()) return "cpu";
#if TESSERA_HAVE_CUDA
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s (%s, %.1f GiB reserved)", d.str().c_str(),
                cuda::device_name(d.index).c_str(),
                double(cuda::memory_stats(d.index).capacity) / double(1ull << 30));
  return buf;
#else
  return d.str();
#endif
}

}  // namespace tessera::cli
