// Linear layers on the GPU over weights kept quantized (every block format of kernels/quant.h:
// GGUF's q8_0 ... q6_k, the int4 groups i4_g32 and i4_g128 of AWQ / GPTQ, FP8 f8_e4m3),
// activations f32, f16 or bf16, float32 accumulation. Plain C++17, no CUDA types.
//   quant_linear: y(m, n) = x(m, k) @ w(n, k)^T [+ bias(n)] for up to kQuantLinearMaxRows rows of
//     x (decode batches: every bucket a decode graph captures): one warp per output feature and
//     kQuantLinearTileRows rows of x reads each of its weight's blocks once, decodes them in
//     registers and multiplies them with those rows;
//   dequantize_rows: out(rows, k) = rows ids[r] of w (row r where ids is null) decoded, in the
//     element type of out: the prefill's weight tiles for the dense GEMM, and embedding lookups
//     in a quantized table.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cuda/elementwise_launchers.h"

namespace tessera::cuda {

// The quantized formats the GPU computes on.
enum class QFormat : uint8_t {
  kQ8_0, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ4_K, kQ5_K, kQ6_K, kI4G32, kI4G128, kF8E4M3
};

inline constexpr int64_t kQuantLinearTileRows = 8;
inline constexpr int64_t kQuantLinearMaxRows = 64;

#define TESSERA_QUANT_LINEAR_LAUNCHERS                                                           \
  std::string quant_linear(Elem t, QFormat f, const void* x, const void* w, const void* bias,    \
                           int64_t m, int64_t n, int64_t k, void* y, void* stream);              \
  std::string dequantize_rows(Elem t, QFormat f, const void* w, int64_t k, const int32_t* ids,   \
                              int64_t rows, void* out, void* stream);

namespace device {
TESSERA_QUANT_LINEAR_LAUNCHERS
}  // namespace device
namespace emulated {
TESSERA_QUANT_LINEAR_LAUNCHERS
}  // namespace emulated

#undef TESSERA_QUANT_LINEAR_LAUNCHERS

}  // namespace tessera::cuda
