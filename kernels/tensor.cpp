#include "kernels/tensor.h"

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

namespace tessera {

std::string Device::str() const {
  return is_cpu() ? std::string("cpu") : "cuda:" + std::to_string(index);
}

namespace {

class CpuAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t bytes, int) override {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded == 0 ? 64 : rounded);
    TESSERA_CHECK(p != nullptr, "out of host memory allocating " << bytes << " bytes");
    return p;
  }
  void deallocate(void* ptr, int) override { std::free(ptr); }
  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    TESSERA_ASSERT(dst_dev.is_cpu() && src_dev.is_cpu(), "CPU allocator asked to copy off-host");
    std::memcpy(dst, src, bytes);
  }
};

struct Registry {
  CpuAllocator cpu;
  DeviceAllocator* cuda = nullptr;
};
Registry& registry() {
  static Registry r;
  return r;
}

}  // namespace

DeviceAllocator& allocator_for(DeviceType type) {
  if (type == DeviceType::kCPU) return registry().cpu;
  TESSERA_CHECK(registry().cuda != nullptr,
                "this tessera was built without CUDA (or no GPU backend is initialised)");
  return *registry().cuda;
}

void register_allocator(DeviceType type, DeviceAllocator* allocator) {
  TESSERA_ASSERT(type == DeviceType::kCUDA, "only the CUDA allocator can be registered");
  registry().cuda = allocator;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "(";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << ")";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Storage::Storage(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  data_ = allocator_for(device.type).allocate(bytes, device.index);
}

Storage::~Storage() {
  allocator_for(device_.type).deallocate(data_, device_.index);
}

namespace {
thread_local KeepAllocations* current_keeper = nullptr;
}  // namespace

KeepAllocations::KeepAllocations() : outer_(current_keeper) { current_keeper = this; }
KeepAllocations::~KeepAllocations() { current_keeper = outer_; }

Tensor Tensor::empty(Shape shape, DType dtype, Device device) {
  for (int64_t d : shape) TESSERA_CHECK(d >= 0, "negative dimension in shape " << shape_str(shape));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dtype;
  t.storage_ = std::make_shared<Storage>(t.nbytes(), device);
  if (current_keeper && !device.is_cpu()) current_keeper->kept_.push_back(t.storage_);
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dtype, Device device) {
  TESSERA_CHECK(device.is_cpu(), "Tensor::zeros on " << device.str() << " is done by the backend");
  Tensor t = empty(std::move(shape), dtype, device);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

namespace {
template <class T>
Tensor from_values(const std::vector<T>& values, Shape shape, DType dtype) {
  TESSERA_CHECK(int64_t(values.size()) == shape_numel(shape),
                values.size() << " values do not fill shape " << shape_str(shape));
  Tensor t = Tensor::empty(std::move(shape), dtype);
  std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}
}  // namespace

Tensor Tensor::from_f32(const std::vector<float>& values, Shape shape) {
  return from_values(values, std::move(shape), DType::kF32);
}

Tensor Tensor::from_i32(const std::vector<int32_t>& values, Shape shape) {
  return from_values(values, std::move(shape), DType::kI32);
}

Tensor Tensor::from_i64(const std::vector<int64_t>& values, Shape shape) {
  return from_values(values, std::move(shape), DType::kI64);
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  if (i < 0) i += n;
  TESSERA_ASSERT(i >= 0 && i < n, "dim " << i << " of a " << n << "-d tensor");
  return shape_[size_t(i)];
}

void Tensor::check_type(bool matches) const {
  TESSERA_ASSERT(storage_ != nullptr, "access to an undefined tensor");
  TESSERA_ASSERT(matches, "typed access does not match dtype " << dtype_name(dtype_));
}

Tensor Tensor::view(Shape shape) const {
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      TESSERA_ASSERT(infer < 0, "view with two -1 dimensions");
      infer = int(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) shape[size_t(infer)] = known == 0 ? 0 : numel() / known;
  TESSERA_ASSERT(shape_numel(shape) == numel(),
                 "cannot view " << shape_str(shape_) << " as " << shape_str(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::rows(int64_t begin, int64_t end) const {
  TESSERA_ASSERT(ndim() >= 1 && 0 <= begin && begin <= end && end <= shape_[0],
                 "rows [" << begin << ", " << end << ") of " << shape_str(shape_));
  const int64_t row = shape_[0] == 0 ? 0 : numel() / shape_[0];
  Tensor t = *this;
  t.offset_ += dtype_bytes(dtype_, begin * row);  // (a quantized row is whole blocks)
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::to(Device device) const {
  Tensor t = empty(shape_, dtype_, device);
  const Device src = this->device();
  DeviceAllocator& a = allocator_for(device.is_cpu() ? src.type : device.type);
  a.copy(t.raw(), device, raw(), src, nbytes());
  return t;
}

std::vector<float> Tensor::to_f32_vector() const {
  Tensor host = device().is_cpu() ? *this : to(Device::cpu());
  std::vector<float> out(static_cast<size_t>(numel()));
  convert_to_f32(dtype_, host.raw(), out.data(), out.size());
  return out;
}

}  // namespace tessera
