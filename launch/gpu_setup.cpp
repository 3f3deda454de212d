#include "launch/gpu_setup.h"

#include <mpi.h>

#include <cstdio>

#include "kernels/error.h"

#if TESSERA_HAVE_CUDA
#include "kernels/cuda/cuda_memory.h"
#endif

namespace tessera::cli {
namespace {

// This rank's index among the ranks of its node, and how many there are.
std::pair<int, int> node_rank_and_size() {
  int init = 0;
  MPI_Initialized(&init);
  if (!init) return {0, 1};
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int rank = 0, size = 1;
  MPI_Comm_rank(node, &rank);
  MPI_Comm_size(node, &size);
  MPI_Comm_free(&node);
  return {rank, size};
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
       "or bf16 (GPU only; float32 accumulation, attention and KV cache)");
  // clang-format on
}

Device start_device(const DeviceOptions& o) {
  TESSERA_CHECK(o.device == "auto" || o.device == "cpu" || o.device == "cuda" ||
                    o.device == "emulator",
                "--device must be auto, cpu, cuda or emulator, got '" << o.device << "'");
  const auto [local_rank, local_size] = node_rank_and_size();  // collective: every rank calls it
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
    TESSERA_CHECK(o.device == "auto", "--device cuda: no GPU here (" << cuda::no_device_reason()
                                                                      << ")");
    return Device::cpu();
  }
  const int gpu = local_rank % gpus;
  const int sharing = local_size / gpus + (local_rank % gpus < local_size % gpus ? 1 : 0);
  cuda::reserve_memory(gpu, size_t(amount.of(double(cuda::free_memory(gpu)) / sharing)));
  return Device::cuda(gpu);
#else
  TESSERA_CHECK(o.device == "auto", "--device " << o.device << ": this tessera was built without CUDA");
  return Device::cpu();
#endif
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
