// Tensor: a typed, contiguous, row-major n-d view of reference-counted device memory.
// Views (reshape, row ranges) share the storage; copies are explicit (to(), clone()).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/device.h"
#include "kernels/dtype.h"
#include "kernels/error.h"

namespace tessera {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "(2, 3)"
int64_t shape_numel(const Shape& s);

class Storage {
 public:
  Storage(size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  Device device_;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(Shape shape, DType dtype, Device device = Device::cpu());
  static Tensor zeros(Shape shape, DType dtype, Device device = Device::cpu());
  static Tensor from_f32(const std::vector<float>& values, Shape shape);
  static Tensor from_i32(const std::vector<int32_t>& values, Shape shape);
  static Tensor from_i64(const std::vector<int64_t>& values, Shape shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const;  // negative counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return dtype_bytes(dtype_, numel()); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }

  void* raw() const { return static_cast<char*>(storage_->data()) + offset_; }
  // Typed access; T must match the dtype (uint16_t for f16 and bf16).
  template <typename T>
  T* data() const {
    check_type(matches<T>());
    return static_cast<T*>(raw());
  }

  Tensor view(Shape shape) const;                 // same elements, new shape (-1 allowed once)
  Tensor rows(int64_t begin, int64_t end) const;  // [begin, end) along dim 0, a view
  Tensor to(Device device) const;                 // copy to another device (or a clone)
  Tensor clone() const { return to(device()); }
  std::vector<float> to_f32_vector() const;       // host copy as float32 (dequantized)

 private:
  template <typename T>
  bool matches() const {
    if constexpr (std::is_same_v<std::remove_const_t<T>, float>) return dtype_ == DType::kF32;
    if constexpr (std::is_same_v<std::remove_const_t<T>, int32_t>) return dtype_ == DType::kI32;
    if constexpr (std::is_same_v<std::remove_const_t<T>, int64_t>) return dtype_ == DType::kI64;
    if constexpr (std::is_same_v<std::remove_const_t<T>, uint8_t>) return dtype_ == DType::kU8;
    if constexpr (std::is_same_v<std::remove_const_t<T>, uint16_t>)
      return dtype_ == DType::kF16 || dtype_ == DType::kBF16;
    return false;
  }
  void check_type(bool matches) const;
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes into storage_
  Shape shape_;
  DType dtype_ = DType::kF32;
};

// While one is alive on a thread, every Tensor::empty off the host on that thread is also held by
// it: a CUDA graph's kernels keep using the memory they were captured with, whatever becomes of
// the tensors on the host, so the graph holds it. They nest (the inner one holds what is made
// while it lives).
class KeepAllocations {
 public:
  KeepAllocations();
  ~KeepAllocations();
  KeepAllocations(const KeepAllocations&) = delete;
  KeepAllocations& operator=(const KeepAllocations&) = delete;
  // What it holds, handed over (it holds nothing after).
  std::vector<std::shared_ptr<Storage>> take() { return std::move(kept_); }

 private:
  friend class Tensor;
  std::vector<std::shared_ptr<Storage>> kept_;
  KeepAllocations* outer_;
};

}  // namespace tessera
