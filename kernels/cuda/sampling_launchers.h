// Logits processing and the selection half of sampling on the GPU (kernels/cuda/sampling.cuh):
// the repetition penalty, and each row's top-k candidates (logit, id) in the order the CPU
// sampler ranks them (larger logit first, lower id on ties; NaN as -inf). The host then draws from
// those k candidates with the request's own seeded generator (Sampler::sample_candidates), so a
// request draws exactly the token it draws on the CPU path; greedy is k = 1. Plain C++17, no CUDA
// types; the launchers exist as tessera::cuda::device and tessera::cuda::emulated.
#pragma once

#include <cstdint>
#include <string>

namespace tessera::cuda {

// The most candidates one row can return (a request with a larger top_k, or none with top_p,
// copies its whole row of logits to the host instead).
inline constexpr int kMaxTopK = 1024;

// logits (rows, vocab) f32 in place: for row r, each id in ids[offsets[r], offsets[r + 1])
// (distinct within a row) has l -> l > 0 ? l / penalty : l * penalty.
// top_k: out_logits and out_ids (rows, k) = the row's best k, best first; 1 <= k <= kMaxTopK,
// k <= vocab.
#define TESSERA_SAMPLING_LAUNCHERS                                                               \
  std::string repetition_penalty(float* logits, int64_t rows, int64_t vocab, const int32_t* ids, \
                                 const int32_t* offsets, float penalty, void* stream);           \
  std::string top_k(const float* logits, int64_t rows, int64_t vocab, int k, float* out_logits,  \
                    int32_t* out_ids, void* stream);

namespace device {
TESSERA_SAMPLING_LAUNCHERS
}  // namespace device
namespace emulated {
TESSERA_SAMPLING_LAUNCHERS
}  // namespace emulated

#undef TESSERA_SAMPLING_LAUNCHERS

}  // namespace tessera::cuda
