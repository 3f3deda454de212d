// The bookkeeping of a device memory pool: one region reserved at start (a GPU's cudaMalloc, or
// any range of addresses) handed out as aligned pieces. Offsets only, no device pointers, so
// it is tested on the CPU; the CUDA allocator (kernels/cuda) adds the region's base address.
// Freed pieces merge with free neighbours, so a pool whose pieces are all freed is one free
// range again.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>

namespace tessera {

struct MemoryPoolStats {
  size_t capacity = 0;
  size_t used = 0;          // bytes in live pieces (after alignment)
  size_t peak_used = 0;
  size_t free_ranges = 0;   // free pieces (1 when nothing is allocated)
  size_t largest_free = 0;
  int64_t live = 0;         // pieces allocated and not yet freed
};

class MemoryPool {
 public:
  // capacity bytes, every piece starting at a multiple of alignment (a power of two).
  explicit MemoryPool(size_t capacity, size_t alignment = 256);
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;

  // The offset of a new piece of at least `bytes` (the lowest free range that fits: first fit).
  // Throws, naming the request and the pool's state, when no free range is large enough.
  size_t allocate(size_t bytes);
  // Gives back the piece at `offset`; throws on an offset that is not a live piece.
  void free(size_t offset);
  size_t size_of(size_t offset) const;  // of a live piece (its aligned size)
  MemoryPoolStats stats() const;

 private:
  size_t capacity_, alignment_;
  std::map<size_t, size_t> free_;  // offset -> size, no two adjacent
  std::map<size_t, size_t> live_;  // offset -> size
  size_t used_ = 0, peak_used_ = 0;
};

}  // namespace tessera
