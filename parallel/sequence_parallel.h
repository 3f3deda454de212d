// Sequence parallelism's attention over the SP group (parallel/sp_split.h says who holds which
// positions); its collectives live here, not in the model.
//   - A prompt is split into contiguous chunks, one per SP rank (ring attention): each rank's
//     queries attend causally to its own chunk's keys and fully to every earlier chunk's, which
//     travel around the ring (each rank's keys and values are passed on sp - 1 times); the partial
//     results combine by log-sum-exp.
//   - A decode row attends on every SP rank over the positions that rank keeps; the partial
//     softmax states of the whole batch go to every rank in one gather and are merged in rank
//     order, so every rank ends with the same result.
#pragma once

#include <cstdint>

#include "kernels/ops.h"
#include "parallel/communicator.h"

namespace tessera {

// A partial attention state whose three tensors are views of one buffer, so that it travels in one
// message: packed (m * n_heads * (d + 2)) f32 = acc, then mx, then sum.
struct PackedAttentionState {
  Tensor packed;
  ops::AttentionState state;
  static PackedAttentionState empty(int64_t m, int64_t n_heads, int64_t d, Device device);
};

class SequenceParallelAttention {
 public:
  SequenceParallelAttention() = default;
  explicit SequenceParallelAttention(Communicator* sp) : sp_(sp) {}
  bool active() const { return sp_ != nullptr && sp_->size() > 1; }

  // out (m, n_heads, d) = attention of this rank's chunk of a prompt of n_prompt tokens: queries q
  // (m, n_heads, d) and its own keys and values k, v (m, n_kv_heads, d), f32.
  void prompt(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_prompt, float scale,
              Tensor& out) const;
  // out (m, n_heads, d) = decode rows' attention over every SP rank's keys, from this rank's
  // partial state of them (the attention over the positions it keeps).
  void merge_decode(const PackedAttentionState& mine, Tensor& out) const;

 private:
  static constexpr int kRingTag = 21;  // the ring's key/value blocks
  Communicator* sp_ = nullptr;
};

}  // namespace tessera
