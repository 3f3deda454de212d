// GPU memory behind the Device/Tensor interfaces: each GPU a rank uses gets one region reserved
// at start (cudaMalloc once), from which Tensor::empty(..., Device::cuda(i)) takes aligned pieces
// (kernels/memory_pool.h keeps the books); copies between host and GPU go through
// Tensor::to(). No CUDA types appear here, so runtime/ and io/ include it freely.
#pragma once

#include <cstddef>
#include <string>

#include "kernels/memory_pool.h"

namespace tessera::cuda {

// GPUs this process can use; 0 when there is none or no driver (never throws).
int device_count();
// Why there is no GPU (the CUDA runtime's words), or "" when there is one.
std::string no_device_reason();
// Free memory on GPU `index` now, and its name ("NVIDIA H100 80GB HBM3").
size_t free_memory(int index);
std::string device_name(int index);
// The CUDA driver's and runtime's versions ("13.0").
std::string driver_version();
std::string runtime_version();
// Reserves `bytes` on GPU `index` for its tensors (once per GPU; throws naming the GPU, the
// request and its free memory when the reservation fails).
void reserve_memory(int index, size_t bytes);
// Makes cuda:index a GPU that is emulated: its tensors live in `bytes` of host memory and the
// GPU ops on them run the kernel sources on the CUDA emulator (kernels/cuda/simt_emulator.h).
// For tests of the GPU path where there is no GPU; device_count() still counts real GPUs only.
void emulate_gpu(int index, size_t bytes);
bool is_emulated(int index);
// The compute stream of a GPU whose memory was reserved (a cudaStream_t; nullptr when emulated):
// every kernel, cuBLAS call and copy of this process on that GPU goes on it, in order.
void* compute_stream(int index);
// Waits for everything queued on the GPU's stream; throws what a kernel raised.
void synchronize(int index);
MemoryPoolStats memory_stats(int index);  // of a GPU whose memory was reserved

}  // namespace tessera::cuda
