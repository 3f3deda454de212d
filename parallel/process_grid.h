// The process grid: world = DP x PP x SP x TP, TP fastest (TP peers share a node and its
// NVLink), then SP, then PP, then DP. Pure arithmetic, constexpr, no MPI.
#pragma once

#include <cstdint>
#include <span>

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

// Layers [first, last) of stage `stage` when stage s should take a share weights[s] / sum of the
// n_layers (so slower or smaller nodes can take fewer): boundaries are the rounded cumulative
// shares. Every stage must end with at least one layer; stage_layers_fit() says whether it does.
constexpr int64_t weighted_boundary(int64_t n_layers, std::span<const double> weights, int upto) {
  double total = 0, before = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    total += weights[i];
    if (int(i) < upto) before += weights[i];
  }
  return int64_t(double(n_layers) * before / total + 0.5);
}

constexpr LayerRange weighted_stage_layers(int64_t n_layers, std::span<const double> weights,
                                           int stage) {
  return LayerRange{weighted_boundary(n_layers, weights, stage),
                    weighted_boundary(n_layers, weights, stage + 1)};
}

constexpr bool stage_layers_fit(int64_t n_layers, std::span<const double> weights) {
  for (double w : weights)
    if (!(w > 0)) return false;
  for (int s = 0; s < int(weights.size()); ++s)
    if (weighted_stage_layers(n_layers, weights, s).size() < 1) return false;
  return true;
}

}  // namespace tessera
