#include "kernels/cuda/cuda_ops.h"

#include "kernels/cuda/elementwise_kernels.h"

namespace tessera::cuda {
namespace {

void check_gpu(const Tensor& t, DType dtype, const char* what) {
  TESSERA_ASSERT(t.defined(), what << " is undefined");
  TESSERA_ASSERT(t.device().type == DeviceType::kCUDA,
                 what << " is on " << t.device().str() << ", not a GPU");
  TESSERA_ASSERT(t.dtype() == dtype, what << " is " << dtype_name(t.dtype()) << ", not "
                                          << dtype_name(dtype));
}

void check_launch(const char* error, const char* what) {
  TESSERA_CHECK_IO(error == nullptr, what << " on the GPU failed: " << error);
}

}  // namespace

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y) {
  check_gpu(x, DType::kF32, "rms_norm input");
  check_gpu(weight, DType::kF32, "rms_norm weight");
  check_gpu(y, DType::kF32, "rms_norm output");
  const int64_t d = x.dim(-1), m = x.numel() / d;
  TESSERA_ASSERT(weight.numel() == d && y.numel() == x.numel(), "rms_norm shapes");
  check_launch(launch::rms_norm(x.data<float>(), weight.data<float>(), eps, m, d, y.data<float>()),
               "rms_norm");
}

void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y) {
  check_gpu(x, DType::kF32, "residual");
  check_gpu(delta, DType::kF32, "residual delta");
  check_gpu(weight, DType::kF32, "rms_norm weight");
  check_gpu(y, DType::kF32, "rms_norm output");
  const int64_t d = x.dim(-1), m = x.numel() / d;
  TESSERA_ASSERT(delta.numel() == x.numel() && weight.numel() == d && y.numel() == x.numel(),
                 "add_rms_norm shapes");
  check_launch(launch::add_rms_norm(x.data<float>(), delta.data<float>(), weight.data<float>(),
                                    eps, m, d, y.data<float>()),
               "add_rms_norm");
}

void swiglu(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_gpu(gate, DType::kF32, "swiglu gate");
  check_gpu(up, DType::kF32, "swiglu up");
  check_gpu(out, DType::kF32, "swiglu output");
  TESSERA_ASSERT(gate.numel() == up.numel() && out.numel() == up.numel(), "swiglu shapes");
  check_launch(launch::swiglu(gate.data<float>(), up.data<float>(), gate.numel(),
                              out.data<float>()),
               "swiglu");
}

void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq) {
  check_gpu(x, DType::kF32, "rope input");
  check_gpu(positions, DType::kI32, "rope positions");
  check_gpu(inv_freq, DType::kF32, "rope frequencies");
  TESSERA_ASSERT(x.ndim() == 3, "rope expects (tokens, heads, head_dim), got "
                                    << shape_str(x.shape()));
  TESSERA_ASSERT(positions.numel() == x.dim(0) && inv_freq.numel() == x.dim(2) / 2,
                 "rope: positions/frequencies do not match " << shape_str(x.shape()));
  check_launch(launch::rope(x.data<float>(), positions.data<int32_t>(), inv_freq.data<float>(),
                            x.dim(0), x.dim(1), x.dim(2)),
               "rope");
}

void embedding(const Tensor& table, const Tensor& ids, Tensor& out) {
  check_gpu(table, DType::kF32, "embedding table");
  check_gpu(ids, DType::kI32, "token ids");
  check_gpu(out, DType::kF32, "embedding output");
  const int64_t vocab = table.dim(0), d = table.dim(1);
  TESSERA_ASSERT(out.numel() == ids.numel() * d, "embedding output shape");
  Tensor bad = Tensor::from_i32({0}, {1}).to(table.device());
  check_launch(launch::embedding(table.data<float>(), vocab, ids.data<int32_t>(), ids.numel(), d,
                                 out.data<float>(), bad.data<int32_t>()),
               "embedding");
  // (The copy back waits for the kernel.)
  TESSERA_CHECK(bad.to(Device::cpu()).data<int32_t>()[0] == 0,
                "a token id is outside the vocabulary (size " << vocab << ")");
}

void synchronize() { check_launch(launch::synchronize(), "a kernel"); }

}  // namespace tessera::cuda
