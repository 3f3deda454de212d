#include "runtime/kv_cache.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/error.h"
#include "kernels/ops.h"

namespace tessera {

KvPool::KvPool(const KvPoolShape& shape, int64_t num_blocks, std::vector<ops::KvScale> scales)
    : shape_(shape), num_blocks_(num_blocks), scales_(std::move(scales)) {
  TESSERA_CHECK(num_blocks >= 1, "a KV pool needs at least one block");
  TESSERA_CHECK(
      shape.dtype == DType::kF32 || shape.dtype == DType::kF16 || shape.dtype == DType::kE4M3,
      "a KV cache holds f32, f16 or e4m3, not " << dtype_name(shape.dtype));
  if (scales_.empty() || shape.dtype != DType::kE4M3) scales_.assign(size_t(shape.layers), {});
  TESSERA_CHECK(int64_t(scales_.size()) == shape.layers,
                scales_.size() << " KV cache scales for " << shape.layers << " layers");
  for (const ops::KvScale& s : scales_)
    TESSERA_CHECK(
        std::isfinite(s.key) && s.key > 0 && std::isfinite(s.value) && s.value > 0,
        "a KV cache scale must be positive and finite, not " << s.key << " / " << s.value);
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

}  // namespace tessera
