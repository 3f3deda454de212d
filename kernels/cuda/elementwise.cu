#include <cuda_runtime.h>

#include "kernels/cuda/elementwise_kernels.h"

namespace tessera::cuda::launch {
namespace {

constexpr int kThreads = 256;

const char* launched() {
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

// The sum over the block of each thread's v (kThreads threads).
__device__ float block_sum(float v) {
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  float total = 0;
  if (threadIdx.x < 32) {
    total = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
    for (int o = 16; o > 0; o /= 2) total += __shfl_xor_sync(0xffffffffu, total, o);
    if (threadIdx.x == 0) warp_sums[0] = total;
  }
  __syncthreads();
  total = warp_sums[0];
  __syncthreads();  // warp_sums may be reused by the caller's next block_sum
  return total;
}

// One block per row. With delta, x += delta first (written back).
__global__ void rms_norm_kernel(float* x, const float* delta, const float* w, float eps, int64_t d,
                                float* y) {
  float* row = x + int64_t(blockIdx.x) * d;
  const float* drow = delta ? delta + int64_t(blockIdx.x) * d : nullptr;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
    float v = row[i];
    if (drow) {
      v += drow[i];
      row[i] = v;
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss) / float(d) + eps);
  float* out = y + int64_t(blockIdx.x) * d;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) out[i] = row[i] * inv * w[i];
}

__global__ void swiglu_kernel(const float* g, const float* u, int64_t n, float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// One block per token row; threads over (head, i < d/2).
__global__ void rope_kernel(float* x, const int32_t* positions, const float* inv_freq,
                            int64_t heads, int64_t d) {
  const int64_t half = d / 2, r = blockIdx.x;
  const float pos = float(positions[r]);
  for (int64_t t = threadIdx.x; t < heads * half; t += blockDim.x) {
    const int64_t h = t / half, i = t % half;
    float s, c;
    sincosf(pos * inv_freq[i], &s, &c);
    float* v = x + (r * heads + h) * d;
    const float a = v[i], b = v[i + half];
    v[i] = a * c - b * s;
    v[i + half] = b * c + a * s;
  }
}

__global__ void embedding_kernel(const float* table, int64_t vocab, const int32_t* ids, int64_t d,
                                 float* out, int32_t* bad) {
  const int64_t r = blockIdx.x;
  const int32_t id = ids[r];
  if (id < 0 || id >= vocab) {
    if (threadIdx.x == 0) *bad = 1;
    return;
  }
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) out[r * d + i] = table[int64_t(id) * d + i];
}

int grid_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return int(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

const char* rms_norm(const float* x, const float* w, float eps, int64_t m, int64_t d, float* y) {
  if (m == 0) return nullptr;
  // x is not written without delta.
  rms_norm_kernel<<<unsigned(m), kThreads>>>(const_cast<float*>(x), nullptr, w, eps, d, y);
  return launched();
}

const char* add_rms_norm(float* x, const float* delta, const float* w, float eps, int64_t m,
                         int64_t d, float* y) {
  if (m == 0) return nullptr;
  rms_norm_kernel<<<unsigned(m), kThreads>>>(x, delta, w, eps, d, y);
  return launched();
}

const char* swiglu(const float* gate, const float* up, int64_t n, float* out) {
  if (n == 0) return nullptr;
  swiglu_kernel<<<grid_for(n), kThreads>>>(gate, up, n, out);
  return launched();
}

const char* rope(float* x, const int32_t* positions, const float* inv_freq, int64_t m,
                 int64_t heads, int64_t d) {
  if (m == 0) return nullptr;
  rope_kernel<<<unsigned(m), kThreads>>>(x, positions, inv_freq, heads, d);
  return launched();
}

const char* embedding(const float* table, int64_t vocab, const int32_t* ids, int64_t n, int64_t d,
                      float* out, int32_t* bad) {
  if (n == 0) return nullptr;
  embedding_kernel<<<unsigned(n), kThreads>>>(table, vocab, ids, d, out, bad);
  return launched();
}

const char* synchronize() {
  const cudaError_t err = cudaDeviceSynchronize();
  return err == cudaSuccess ? nullptr : cudaGetErrorString(err);
}

}  // namespace tessera::cuda::launch
