#include "runtime/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "kernels/error.h"
#include "kernels/ops.h"

namespace tessera {

KvPool::KvPool(const KvPoolShape& shape, int64_t num_blocks)
    : shape_(shape), num_blocks_(num_blocks) {
  TESSERA_CHECK(num_blocks >= 1, "a KV pool needs at least one block");
  TESSERA_CHECK(shape.dtype == DType::kF32 || shape.dtype == DType::kF16,
                "a KV cache holds f32 or f16, not " << dtype_name(shape.dtype));
  for (int64_t i = 0; i < shape.layers; ++i) {
    k_.push_back(Tensor::empty({num_blocks, shape.kv_heads, shape.block_size, shape.head_dim},
                               shape.dtype, shape.device));
    v_.push_back(Tensor::empty({num_blocks, shape.kv_heads, shape.block_size, shape.head_dim},
                               shape.dtype, shape.device));
  }
}

void KvPool::copy_block(int32_t src, int32_t dst) {
  TESSERA_ASSERT(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_,
                 "copy of block " << src << " to " << dst << " in a pool of " << num_blocks_);
  for (auto* tensors : {&k_, &v_})
    for (Tensor& t : *tensors) {
      Tensor to = t.rows(dst, dst + 1);
      ops::copy(t.rows(src, src + 1), to);
    }
}

void KvPool::grow(int64_t num_blocks) {
  if (num_blocks <= num_blocks_) return;
  KvPool bigger(shape_, num_blocks);
  for (int64_t l = 0; l < shape_.layers; ++l) {
    Tensor k = bigger.k_[size_t(l)].rows(0, num_blocks_),
           v = bigger.v_[size_t(l)].rows(0, num_blocks_);
    ops::copy(k_[size_t(l)], k);
    ops::copy(v_[size_t(l)], v);
  }
  *this = std::move(bigger);
}

SequenceKvCache::SequenceKvCache(const KvPoolShape& shape, int64_t capacity)
    : pool_(shape, std::max<int64_t>(1, (capacity + shape.block_size - 1) / shape.block_size)) {
  for (int32_t b = 0; b < pool_.num_blocks(); ++b) blocks_.push_back(b);
}

void SequenceKvCache::reserve(int64_t n) {
  const int64_t want = (n + pool_.block_size() - 1) / pool_.block_size();
  if (want <= int64_t(blocks_.size())) return;
  pool_.grow(want);
  for (int32_t b = int32_t(blocks_.size()); b < want; ++b) blocks_.push_back(b);
}

}  // namespace tessera
