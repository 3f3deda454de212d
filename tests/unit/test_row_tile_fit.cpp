// fit_to_row_tile (runtime/row_tile_fit.h) on cases worked by hand from its rule: pad to whole
// tiles from free proposals, else trim a last group of at most half a tile, else leave it.
#include "runtime/row_tile_fit.h"

#include <gtest/gtest.h>

namespace tessera {
namespace {

std::vector<int64_t> fit(int64_t plain, std::vector<int64_t> wanted, std::vector<int64_t> available,
                         int64_t tile = 4, int64_t max_rows = 64) {
  RowTileFit f;
  f.plain = plain;
  f.wanted = std::move(wanted);
  f.available = std::move(available);
  f.tile = tile;
  f.max_rows = max_rows;
  return fit_to_row_tile(f);
}

using V = std::vector<int64_t>;

TEST(RowTileFit, PadsFromFreeProposalsToWholeTiles) {
  EXPECT_EQ(fit(1, {1}, {4}), V{3});             // 2 rows -> 4
  EXPECT_EQ(fit(2, {1, 0}, {4, 4}), (V{1, 1}));  // 3 -> 4: to the one with fewer
  EXPECT_EQ(fit(2, {2, 1}, {4, 4}), (V{3, 3}));  // 5 -> 8 from 5 free, fewest first
  EXPECT_EQ(fit(2, {1, 1}, {1, 2}), (V{1, 1}));  // 4 rows already
}

TEST(RowTileFit, TrimsALastGroupOfAtMostHalfATile) {
  EXPECT_EQ(fit(1, {4}, {4}), V{3});             // 5 -> 4
  EXPECT_EQ(fit(2, {4, 4}, {4, 4}), (V{3, 3}));  // 10 -> 8, from the one with most each time
  EXPECT_EQ(fit(2, {4, 1}, {4, 1}), (V{4, 1}));  // 7: 3 past a tile, more than half: kept
  EXPECT_EQ(fit(3, {1, 1, 0}, {1, 1, 0}), (V{0, 1, 0}));  // 5, nothing free: the first of most
  EXPECT_EQ(fit(2, {4, 2}, {4, 2}), (V{4, 2}));           // 8
  EXPECT_EQ(fit(5, {1, 0, 0, 0, 0}, {1, 0, 0, 0, 0}), (V{0, 0, 0, 0, 0}));  // 6: only 1 to trim
  EXPECT_EQ(fit(3, {4, 4, 4}, {4, 4, 4}), (V{4, 4, 4}));  // 15: 3 past 12, more than half
}

TEST(RowTileFit, LeavesWhatItCannotImprove) {
  EXPECT_EQ(fit(1, {1}, {1}), V{1});          // 2 rows, below a tile, nothing free
  EXPECT_EQ(fit(1, {2}, {2}), V{2});          // 3 rows, below a tile
  EXPECT_EQ(fit(1, {4}, {4}, 1), V{4});       // tile 1: rows cost alike
  EXPECT_EQ(fit(1, {4}, {4}, 8), V{4});       // 5 of 8: one tile
  EXPECT_EQ(fit(1, {0}, {4}), V{0});          // no proposals: nothing to pad from
  EXPECT_EQ(fit(63, {2}, {4}), V{2});         // 65 rows: past the tiled kernels (OpenBLAS)
  EXPECT_EQ(fit(62, {1}, {4}, 4, 64), V{2});  // 63 -> 64, within max_rows
  EXPECT_EQ(fit(61, {4}, {4}, 8, 64), V{4});  // 65 rows: past max_rows, as wanted
}

}  // namespace
}  // namespace tessera
