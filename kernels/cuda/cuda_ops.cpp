#include "kernels/cuda/cuda_ops.h"

#include <cuda_runtime.h>

#include "kernels/cuda/elementwise_launchers.h"

namespace tessera::cuda {
namespace {

Elem elem_of(const Tensor& t, const char* what) {
  switch (t.dtype()) {
    case DType::kF32:
      return Elem::kF32;
    case DType::kF16:
      return Elem::kF16;
    case DType::kBF16:
      return Elem::kBF16;
    default:
      break;
  }
  TESSERA_ASSERT(false, what << " is " << dtype_name(t.dtype()) << ", not f32, f16 or bf16");
  return Elem::kF32;
}

void check_gpu(const Tensor& t, const char* what) {
  TESSERA_ASSERT(t.defined(), what << " is undefined");
  TESSERA_ASSERT(t.device().type == DeviceType::kCUDA,
                 what << " is on " << t.device().str() << ", not a GPU");
}

// The element type every one of the tensors has (they must agree).
Elem common_elem(std::initializer_list<std::pair<const Tensor*, const char*>> tensors) {
  const auto& [first, first_name] = *tensors.begin();
  for (const auto& [t, name] : tensors) {
    check_gpu(*t, name);
    TESSERA_ASSERT(t->dtype() == first->dtype(), name << " is " << dtype_name(t->dtype()) << " but "
                                                      << first_name << " is "
                                                      << dtype_name(first->dtype()));
  }
  return elem_of(*first, first_name);
}

void check_i32(const Tensor& t, const char* what) {
  check_gpu(t, what);
  TESSERA_ASSERT(t.dtype() == DType::kI32, what << " is " << dtype_name(t.dtype()) << ", not i32");
}

void check_launch(const std::string& error, const char* what) {
  TESSERA_CHECK_IO(error.empty(), what << " on the GPU failed: " << error);
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  const Elem t =
      common_elem({{&x, "rms_norm input"}, {&weight, "rms_norm weight"}, {&y, "rms_norm output"}});
  const int64_t d = x.dim(-1), m = x.numel() / d;
  TESSERA_ASSERT(weight.numel() == d && y.numel() == x.numel(), "rms_norm shapes");
  check_launch(device::rms_norm(t, x.raw(), weight.raw(), eps, m, d, y.raw(), nullptr), "rms_norm");
}

void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y) {
  const Elem t = common_elem({{&x, "residual"},
                              {&delta, "residual delta"},
                              {&weight, "rms_norm weight"},
                              {&y, "rms_norm output"}});
  const int64_t d = x.dim(-1), m = x.numel() / d;
  TESSERA_ASSERT(delta.numel() == x.numel() && weight.numel() == d && y.numel() == x.numel(),
                 "add_rms_norm shapes");
  check_launch(
      device::add_rms_norm(t, x.raw(), delta.raw(), weight.raw(), eps, m, d, y.raw(), nullptr),
      "add_rms_norm");
}

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  const Elem t = common_elem({{&gate, "swiglu gate"}, {&up, "swiglu up"}, {&out, "swiglu output"}});
  TESSERA_ASSERT(gate.numel() == up.numel() && out.numel() == up.numel(), "swiglu shapes");
  check_launch(device::swiglu(t, gate.raw(), up.raw(), gate.numel(), out.raw(), nullptr), "swiglu");
}

void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  const Elem t = common_elem({{&x, "rope input"}});
  check_i32(positions, "rope positions");
  check_gpu(inv_freq, "rope frequencies");
  TESSERA_ASSERT(inv_freq.dtype() == DType::kF32, "rope frequencies must be f32");
  TESSERA_ASSERT(x.ndim() == 3,
                 "rope expects (tokens, heads, head_dim), got " << shape_str(x.shape()));
  TESSERA_ASSERT(positions.numel() == x.dim(0) && inv_freq.numel() == x.dim(2) / 2,
                 "rope: positions/frequencies do not match " << shape_str(x.shape()));
  check_launch(device::rope(t, x.raw(), positions.data<int32_t>(), inv_freq.data<float>(), x.dim(0),
                            x.dim(1), x.dim(2), nullptr),
               "rope");
}

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  const Elem t = common_elem({{&table, "embedding table"}, {&out, "embedding output"}});
  check_i32(ids, "token ids");
  const int64_t vocab = table.dim(0), d = table.dim(1);
  TESSERA_ASSERT(out.numel() == ids.numel() * d, "embedding output shape");
  Tensor bad = Tensor::from_i32({0}, {1}).to(table.device());
  check_launch(device::embedding(t, table.raw(), vocab, ids.data<int32_t>(), ids.numel(), d,
                                 out.raw(), bad.data<int32_t>(), nullptr),
               "embedding");
  // (The copy back waits for the kernel.)
  TESSERA_CHECK(bad.to(Device::cpu()).data<int32_t>()[0] == 0,
                "a token id is outside the vocabulary (size " << vocab << ")");
}

void synchronize() {
  const cudaError_t err = cudaDeviceSynchronize();
  TESSERA_CHECK_IO(err == cudaSuccess, "a kernel on the GPU failed: " << cudaGetErrorString(err));
}

}  // namespace tessera::cuda
