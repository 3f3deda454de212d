// The repetition penalty and per-row top-k on the GPU (see kernels/cuda/sampling_launchers.h).
// Top-k is a radix select: four passes of 8-bit histograms over the row find the k-th best key,
// then the row's keys above it and, lowest ids first, enough of those equal to it are gathered and
// ranked. Compiled by nvcc (sampling.cu) and, against the emulator, into the tests.
#pragma once

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/sampling_launchers.h"

namespace tessera::cuda::TESSERA_KERNELS {
namespace sampling_detail {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;

__global__ void penalty_kernel(float* logits, int64_t vocab, const int32_t* ids,
                               const int32_t* offsets, float penalty) {
  float* row = logits + int64_t(blockIdx.x) * vocab;
  for (int32_t i = offsets[blockIdx.x] + int32_t(threadIdx.x); i < offsets[blockIdx.x + 1];
       i += int32_t(blockDim.x)) {
    float& l = row[ids[i]];
    l = l > 0 ? l / penalty : l * penalty;
  }
}

// The logit as the sampler sees it (NaN never wins: -inf), and a key whose unsigned order is the
// logit's order (-0 and +0 alike, as they compare equal).
__device__ __forceinline__ float cleaned(float l) {
  return l != l ? -INFINITY : l;
}
__device__ __forceinline__ uint32_t order_key(float l) {
  l = cleaned(l);
  if (l == 0.0f) l = 0.0f;
  uint32_t b;
  memcpy(&b, &l, 4);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// One block per row.
__global__ void __launch_bounds__(kThreads)
    top_k_kernel(const float* logits, int64_t vocab, int k, float* out_logits, int32_t* out_ids) {
  __shared__ int32_t histogram[256];
  __shared__ uint32_t prefix_shared;
  __shared__ int32_t needed_shared, count_shared, warp_counts[kWarps];
  __shared__ float cand_logit[kMaxTopK];
  __shared__ int32_t cand_id[kMaxTopK];
  const float* row = logits + int64_t(blockIdx.x) * vocab;
  const int tid = int(threadIdx.x), lane = tid % 32, warp = tid / 32;

  // The k-th best key, eight bits at a time from the top: `needed` is how many keys equal to the
  // prefix so far (in the remaining bits' order) are still to be taken.
  uint32_t prefix = 0, mask = 0;
  int32_t needed = k;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += kThreads) histogram[b] = 0;
    __syncthreads();
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const uint32_t key = order_key(row[i]);
      if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & 255u], 1);
    }
    __syncthreads();
    if (tid == 0) {
      int32_t above = 0;
      int digit = 255;
      for (; digit > 0 && above + histogram[digit] < needed; --digit) above += histogram[digit];
      prefix_shared = prefix | (uint32_t(digit) << shift);
      needed_shared = needed - above;
    }
    __syncthreads();
    prefix = prefix_shared;
    needed = needed_shared;
    mask |= 255u << shift;
    __syncthreads();  // prefix_shared and needed_shared are rewritten next pass
  }
  const uint32_t threshold = prefix;
  const int32_t greater = k - needed;  // keys above the threshold: all taken

  if (tid == 0) count_shared = 0;
  __syncthreads();
  for (int64_t i = tid; i < vocab; i += kThreads) {
    if (order_key(row[i]) > threshold) {
      const int32_t slot = atomicAdd(&count_shared, 1);
      cand_logit[slot] = cleaned(row[i]);
      cand_id[slot] = int32_t(i);
    }
  }
  // Keys equal to the threshold, lowest ids first: a block-wide count in index order, a chunk of
  // kThreads ids at a time, until `needed` are taken.
  int32_t taken = 0;
  for (int64_t base = 0; base < vocab && taken < needed; base += kThreads) {
    const int64_t i = base + tid;
    const bool equal = i < vocab && order_key(row[i]) == threshold;
    const unsigned ballot = __ballot_sync(0xffffffffu, equal);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    int32_t before = taken, chunk = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) before += warp_counts[w];
      chunk += warp_counts[w];
    }
    before += __popc(ballot & ((1u << lane) - 1u));
    if (equal && before < needed) {
      cand_logit[greater + before] = cleaned(row[i]);
      cand_id[greater + before] = int32_t(i);
    }
    taken += chunk;
    __syncthreads();  // warp_counts is rewritten by the next chunk
  }
  __syncthreads();
  // Rank: candidate c goes where the number of better candidates says (ids are distinct).
  for (int c = tid; c < k; c += kThreads) {
    const float l = cand_logit[c];
    const int32_t id = cand_id[c];
    int rank = 0;
    for (int j = 0; j < k; ++j)
      rank += cand_logit[j] > l || (cand_logit[j] == l && cand_id[j] < id);
    out_logits[int64_t(blockIdx.x) * k + rank] = l;
    out_ids[int64_t(blockIdx.x) * k + rank] = id;
  }
}

}  // namespace sampling_detail

std::string repetition_penalty(float* logits, int64_t rows, int64_t vocab, const int32_t* ids,
                               const int32_t* offsets, float penalty, void* stream) {
  if (rows == 0) return {};
  TESSERA_LAUNCH(unsigned(rows), 128, 0, stream, sampling_detail::penalty_kernel)
  (logits, vocab, ids, offsets, penalty);
  return launch_error();
}

std::string top_k(const float* logits, int64_t rows, int64_t vocab, int k, float* out_logits,
                  int32_t* out_ids, void* stream) {
  if (rows == 0) return {};
  if (k < 1 || k > kMaxTopK || k > vocab)
    return "top-k on the GPU needs 1 <= k <= min(" + std::to_string(kMaxTopK) + ", vocab " +
           std::to_string(vocab) + "), got " + std::to_string(k);
  TESSERA_LAUNCH(unsigned(rows), sampling_detail::kThreads, 0, stream,
                 sampling_detail::top_k_kernel)
  (logits, vocab, k, out_logits, out_ids);
  return launch_error();
}

}  // namespace tessera::cuda::TESSERA_KERNELS
