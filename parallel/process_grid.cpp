#include "parallel/process_grid.h"

namespace tessera {

// The arithmetic is constexpr; these checks run at compile time.
static_assert(grid_coord(GridShape{2, 2, 1, 2}, 5) == GridCoord{1, 0, 0, 1});
static_assert(grid_rank(GridShape{2, 2, 1, 2}, GridCoord{1, 0, 0, 1}) == 5);
static_assert(stage_layers(30, 4, 0) == LayerRange{0, 8});
static_assert(stage_layers(30, 4, 3) == LayerRange{23, 30});
constexpr double kTwoToOne[] = {2.0, 1.0};
static_assert(weighted_stage_layers(30, kTwoToOne, 0) == LayerRange{0, 20});
static_assert(weighted_stage_layers(30, kTwoToOne, 1) == LayerRange{20, 30});

}  // namespace tessera
