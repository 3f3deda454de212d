// --device and --gpu-memory: which device this rank computes on, and how much of its GPU it
// reserves at start. Collective over the world (ranks on one node count each other to share
// GPUs: node-local rank r uses GPU r % GPUs, and the ranks on one GPU split its reservation).
#pragma once

#include <string>

#include "kernels/device.h"
#include "kernels/dtype.h"
#include "launch/options.h"
#include "parallel/process_groups.h"

namespace tessera::cli {

struct DeviceOptions {
  std::string device = "auto";  // --device: auto (cuda when a GPU is present), cpu, cuda, emulator
  std::string gpu_memory = "0.9";  // --gpu-memory: a fraction of the GPU's free memory, or a size
  std::string dtype = "auto";      // --dtype: auto (bf16 on a GPU, f32 on the CPU), f32, bf16
  std::string comm = "auto";  // --comm: auto (NCCL when every rank has a GPU of its own), mpi, nccl
  double nccl_timeout = 600;  // --nccl-timeout: seconds before a stuck collective is an error
  double step_timeout = 600;  // --step-timeout: seconds an MPI operation of a step may wait
  void add_to(po::options_description& desc);
};

// Picks this rank's device and, for a GPU, reserves its memory. Throws one line naming the
// problem (--device cuda without a GPU, a bad --gpu-memory, a reservation that fails).
Device start_device(const DeviceOptions& options);
// What carries the model groups' tensors (--comm): NCCL where every rank of the world computes
// on a GPU of its own and NCCL can be loaded (auto), or MPI. Collective over the world; throws
// one line when --comm nccl cannot be had. An empty transport is MPI.
GroupTransport group_transport(const DeviceOptions& options, Device device);
// "NCCL 2.28.9" or "MPI": what group_transport chose, for the start-up line.
std::string describe_transport(const GroupTransport& transport);
// The weights' and activations' type on `device` (throws for bf16 on the CPU, or a bad name).
DType model_dtype(const DeviceOptions& options, Device device);
// "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3, 71.2 GiB reserved)".
std::string describe_device(Device d);

}  // namespace tessera::cli
