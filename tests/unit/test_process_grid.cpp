#include <gtest/gtest.h>

#include <vector>

#include "parallel/process_grid.h"

namespace tessera {
namespace {

TEST(ProcessGrid, RankCoordRoundTripTpFastest) {
  const GridShape g{2, 2, 2, 2};
  for (int r = 0; r < g.world(); ++r) {
    const GridCoord c = grid_coord(g, r);
    EXPECT_EQ(grid_rank(g, c), r);
    EXPECT_EQ(c.tp, r % 2);  // neighbouring ranks are TP peers
  }
}

TEST(ProcessGrid, StageLayersCoverEveryLayerOnce) {
  for (int64_t layers : {1, 7, 30, 80})
    for (int stages = 1; stages <= layers && stages <= 8; ++stages) {
      int64_t next = 0;
      for (int s = 0; s < stages; ++s) {
        const LayerRange r = stage_layers(layers, stages, s);
        EXPECT_EQ(r.first, next);
        EXPECT_GE(r.size(), layers / stages);
        EXPECT_LE(r.size(), layers / stages + 1);
        next = r.last;
      }
      EXPECT_EQ(next, layers);
    }
}

TEST(ProcessGrid, WeightedStagesFollowTheirShares) {
  const std::vector<double> w = {1, 1, 2};
  EXPECT_EQ(weighted_stage_layers(80, w, 0), (LayerRange{0, 20}));
  EXPECT_EQ(weighted_stage_layers(80, w, 1), (LayerRange{20, 40}));
  EXPECT_EQ(weighted_stage_layers(80, w, 2), (LayerRange{40, 80}));
  EXPECT_TRUE(stage_layers_fit(80, w));
  const std::vector<double> starved = {100, 1};
  EXPECT_FALSE(stage_layers_fit(30, starved));  // the second stage would get no layer
  const std::vector<double> negative = {1, -1};
  EXPECT_FALSE(stage_layers_fit(30, negative));
}

}  // namespace
}  // namespace tessera
