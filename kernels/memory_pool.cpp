#include "kernels/memory_pool.h"

#include <algorithm>

#include "kernels/error.h"

namespace tessera {

MemoryPool::MemoryPool(size_t capacity, size_t alignment)
    : capacity_(capacity / alignment * alignment), alignment_(alignment) {
  TESSERA_CHECK(alignment > 0 && (alignment & (alignment - 1)) == 0,
                "memory pool alignment " << alignment << " is not a power of two");
  TESSERA_CHECK(capacity_ > 0, "a memory pool of " << capacity << " bytes holds no piece of "
                                                   << alignment << " bytes");
  free_[0] = capacity_;
}

size_t MemoryPool::allocate(size_t bytes) {
  const size_t want = std::max<size_t>(alignment_, (bytes + alignment_ - 1) / alignment_ * alignment_);
  TESSERA_CHECK(want >= bytes, "a request of " << bytes << " bytes overflows");
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < want) continue;
    const size_t at = it->first, rest = it->second - want;
    free_.erase(it);
    if (rest > 0) free_[at + want] = rest;
    live_[at] = want;
    used_ += want;
    peak_used_ = std::max(peak_used_, used_);
    return at;
  }
  const MemoryPoolStats s = stats();
  TESSERA_FAIL("device memory pool exhausted: " << bytes << " bytes requested, " << s.used
                                                << " of " << s.capacity << " in use, the largest "
                                                << "free range " << s.largest_free << " bytes");
}

void MemoryPool::free(size_t offset) {
  const auto live = live_.find(offset);
  TESSERA_ASSERT(live != live_.end(), "memory pool: offset " << offset << " is not a live piece");
  size_t at = offset, size = live->second;
  used_ -= size;
  live_.erase(live);
  // Merge with the free range after it, then with the one before it.
  const auto next = free_.lower_bound(at);
  if (next != free_.end() && next->first == at + size) {
    size += next->second;
    free_.erase(next);
  }
  const auto after = free_.lower_bound(at);
  if (after != free_.begin()) {
    const auto prev = std::prev(after);
    if (prev->first + prev->second == at) {
      at = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[at] = size;
}

size_t MemoryPool::size_of(size_t offset) const {
  const auto live = live_.find(offset);
  TESSERA_ASSERT(live != live_.end(), "memory pool: offset " << offset << " is not a live piece");
  return live->second;
}

MemoryPoolStats MemoryPool::stats() const {
  MemoryPoolStats s;
  s.capacity = capacity_;
  s.used = used_;
  s.peak_used = peak_used_;
  s.free_ranges = free_.size();
  for (const auto& [at, size] : free_) s.largest_free = std::max(s.largest_free, size);
  s.live = int64_t(live_.size());
  return s;
}

}  // namespace tessera
