#include "runtime/block_allocator.h"

#include <algorithm>

#include "kernels/error.h"

namespace tessera {

BlockAllocator::BlockAllocator(int64_t num_blocks)
    : refs_(size_t(num_blocks), 0), lru_at_(size_t(num_blocks)), hash_(size_t(num_blocks)) {
  TESSERA_CHECK(num_blocks >= 1, "the KV cache needs at least one block, got " << num_blocks);
  TESSERA_CHECK(num_blocks <= INT32_MAX, num_blocks << " KV blocks are too many");
  free_.reserve(size_t(num_blocks));
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));
}

int32_t BlockAllocator::allocate() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    TESSERA_ASSERT(!lru_.empty(), "no KV block available (the scheduler checks before allocating)");
    b = lru_.front();
    lru_.pop_front();
    by_hash_.erase(*hash_[size_t(b)]);
    hash_[size_t(b)].reset();
  }
  refs_[size_t(b)] = 1;
  return b;
}

void BlockAllocator::retain(int32_t block) {
  TESSERA_ASSERT(block >= 0 && block < num_blocks() && refs_[size_t(block)] > 0,
                 "retain of block " << block << ", which is not in use");
  ++refs_[size_t(block)];
}

void BlockAllocator::release(int32_t block) {
  TESSERA_ASSERT(block >= 0 && block < num_blocks() && refs_[size_t(block)] > 0,
                 "release of block " << block << ", which is not in use (a double free)");
  if (--refs_[size_t(block)] > 0) return;
  if (hash_[size_t(block)]) {
    lru_.push_back(block);
    lru_at_[size_t(block)] = std::prev(lru_.end());
  } else {
    free_.push_back(block);
  }
}

void BlockAllocator::publish(int32_t block, uint64_t hash) {
  TESSERA_ASSERT(refs_.at(size_t(block)) > 0, "publish of block " << block << ", not in use");
  if (hash_[size_t(block)] || by_hash_.count(hash)) return;  // the first holder stays
  hash_[size_t(block)] = hash;
  by_hash_[hash] = block;
}

std::optional<int32_t> BlockAllocator::lookup(uint64_t hash) {
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  const int32_t b = it->second;
  if (refs_[size_t(b)] == 0) lru_.erase(lru_at_[size_t(b)]);
  ++refs_[size_t(b)];
  return b;
}

std::optional<int32_t> BlockAllocator::peek(uint64_t hash) const {
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) return std::nullopt;
  return it->second;
}

std::optional<uint64_t> BlockAllocator::hash_of(int32_t block) const {
  return hash_.at(size_t(block));
}

void BlockAllocator::check_invariants() const {
  std::vector<int> seen(refs_.size(), 0);
  for (int32_t b : free_) {
    TESSERA_ASSERT(refs_[size_t(b)] == 0 && !hash_[size_t(b)], "free block " << b << " is in use or hashed");
    ++seen[size_t(b)];
  }
  for (int32_t b : lru_) {
    TESSERA_ASSERT(refs_[size_t(b)] == 0 && hash_[size_t(b)], "cached block " << b << " is in use or unhashed");
    ++seen[size_t(b)];
  }
  for (size_t b = 0; b < refs_.size(); ++b) {
    TESSERA_ASSERT(refs_[b] >= 0, "block " << b << " has " << refs_[b] << " references");
    TESSERA_ASSERT(seen[b] == (refs_[b] == 0 ? 1 : 0),
                   "block " << b << " with " << refs_[b] << " references is listed " << seen[b]
                            << " times as free or cached");
    if (hash_[b]) {
      const auto it = by_hash_.find(*hash_[b]);
      TESSERA_ASSERT(it != by_hash_.end() && it->second == int32_t(b),
                     "block " << b << "'s hash does not lead back to it");
    }
  }
  for (const auto& [h, b] : by_hash_)
    TESSERA_ASSERT(hash_[size_t(b)] == h, "the hash index points at block " << b << " for another hash");
}

}  // namespace tessera
