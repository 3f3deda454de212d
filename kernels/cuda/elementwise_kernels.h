// Launchers of the GPU's elementwise kernels on raw device pointers, for kernels/cuda/cuda_ops.cpp.
// Plain C++17 (nvcc compiles the .cu side as C++17): no tessera headers, no CUDA types. Each
// returns nullptr, or the CUDA runtime's message when the launch failed.
#pragma once

#include <cstdint>

namespace tessera::cuda::launch {

// y(m, d) = x / rms(x) * w, the sum of squares in float32 over a block per row.
const char* rms_norm(const float* x, const float* w, float eps, int64_t m, int64_t d, float* y);
// x += delta, then y = rms_norm(x): the residual add fused with the next norm.
const char* add_rms_norm(float* x, const float* delta, const float* w, float eps, int64_t m,
                         int64_t d, float* y);
// out = gate / (1 + e^-gate) * up over n elements.
const char* swiglu(const float* gate, const float* up, int64_t n, float* out);
// Rotate-half RoPE in place on x(m, heads, d): pairs (i, i + d/2) turned by positions[r] * inv_freq[i].
const char* rope(float* x, const int32_t* positions, const float* inv_freq, int64_t m,
                 int64_t heads, int64_t d);
// out(n, d) = table[ids[i]]; ids outside [0, vocab) are reported through *bad (set to 1).
const char* embedding(const float* table, int64_t vocab, const int32_t* ids, int64_t n, int64_t d,
                      float* out, int32_t* bad);
// Waits for the GPU; the message of an error a kernel raised, or nullptr.
const char* synchronize();

}  // namespace tessera::cuda::launch
