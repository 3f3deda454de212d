// The forward's elementwise ops on GPU tensors (f32, f16 or bf16, all of one call alike; float32
// arithmetic), each the counterpart of
// the CPU op of the same name in kernels/ops.h and tested against it on random data
// (tests/unit/test_cuda_ops.cpp). Kernels are queued on the default stream; synchronize() waits
// and reports what a kernel raised.
#pragma once

#include "kernels/tensor.h"

namespace tessera::cuda {

void rms_norm(const Tensor& x, const Tensor& weight, float eps, Tensor& y);
// x += delta, then y = rms_norm(x, weight): the residual add fused with the next norm.
void add_rms_norm(Tensor& x, const Tensor& delta, const Tensor& weight, float eps, Tensor& y);
void swiglu(const Tensor& gate, const Tensor& up, Tensor& out);
// x (tokens, heads, head_dim); positions (tokens) i32 and inv_freq (head_dim / 2) f32, on the GPU.
void rope_inplace(Tensor& x, const Tensor& positions, const Tensor& inv_freq);
// out (ids, dim) = table rows; throws naming the problem when an id is outside the table.
void embedding(const Tensor& table, const Tensor& ids, Tensor& out);
void synchronize();

}  // namespace tessera::cuda
