// The GPU's paged attention (kernels/cuda/paged_attention.cuh): the same operation as
// ops::paged_attention_accumulate (kernels/ops.h) — every sequence's keys, living in blocks of
// one pool, added to the online-softmax state of its query rows — for decode (one row per
// sequence) and prefill chunks (many rows, causal) alike. Plain C++17, no CUDA types.
//
// How the work is cut (PagedAttentionPlan, made on the host by plan_paged_attention):
//   - a tile is some consecutive query rows of one sequence; one thread block takes a tile and
//     one KV head, so the keys and values of that head are read once for all the query heads of
//     its group (GQA) and all the tile's rows;
//   - a long key list is split into pieces of keys_per_split keys (split-KV, the third grid
//     dimension), so that a few long decodes still fill the GPU; each piece writes a partial state
//     to scratch, and a second kernel merges the pieces into the state in piece order.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/elementwise_launchers.h"

namespace tessera::cuda {

// One sequence of the batch, as the host knows it (the same fields as ops::PagedSequence).
struct PagedAttentionSequence {
  int64_t row = 0, rows = 0;    // its query rows [row, row + rows)
  std::vector<int32_t> blocks;  // its block table (at least ceil(keys / block_size) entries)
  int64_t keys = 0;             // keys it has
  int64_t visible_offset = 0;   // query row r (from `row`) sees key j when j <= r + offset
};

// What the launcher reads (copied to the GPU as they are): int32 arrays.
struct PagedAttentionPlan {
  static constexpr int kTileFields = 4;  // per tile: sequence, first row, rows, (unused)
  static constexpr int kSeqFields = 4;   // per sequence: row, keys, visible_offset, table start
  std::vector<int32_t> tiles;            // (n_tiles, kTileFields)
  std::vector<int32_t> sequences;        // (n_sequences, kSeqFields)
  std::vector<int32_t> block_tables;     // every sequence's table, one after another
  int64_t n_tiles = 0;
  int64_t splits = 1;          // pieces of every key list (some may be empty)
  int64_t keys_per_split = 0;  // a multiple of kKeysPerStep
  int64_t scratch_floats = 0;  // the partial states: splits * m * n_heads * (d + 2)
  int64_t tile_vectors = 16;   // query vectors a tile holds at most (rows x heads of a group)
};

// Keys a thread block takes into shared memory at a time, and the most query vectors (rows x
// heads of one group) one block holds.
inline constexpr int kKeysPerStep = 32;
inline constexpr int kMaxQueryVectors = 16;
// Tiles of the tensor-core kernel (bf16 queries, head_dim a multiple of 16, prefill): 64 query
// vectors, 16 per warp, so each step's keys and values are read once for four times the rows.
inline constexpr int kTcQueryVectors = 64;
inline bool tensor_core_attention(Elem q_type, int64_t head_dim) {
  return q_type == Elem::kBF16 && head_dim % 16 == 0 && head_dim <= 256;
}

// target_blocks: about how many thread blocks fill the GPU (a few per SM); the key lists are
// split until the grid has about that many, but no piece is shorter than min_keys_per_split.
// keys_capacity > 0 splits as if the longest key list had that many keys (at least), so that
// plans of the same sequences and rows have one shape for any key counts up to it.
// tile_vectors: kMaxQueryVectors (the float32 kernel) or kTcQueryVectors (tensor cores).
PagedAttentionPlan plan_paged_attention(const std::vector<PagedAttentionSequence>& seqs, int64_t m,
                                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                        int64_t target_blocks, int64_t min_keys_per_split,
                                        int64_t keys_capacity = 0,
                                        int64_t tile_vectors = kMaxQueryVectors);

struct PagedAttentionArgs {
  Elem q_type = Elem::kF32, kv_type = Elem::kF32;
  const void* q = nullptr;       // (m, n_heads, head_dim)
  const void* k_pool = nullptr;  // (num_blocks, n_kv_heads, block_size, head_dim)
  const void* v_pool = nullptr;  // likewise
  int64_t m = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, block_size = 0;
  float scale = 1.0f;    // of the scores (an e4m3 cache's key scale folded in)
  float v_scale = 1.0f;  // of the values read (an e4m3 cache's value scale; 1 otherwise)
  // The plan's arrays, on the GPU, and its sizes.
  const int32_t* tiles = nullptr;
  const int32_t* sequences = nullptr;
  const int32_t* block_tables = nullptr;
  int64_t n_tiles = 0, splits = 1, keys_per_split = 0;
  int64_t tile_vectors = kMaxQueryVectors;  // the plan's: kTcQueryVectors takes tensor cores
  float* scratch = nullptr;  // plan.scratch_floats floats on the GPU
  // The state, f32 on the GPU, added to: acc (m, n_heads, head_dim), mx and sum (m, n_heads).
  float* acc = nullptr;
  float* mx = nullptr;
  float* sum = nullptr;
  void* stream = nullptr;
};

namespace device {
std::string paged_attention(const PagedAttentionArgs& a);
}  // namespace device
namespace emulated {
std::string paged_attention(const PagedAttentionArgs& a);
}  // namespace emulated

}  // namespace tessera::cuda
