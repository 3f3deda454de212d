// The process grid: world = DP x PP x SP x TP, TP fastest (TP peers share a node and its
// NVLink), then SP, then PP, then DP. Pure arithmetic, constexpr, no MPI.
#pragma once

#include <cstdint>

namespace tessera {

struct GridShape {
  int dp = 1, pp = 1, sp = 1, tp = 1;
  constexpr int world() const { return dp * pp * sp * tp; }
  constexpr bool operator==(const GridShape&) const = default;
};

struct GridCoord {
  int dp = 0, pp = 0, sp = 0, tp = 0;
  constexpr bool operator==(const GridCoord&) const = default;
};

constexpr GridCoord grid_coord(const GridShape& g, int rank) {
  return GridCoord{rank / (g.tp * g.sp * g.pp), (rank / (g.tp * g.sp)) % g.pp,
                   (rank / g.tp) % g.sp, rank % g.tp};
}

constexpr int grid_rank(const GridShape& g, const GridCoord& c) {
  return ((c.dp * g.pp + c.pp) * g.sp + c.sp) * g.tp + c.tp;
}

// Layers [first, last) of pipeline stage `stage` when n_layers are split over `stages` stages as
// evenly as possible (earlier stages take the remainder).
struct LayerRange {
  int64_t first = 0, last = 0;
  constexpr int64_t size() const { return last - first; }
  constexpr bool operator==(const LayerRange&) const = default;
};

constexpr LayerRange stage_layers(int64_t n_layers, int stages, int stage) {
  const int64_t base = n_layers / stages, extra = n_layers % stages;
  const int64_t first = stage * base + (stage < extra ? stage : extra);
  return LayerRange{first, first + base + (stage < extra ? 1 : 0)};
}

}  // namespace tessera
