// A rank's paged KV cache: for each of its layers, keys and values of its KV heads in fixed-size
// blocks. Which block holds which of a sequence's rows is the block table the step plan carries
// (runtime/scheduler.h decides it); the pool itself only holds numbers.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/ops.h"
#include "kernels/tensor.h"

namespace tessera {

struct KvPoolShape {
  int64_t layers = 0;    // this rank's layers
  int64_t kv_heads = 0;  // this rank's KV heads
  int64_t head_dim = 0;
  int64_t block_size = 16;        // tokens per block
  DType dtype = DType::kF32;      // of the stored keys and values: f32, f16, or e4m3 (a quarter)
  Device device = Device::cpu();  // where the pool's memory is (the model's device)
  int64_t bytes_per_block() const {
    return 2 * layers * block_size * kv_heads * head_dim * int64_t(dtype_size(dtype));
  }
};

class KvPool {
 public:
  KvPool() = default;
  // scales: each layer's, for an e4m3 cache (it keeps e4m3(k / key), e4m3(v / value)); none: all
  // 1. Other types keep keys and values as they are (every scale 1).
  KvPool(const KvPoolShape& shape, int64_t num_blocks, std::vector<ops::KvScale> scales = {});
  const KvPoolShape& shape() const { return shape_; }
  ops::KvScale scale(int64_t layer) const { return scales_[size_t(layer)]; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return shape_.block_size; }
  Tensor& keys(int64_t layer) {
    return k_[size_t(layer)];
  }  // (blocks, kv_heads, block_size, head_dim)
  Tensor& values(int64_t layer) { return v_[size_t(layer)]; }
  // Block dst becomes a copy of block src, in every layer (copy-on-write).
  void copy_block(int32_t src, int32_t dst);

 private:
  KvPoolShape shape_;
  int64_t num_blocks_ = 0;
  std::vector<Tensor> k_, v_;
  std::vector<ops::KvScale> scales_;  // (layers)
};

}  // namespace tessera
