// Where a tensor's memory lives. The CPU backend is always built; CUDA registers itself when built.
#pragma once

#include <cstddef>
#include <string>

namespace tessera {

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static constexpr Device cpu() { return {DeviceType::kCPU, 0}; }
  static constexpr Device cuda(int i) { return {DeviceType::kCUDA, i}; }
  constexpr bool is_cpu() const { return type == DeviceType::kCPU; }
  constexpr bool operator==(const Device&) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

// Allocates and frees raw memory on one kind of device. The CPU allocator hands out 64-byte
// aligned host memory; a CUDA allocator (kernels/cuda) registers itself at start.
class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  virtual void* allocate(size_t bytes, int index) = 0;
  virtual void deallocate(void* ptr, int index) = 0;
  // Copies bytes between any two devices this allocator understands (host <-> device, etc.).
  virtual void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) = 0;
};

DeviceAllocator& allocator_for(DeviceType type);  // throws if that backend was not built
void register_allocator(DeviceType type, DeviceAllocator* allocator);

}  // namespace tessera
