// Launchers of the GPU's elementwise kernels on raw device pointers (kernels/cuda/elementwise.cuh),
// for kernels/cuda/cuda_ops.cpp and the emulator's tests. Plain C++17, no CUDA types: element
// types are named by Elem, streams are a cudaStream_t passed as void* (nullptr: the default
// stream). Each returns "" or the CUDA runtime's message when the launch failed.
//
// The same launchers exist twice: tessera::cuda::device (nvcc, the GPU) and
// tessera::cuda::emulated (the host compiler against kernels/cuda/simt_emulator.h).
#pragma once

#include <cstdint>
#include <string>

namespace tessera::cuda {

// The element type of activations and weights a kernel reads and writes (float32 arithmetic
// inside every kernel either way); kE4M3 (float8_e4m3fn) only for a KV cache's keys and values.
enum class Elem : uint8_t { kF32, kF16, kBF16, kE4M3 };

// rms_norm: y(m, d) = x / rms(x) * w, the sum of squares in float32 over a block per row.
// add_rms_norm: x += delta (written back), then y = rms_norm(x): the residual add fused with the
//   next norm.
// swiglu: out = gate / (1 + e^-gate) * up over n elements.
// rope: rotate-half RoPE in place on x(m, heads, d): pairs (i, i + d/2) turned by
//   positions[r] * inv_freq[i] (positions i32, inv_freq f32 with d/2 entries).
// gather_columns: y(m, n) = x(m, k)'s columns order[j] (i32 on the GPU), 0 where order[j] < 0.
// embedding: out(n, d) = table[ids[i]]; ids outside [0, vocab) set *bad (an i32 on the GPU,
//   or nullptr when the caller has checked the ids) to 1 and leave their rows unwritten.
#define TESSERA_ELEMENTWISE_LAUNCHERS                                                            \
  std::string rms_norm(Elem t, const void* x, const void* w, float eps, int64_t m, int64_t d,    \
                       void* y, void* stream);                                                   \
  std::string add_rms_norm(Elem t, void* x, const void* delta, const void* w, float eps,         \
                           int64_t m, int64_t d, void* y, void* stream);                         \
  std::string swiglu(Elem t, const void* gate, const void* up, int64_t n, void* out,             \
                     void* stream);                                                              \
  std::string rope(Elem t, void* x, const int32_t* positions, const float* inv_freq, int64_t m,  \
                   int64_t heads, int64_t d, void* stream);                                      \
  std::string gather_columns(Elem t, const void* x, int64_t m, int64_t k, const int32_t* order,  \
                             int64_t n, void* y, void* stream);                                  \
  std::string embedding(Elem t, const void* table, int64_t vocab, const int32_t* ids, int64_t n, \
                        int64_t d, void* out, int32_t* bad, void* stream);

namespace device {
TESSERA_ELEMENTWISE_LAUNCHERS
}  // namespace device
namespace emulated {
TESSERA_ELEMENTWISE_LAUNCHERS
}  // namespace emulated

#undef TESSERA_ELEMENTWISE_LAUNCHERS

}  // namespace tessera::cuda
