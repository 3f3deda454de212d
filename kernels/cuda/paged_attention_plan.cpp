// How the GPU's paged attention cuts its work (see kernels/cuda/paged_attention_launcher.h).
#include <algorithm>

#include "kernels/cuda/paged_attention_launcher.h"
#include "kernels/error.h"

namespace tessera::cuda {

PagedAttentionPlan plan_paged_attention(const std::vector<PagedAttentionSequence>& seqs, int64_t m,
                                        int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                        int64_t target_blocks, int64_t min_keys_per_split,
                                        int64_t keys_capacity, int64_t tile_vectors) {
  TESSERA_ASSERT(
      n_kv_heads > 0 && n_heads % n_kv_heads == 0,
      "paged attention: " << n_heads << " query heads over " << n_kv_heads << " KV heads");
  const int64_t group = n_heads / n_kv_heads;
  TESSERA_ASSERT(
      group <= kMaxQueryVectors,
      "paged attention: " << group << " query heads per KV head; at most " << kMaxQueryVectors);
  TESSERA_ASSERT(tile_vectors == kMaxQueryVectors || tile_vectors == kTcQueryVectors,
                 "paged attention: tiles of " << tile_vectors << " query vectors");
  const int64_t rows_per_tile = std::max<int64_t>(1, tile_vectors / group);
  PagedAttentionPlan plan;
  plan.tile_vectors = tile_vectors;
  int64_t most_keys = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const PagedAttentionSequence& q = seqs[s];
    TESSERA_ASSERT(q.row >= 0 && q.rows >= 0 && q.row + q.rows <= m,
                   "paged attention: rows [" << q.row << ", " << q.row + q.rows << ") of " << m);
    plan.sequences.insert(
        plan.sequences.end(),
        {int32_t(q.row), int32_t(q.keys),
         // (kAllKeysVisible and other offsets past the keys: all keys)
         int32_t(std::min(q.visible_offset, q.keys)), int32_t(plan.block_tables.size())});
    plan.block_tables.insert(plan.block_tables.end(), q.blocks.begin(), q.blocks.end());
    for (int64_t r = 0; r < q.rows; r += rows_per_tile) {
      plan.tiles.insert(plan.tiles.end(), {int32_t(s), int32_t(q.row + r),
                                           int32_t(std::min(rows_per_tile, q.rows - r)), 0});
      ++plan.n_tiles;
    }
    if (q.rows > 0) most_keys = std::max(most_keys, q.keys);
  }
  most_keys = std::max(most_keys, keys_capacity);
  // Split the key lists until the grid has about target_blocks blocks.
  const int64_t blocks = std::max<int64_t>(1, plan.n_tiles * n_kv_heads);
  const int64_t min_split = std::max<int64_t>(kKeysPerStep, min_keys_per_split);
  int64_t splits =
      std::clamp<int64_t>((target_blocks + blocks - 1) / blocks, 1,
                          std::max<int64_t>(1, (most_keys + min_split - 1) / min_split));
  int64_t per_split = std::max<int64_t>(1, (most_keys + splits - 1) / splits);
  per_split = (per_split + kKeysPerStep - 1) / kKeysPerStep * kKeysPerStep;
  splits = std::max<int64_t>(1, (most_keys + per_split - 1) / per_split);
  plan.splits = splits;
  plan.keys_per_split = per_split;
  plan.scratch_floats = splits * m * n_heads * (head_dim + 2);
  return plan;
}

}  // namespace tessera::cuda
