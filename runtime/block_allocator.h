// The KV-cache block allocator: metadata only (block ids, reference counts, content hashes), no
// memory. Every rank's KV pool has the same number of blocks, so the leader's allocator decides
// for all of them; the step plans carry the block ids.
//
// A block is free (on the free list), in use (reference count >= 1), or cached: unreferenced
// but holding the K/V of a full block of tokens whose hash is known, so that a later sequence
// with the same prefix can take it instead of computing it again. Cached blocks are evicted
// least recently released first when the free list is empty.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <unordered_map>
#include <vector>

namespace tessera {

class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);

  int64_t num_blocks() const { return int64_t(refs_.size()); }
  // Blocks an allocate() could return now: free ones and evictable cached ones.
  int64_t available() const { return int64_t(free_.size() + lru_.size()); }
  int64_t in_use() const { return num_blocks() - available(); }
  int64_t cached() const { return int64_t(lru_.size()); }

  // A block with reference count 1: from the free list, else the least recently released cached
  // block (forgetting its hash). Throws when none is available.
  int32_t allocate();
  // One more reference to a block in use.
  void retain(int32_t block);
  // One reference fewer; at zero the block is cached if it has a hash, free otherwise.
  void release(int32_t block);
  int64_t refs(int32_t block) const { return refs_.at(size_t(block)); }

  // Prefix caching. publish() records that a block in use holds a full block of tokens with
  // this hash (the hash of its tokens and of every token before them); a block already
  // published under the hash stays the one lookup() finds.
  void publish(int32_t block, uint64_t hash);
  // The block published under `hash`, with one more reference (taken out of the cache if it
  // was unreferenced), or nothing.
  std::optional<int32_t> lookup(uint64_t hash);
  std::optional<uint64_t> hash_of(int32_t block) const;
  // The block published under `hash`, untouched.
  std::optional<int32_t> peek(uint64_t hash) const;

  // Throws naming the first inconsistency (for tests): every block is in exactly one state,
  // cached blocks have hashes, the hash index points at blocks holding those hashes.
  void check_invariants() const;

 private:
  std::vector<int64_t> refs_;
  std::vector<int32_t> free_;  // a stack: the most recently freed block is reused first
  std::list<int32_t> lru_;     // cached blocks, least recently released first
  std::vector<std::list<int32_t>::iterator> lru_at_;  // per block, valid when cached
  std::vector<std::optional<uint64_t>> hash_;         // per block
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace tessera
