// Which part of each tensor a tensor-parallel rank holds (Megatron-style). Pure arithmetic.
#pragma once

#include <cstdint>

#include "kernels/error.h"

namespace tessera {

struct Range {
  int64_t begin = 0, end = 0;
  constexpr int64_t size() const { return end - begin; }
  constexpr bool operator==(const Range&) const = default;
};

// Part `index` of `parts` equal parts of n (n must divide evenly).
inline Range even_shard(int64_t n, int parts, int index) {
  TESSERA_ASSERT(parts > 0 && n % parts == 0 && index >= 0 && index < parts,
                 "cannot split " << n << " into " << parts << " equal parts");
  const int64_t per = n / parts;
  return {index * per, (index + 1) * per};
}

// The attention heads of TP rank `rank`: its query heads, and the KV heads they read. When
// tp > kv_heads each KV head is replicated on tp / kv_heads consecutive ranks.
struct HeadShard {
  Range q;   // query heads
  Range kv;  // KV heads
};

inline HeadShard head_shard(int64_t heads, int64_t kv_heads, int tp, int rank) {
  HeadShard s;
  s.q = even_shard(heads, tp, rank);
  if (tp <= kv_heads) {
    s.kv = even_shard(kv_heads, tp, rank);
  } else {
    TESSERA_ASSERT(tp % kv_heads == 0, "tp " << tp << " is not a multiple of " << kv_heads
                                             << " KV heads");
    const int64_t kv = rank / (tp / kv_heads);
    s.kv = {kv, kv + 1};
  }
  return s;
}

}  // namespace tessera
