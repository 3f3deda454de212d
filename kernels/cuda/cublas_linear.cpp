// device::linear: the GPU's matmuls through cuBLAS (see kernels/cuda/linear_launchers.h).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/cuda/linear_launchers.h"

namespace tessera::cuda::device {
namespace {

// One handle per host thread and GPU (cuBLAS handles are not to be shared between threads).
cublasHandle_t handle_for_this_thread(std::string* error) {
  thread_local cublasHandle_t handle = nullptr;
  thread_local int handle_device = -1;
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) {
    *error = "no current GPU";
    return nullptr;
  }
  if (handle && handle_device == dev) return handle;
  if (handle) cublasDestroy(handle);
  handle = nullptr;
  const cublasStatus_t s = cublasCreate(&handle);
  if (s != CUBLAS_STATUS_SUCCESS) {
    *error = std::string("cublasCreate failed: ") + cublasGetStatusString(s);
    return nullptr;
  }
  handle_device = dev;
  return handle;
}

cudaDataType_t cuda_type(Elem t) {
  return t == Elem::kF32 ? CUDA_R_32F : t == Elem::kF16 ? CUDA_R_16F : CUDA_R_16BF;
}

}  // namespace

std::string linear(Elem t, const void* x, const void* w, const void* bias, int64_t m, int64_t n,
                   int64_t k, void* y, void* stream) {
  if (m == 0 || n == 0) return {};
  if (t == Elem::kE4M3) return "linear: e4m3 elements are kept only by a KV cache";
  if (m > INT32_MAX || n > INT32_MAX || k > INT32_MAX)
    return "linear dimensions past cuBLAS's int range";
  std::string error;
  cublasHandle_t h = handle_for_this_thread(&error);
  if (!h) return error;
  cublasStatus_t s = cublasSetStream(h, static_cast<cudaStream_t>(stream));
  if (s != CUBLAS_STATUS_SUCCESS)
    return std::string("cublasSetStream: ") + cublasGetStatusString(s);
  // Row-major y(m, n) = x(m, k) w(n, k)^T is column-major y^T(n, m) = w^T(n, k) x^T(k, m): w is
  // column-major (k, n), taken transposed; x is column-major (k, m), taken as it is.
  const float alpha = 1.0f, beta = 0.0f;
  s = cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &alpha, w, cuda_type(t),
                   int(k), x, cuda_type(t), int(k), &beta, y, cuda_type(t), int(n),
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS) return std::string("cublasGemmEx: ") + cublasGetStatusString(s);
  return bias ? add_bias(t, y, bias, m, n, stream) : std::string();
}

}  // namespace tessera::cuda::device
