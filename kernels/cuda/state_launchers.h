// Small GPU kernels around attention and the residual stream (kernels/cuda/state.cuh). Plain
// C++17, no CUDA types; the launchers exist as tessera::cuda::device and ::emulated.
//   add: a += b over n elements (both of type t).
//   convert: dst (type to) = src (type from) over n elements, through float32.
//   fill_uniform: out (rows, cols) of type t = the block at (row0, col0) of a (.., full_cols)
//     tensor whose element e is offset + scale * (2u - 1), u = uniform_bits(seed, e) (see
//     kernels/ops.h: the same numbers as the CPU's).
//   round_through: x (f32, n) = x / scale rounded to type t, widened back and times scale (what a
//     t cache keeps: the scale is 1 but for e4m3).
//   attention_finish: out (n, d) of type t = acc / sum (0 where sum is 0); acc f32 (n, d), sum (n).
//   attention_merge: state (acc, mx, sum) = its union with other's (log-sum-exp), n rows of d.
//   store_kv: row i of k and v (rows, width) f32 written to the pools (type t, rows of width =
//     kv_heads * d) at key slot slots[i] = block * block_size + slot (-1: not kept): head h's
//     part goes to ((block * kv_heads + h) * block_size + slot) * d, divided by k_scale (keys) or
//     v_scale (values) first.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/cuda/elementwise_launchers.h"

namespace tessera::cuda {

#define TESSERA_STATE_LAUNCHERS                                                                    \
  std::string add(Elem t, void* a, const void* b, int64_t n, void* stream);                        \
  std::string convert(Elem from, const void* src, Elem to, void* dst, int64_t n, void* stream);    \
  std::string fill_uniform(Elem t, void* out, int64_t rows, int64_t cols, int64_t full_cols,       \
                           int64_t row0, int64_t col0, uint64_t seed, float offset, float scale,   \
                           void* stream);                                                          \
  std::string round_through(Elem t, float* x, int64_t n, float scale, void* stream);               \
  std::string attention_finish(Elem t, const float* acc, const float* sum, int64_t n, int64_t d,   \
                               void* out, void* stream);                                           \
  std::string attention_merge(float* acc, float* mx, float* sum, const float* other_acc,           \
                              const float* other_mx, const float* other_sum, int64_t n, int64_t d, \
                              void* stream);                                                       \
  std::string store_kv(Elem t, void* k_pool, void* v_pool, const float* k, const float* v,         \
                       const int64_t* slots, int64_t rows, int64_t kv_heads, int64_t block_size,   \
                       int64_t d, float k_scale, float v_scale, void* stream);

namespace device {
TESSERA_STATE_LAUNCHERS
}  // namespace device
namespace emulated {
TESSERA_STATE_LAUNCHERS
}  // namespace emulated

#undef TESSERA_STATE_LAUNCHERS

}  // namespace tessera::cuda
