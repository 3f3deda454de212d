#include "runtime/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "kernels/error.h"

namespace tessera {

KvPool::KvPool(const KvPoolShape& shape, int64_t num_blocks) : shape_(shape), num_blocks_(num_blocks) {
  TESSERA_CHECK(num_blocks >= 1, "a KV pool needs at least one block");
  TESSERA_CHECK(shape.dtype == DType::kF32 || shape.dtype == DType::kF16,
                "a KV cache holds f32 or f16, not " << dtype_name(shape.dtype));
  for (int64_t i = 0; i < shape.layers; ++i) {
    k_.push_back(Tensor::empty({num_blocks, shape.kv_heads, shape.block_size, shape.head_dim}, shape.dtype));
    v_.push_back(Tensor::empty({num_blocks, shape.kv_heads, shape.block_size, shape.head_dim}, shape.dtype));
  }
}

void KvPool::copy_block(int32_t src, int32_t dst) {
  TESSERA_ASSERT(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_,
                 "copy of block " << src << " to " << dst << " in a pool of " << num_blocks_);
  for (auto* tensors : {&k_, &v_})
    for (Tensor& t : *tensors) std::memcpy(t.rows(dst, dst + 1).raw(), t.rows(src, src + 1).raw(),
                                           t.rows(src, src + 1).nbytes());
}

void KvPool::store(int64_t layer, const int32_t* blocks, int64_t row, const float* k,
                   const float* v) {
  const int64_t bs = shape_.block_size, hd = shape_.head_dim, heads = shape_.kv_heads;
  const int64_t slot = row % bs, first = int64_t(blocks[row / bs]) * heads * bs;
  const size_t elem = dtype_size(shape_.dtype);
  char* kd = static_cast<char*>(k_[size_t(layer)].raw());
  char* vd = static_cast<char*>(v_[size_t(layer)].raw());
  for (int64_t h = 0; h < heads; ++h) {
    const size_t at = size_t((first + h * bs + slot) * hd) * elem;
    convert_from_f32(shape_.dtype, k + h * hd, kd + at, size_t(hd));
    convert_from_f32(shape_.dtype, v + h * hd, vd + at, size_t(hd));
  }
}

void KvPool::grow(int64_t num_blocks) {
  if (num_blocks <= num_blocks_) return;
  KvPool bigger(shape_, num_blocks);
  for (int64_t l = 0; l < shape_.layers; ++l) {
    std::memcpy(bigger.k_[size_t(l)].raw(), k_[size_t(l)].raw(), k_[size_t(l)].nbytes());
    std::memcpy(bigger.v_[size_t(l)].raw(), v_[size_t(l)].raw(), v_[size_t(l)].nbytes());
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
