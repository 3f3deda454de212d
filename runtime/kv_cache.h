// A rank's paged KV cache: for each of its layers, keys and values of its KV heads in fixed-size
// blocks. Which block holds which of a sequence's rows is the block table the step plan carries
// (runtime/scheduler.h decides it); the pool itself only holds numbers.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/tensor.h"

namespace tessera {

struct KvPoolShape {
  int64_t layers = 0;    // this rank's layers
  int64_t kv_heads = 0;  // this rank's KV heads
  int64_t head_dim = 0;
  int64_t block_size = 16;        // tokens per block
  DType dtype = DType::kF32;      // of the stored keys and values: f32, or f16 (half the memory)
  Device device = Device::cpu();  // where the pool's memory is (the model's device)
  int64_t bytes_per_block() const {
    return 2 * layers * block_size * kv_heads * head_dim * int64_t(dtype_size(dtype));
  }
};

class KvPool {
 public:
  KvPool() = default;
  KvPool(const KvPoolShape& shape, int64_t num_blocks);
  const KvPoolShape& shape() const { return shape_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return shape_.block_size; }
  Tensor& keys(int64_t layer) {
    return k_[size_t(layer)];
  }  // (blocks, kv_heads, block_size, head_dim)
  Tensor& values(int64_t layer) { return v_[size_t(layer)]; }
  // Block dst becomes a copy of block src, in every layer (copy-on-write).
  void copy_block(int32_t src, int32_t dst);
  // Grows the pool to num_blocks, keeping what it holds.
  void grow(int64_t num_blocks);

 private:
  KvPoolShape shape_;
  int64_t num_blocks_ = 0;
  std::vector<Tensor> k_, v_;
};

// The KV cache of one sequence alone, in a pool of its own that grows as needed (blocks in
// order): for tools and tests that run one sequence through LlamaModel::forward.
class SequenceKvCache {
 public:
  SequenceKvCache(const KvPoolShape& shape, int64_t capacity);
  int64_t length() const { return length_; }  // positions of the sequence so far
  int64_t rows() const { return rows_; }      // of which this rank holds K/V
  int64_t capacity() const { return int64_t(blocks_.size()) * pool_.block_size(); }
  KvPool& pool() { return pool_; }
  const std::vector<int32_t>& blocks() const { return blocks_; }
  // Room for at least n rows, keeping what it holds.
  void reserve(int64_t n);
  void advance(int64_t positions, int64_t rows) {
    length_ += positions;
    rows_ += rows;
  }
  void clear() { length_ = rows_ = 0; }

 private:
  KvPool pool_;
  std::vector<int32_t> blocks_;
  int64_t length_ = 0, rows_ = 0;
};

}  // namespace tessera
