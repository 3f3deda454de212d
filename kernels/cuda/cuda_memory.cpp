#include "kernels/cuda/cuda_memory.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>

#include "kernels/backend.h"
#include "kernels/cuda/simt_capture.h"
#include "kernels/device.h"
#include "kernels/error.h"

namespace tessera::cuda {
namespace {

#define TESSERA_CUDA_CHECK(call, what)                                                             \
  do {                                                                                             \
    const cudaError_t tessera_err_ = (call);                                                       \
    TESSERA_CHECK_IO(tessera_err_ == cudaSuccess, what << ": " << cudaGetErrorName(tessera_err_)   \
                                                       << " (" << cudaGetErrorString(tessera_err_) \
                                                       << ")");                                    \
  } while (0)

struct Region {
  char* base = nullptr;
  std::unique_ptr<MemoryPool> pool;
  bool emulated = false;          // host memory, computed on by the CUDA emulator
  cudaStream_t stream = nullptr;  // the GPU's compute stream (every kernel and copy of this rank)
};

// The CUDA allocator: pieces of each GPU's reserved region; copies on the GPU's compute stream
// (unified addressing tells which way), waited for, so that they are ordered with the kernels
// before them and the host may use what they wrote.
class CudaAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t bytes, int index) override {
    std::lock_guard<std::mutex> lock(mutex_);
    Region& r = region(index);
    return r.base + r.pool->allocate(bytes);
  }
  void deallocate(void* ptr, int index) override {
    std::lock_guard<std::mutex> lock(mutex_);
    Region& r = region(index);
    r.pool->free(size_t(static_cast<char*>(ptr) - r.base));
  }
  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    if (bytes == 0) return;
    const bool host_end = dst_dev.is_cpu() || src_dev.is_cpu();
    if (emulated(dst_dev) || emulated(src_dev)) {  // all host memory
      if (simt::capturing()) {  // a CUDA graph's copy, run at each replay
        TESSERA_ASSERT(!host_end, "a copy to or from host memory inside a CUDA graph capture");
        simt::record([=] {
          std::memcpy(dst, src, bytes);
          return std::string();
        });
        return;
      }
      std::memcpy(dst, src, bytes);
      return;
    }
    const cudaStream_t s =
        static_cast<cudaStream_t>(stream(dst_dev.is_cpu() ? src_dev.index : dst_dev.index));
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cudaStreamIsCapturing(s, &capture);
    if (capture != cudaStreamCaptureStatusNone) {  // a graph's copy node: no waiting
      TESSERA_ASSERT(!host_end, "a copy to or from host memory inside a CUDA graph capture");
      TESSERA_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s),
                         "copy of " << bytes << " bytes inside a CUDA graph capture");
      return;
    }
    TESSERA_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, s),
        "copy of " << bytes << " bytes from " << src_dev.str() << " to " << dst_dev.str());
    TESSERA_CUDA_CHECK(cudaStreamSynchronize(s), "copy of " << bytes << " bytes from "
                                                            << src_dev.str() << " to "
                                                            << dst_dev.str());
  }
  void reserve(int index, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    TESSERA_CHECK(index >= 0 && index < device_count(),
                  "cuda:" << index << " does not exist (" << device_count() << " GPUs)");
    TESSERA_CHECK(regions_.count(index) == 0, "cuda:" << index << " memory is already reserved");
    TESSERA_CUDA_CHECK(cudaSetDevice(index), "selecting cuda:" << index);
    size_t free_bytes = 0, total = 0;
    TESSERA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total), "querying cuda:" << index << " memory");
    Region r;
    void* base = nullptr;
    const cudaError_t err = cudaMalloc(&base, bytes);
    TESSERA_CHECK(err == cudaSuccess, "cannot reserve " << bytes << " bytes on cuda:" << index
                                                        << " (" << free_bytes << " of " << total
                                                        << " free): " << cudaGetErrorString(err));
    r.base = static_cast<char*>(base);
    r.pool = std::make_unique<MemoryPool>(bytes, 256);
    TESSERA_CUDA_CHECK(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking),
                       "creating a stream on cuda:" << index);
    regions_[index] = std::move(r);
  }
  void reserve_emulated(int index, size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    TESSERA_CHECK(regions_.count(index) == 0, "cuda:" << index << " memory is already reserved");
    Region r;
    r.base = static_cast<char*>(std::aligned_alloc(256, (bytes + 255) / 256 * 256));
    TESSERA_CHECK(r.base != nullptr,
                  "cannot reserve " << bytes << " bytes of host memory for an emulated GPU");
    r.pool = std::make_unique<MemoryPool>(bytes, 256);
    r.emulated = true;
    regions_[index] = std::move(r);
  }
  bool is_emulated(int index) { return emulated(Device::cuda(index)); }
  void* stream(int index) {
    std::lock_guard<std::mutex> lock(mutex_);
    return region(index).stream;
  }
  MemoryPoolStats stats(int index) {
    std::lock_guard<std::mutex> lock(mutex_);
    return region(index).pool->stats();
  }

 private:
  bool emulated(Device d) {
    if (d.type != DeviceType::kCUDA) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = regions_.find(d.index);
    return it != regions_.end() && it->second.emulated;
  }
  Region& region(int index) {
    const auto it = regions_.find(index);
    TESSERA_CHECK(it != regions_.end(),
                  "no memory reserved on cuda:" << index << " (reserve it at start)");
    return it->second;
  }
  std::mutex mutex_;
  std::map<int, Region> regions_;  // freed with the process (the driver reclaims it)
};

}  // namespace

Backend& cuda_backend();  // cuda_backend.cpp

namespace {

CudaAllocator& cuda_allocator() {
  static CudaAllocator* a = [] {
    auto* p = new CudaAllocator;  // lives as long as any tensor might
    register_allocator(DeviceType::kCUDA, p);
    register_backend(DeviceType::kCUDA, &cuda_backend());
    return p;
  }();
  return *a;
}

}  // namespace

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

std::string no_device_reason() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  return n == 0 ? "no CUDA device" : "";
}

size_t free_memory(int index) {
  TESSERA_CUDA_CHECK(cudaSetDevice(index), "selecting cuda:" << index);
  size_t free_bytes = 0, total = 0;
  TESSERA_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total), "querying cuda:" << index << " memory");
  return free_bytes;
}

std::string device_name(int index) {
  if (is_emulated(index)) return "emulated";
  cudaDeviceProp p;
  TESSERA_CUDA_CHECK(cudaGetDeviceProperties(&p, index), "querying cuda:" << index);
  return p.name;
}

namespace {
std::string version_string(int v) {
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}
}  // namespace

std::string driver_version() {
  int v = 0;
  return cudaDriverGetVersion(&v) == cudaSuccess && v > 0 ? version_string(v) : "none";
}

std::string runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? version_string(v) : "unknown";
}

void reserve_memory(int index, size_t bytes) {
  cuda_allocator().reserve(index, bytes);
}

void emulate_gpu(int index, size_t bytes) {
  cuda_allocator().reserve_emulated(index, bytes);
}

bool is_emulated(int index) {
  return cuda_allocator().is_emulated(index);
}

void* compute_stream(int index) {
  return cuda_allocator().stream(index);
}

void synchronize(int index) {
  if (is_emulated(index)) return;  // the emulator runs each launch to its end
  TESSERA_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(compute_stream(index))),
                     "a kernel on cuda:" << index);
}

MemoryPoolStats memory_stats(int index) {
  return cuda_allocator().stats(index);
}

}  // namespace tessera::cuda
