// The device memory pool's bookkeeping under thousands of random allocations and frees, against
// a shadow list of the live pieces: pieces aligned, inside the pool, never overlapping; the use
// figures equal the shadow's; everything freed leaves one free range.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/error.h"
#include "kernels/memory_pool.h"

namespace tessera {
namespace {

struct Piece {
  size_t offset, size, asked;
};

void check_against_shadow(const MemoryPool& pool, std::vector<Piece> live, size_t alignment) {
  std::sort(live.begin(), live.end(), [](const Piece& a, const Piece& b) { return a.offset < b.offset; });
  size_t used = 0;
  for (size_t i = 0; i < live.size(); ++i) {
    const Piece& p = live[i];
    ASSERT_EQ(p.offset % alignment, 0u);
    ASSERT_GE(p.size, p.asked);
    ASSERT_LE(p.offset + p.size, pool.stats().capacity);
    if (i + 1 < live.size()) {
      ASSERT_LE(p.offset + p.size, live[i + 1].offset) << "pieces overlap";
    }
    ASSERT_EQ(pool.size_of(p.offset), p.size);
    used += p.size;
  }
  const MemoryPoolStats s = pool.stats();
  ASSERT_EQ(s.used, used);
  ASSERT_EQ(s.live, int64_t(live.size()));
  ASSERT_LE(s.used + s.largest_free, s.capacity);
}

TEST(MemoryPool, RandomAllocationsNeverOverlapAndAllFreedIsOneRange) {
  std::mt19937_64 g(11);
  size_t refused = 0;  // over all configurations: the exhausted path must be taken too
  for (int config = 0; config < 20; ++config) {
    const size_t alignment = size_t(1) << (4 + g() % 6);  // 16 .. 512
    const size_t capacity = 1 + g() % (4u << 20);
    MemoryPool pool(capacity, alignment);
    std::vector<Piece> live;
    size_t peak = 0;
    for (int op = 0; op < 2000; ++op) {
      if (live.empty() || g() % 5 < 3) {
        const size_t asked = g() % 5 == 0 ? 0 : 1 + g() % (capacity / 8 + 1);
        try {
          const size_t at = pool.allocate(asked);
          live.push_back({at, pool.size_of(at), asked});
        } catch (const Error& e) {
          ++refused;
          // Refused only when no free range is large enough.
          ASSERT_LT(pool.stats().largest_free, std::max(asked, alignment)) << e.what();
          ASSERT_NE(std::string(e.what()).find("exhausted"), std::string::npos);
        }
      } else {
        const size_t i = g() % live.size();
        pool.free(live[i].offset);
        live.erase(live.begin() + std::ptrdiff_t(i));
      }
      size_t used = 0;
      for (const Piece& p : live) used += p.size;
      peak = std::max(peak, used);
      if (op % 97 == 0) check_against_shadow(pool, live, alignment);
    }
    check_against_shadow(pool, live, alignment);
    EXPECT_EQ(pool.stats().peak_used, peak);
    std::shuffle(live.begin(), live.end(), g);
    for (const Piece& p : live) pool.free(p.offset);
    const MemoryPoolStats s = pool.stats();
    EXPECT_EQ(s.used, 0u);
    EXPECT_EQ(s.free_ranges, 1u);
    EXPECT_EQ(s.largest_free, s.capacity);
    EXPECT_EQ(s.capacity, capacity / alignment * alignment);
  }
  EXPECT_GT(refused, 0u);
}

TEST(MemoryPool, FirstFitReusesTheLowestHoleAndMerges) {
  MemoryPool pool(4096, 256);
  const size_t a = pool.allocate(256), b = pool.allocate(300), c = pool.allocate(1);
  EXPECT_EQ(a, 0u);
  EXPECT_EQ(b, 256u);
  EXPECT_EQ(pool.size_of(b), 512u);
  EXPECT_EQ(c, 768u);
  pool.free(a);
  pool.free(b);  // merges with a's range: one hole of 768 at 0
  EXPECT_EQ(pool.stats().free_ranges, 2u);
  EXPECT_EQ(pool.allocate(700), 0u);
  pool.free(c);
  pool.free(0);
  EXPECT_EQ(pool.stats().free_ranges, 1u);
}

TEST(MemoryPool, BadUseIsRefusedWithTheNumbers) {
  MemoryPool pool(1024, 256);
  try {
    pool.allocate(2000);
    FAIL() << "a request larger than the pool was granted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("2000 bytes requested"), std::string::npos) << m;
    EXPECT_NE(m.find("of 1024 in use"), std::string::npos) << m;
  }
  EXPECT_THROW(pool.free(512), Error);  // not a live piece
  EXPECT_THROW(MemoryPool(1000, 300), Error);  // alignment not a power of two
  EXPECT_THROW(MemoryPool(100, 256), Error);   // smaller than one piece
}

}  // namespace
}  // namespace tessera
