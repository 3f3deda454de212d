#include "parallel/layout.h"

#include <sstream>

#include "kernels/error.h"

namespace tessera {

namespace {

// Why tp ranks would cut a row-parallel weight's blocks, if they would (one rank holds whole
// rows, which a model file stores as whole blocks).
std::optional<std::string> cut_blocks(int tp, const ModelDims& m) {
  if (tp == 1) return std::nullopt;
  const struct {
    const InputBlocks& blocks;
    int64_t features;
  } weights[] = {{m.attention_output, m.heads * m.head_dim}, {m.ffn_down, m.ffn}};
  for (const auto& w : weights) {
    const int64_t share = w.features / tp;
    if (share % w.blocks.elements == 0) continue;
    std::ostringstream os;
    os << "tp " << tp << " would cut the " << w.blocks.format << " blocks (" << w.blocks.elements
       << " elements) of " << w.blocks.tensor << ": each rank's " << share << " of its "
       << w.features << " input features are not whole blocks";
    return os.str();
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> layout_problem(const GridShape& g, int world, const ModelDims& m) {
  std::ostringstream os;
  if (g.dp < 1 || g.pp < 1 || g.sp < 1 || g.tp < 1) {
    os << "every parallel size must be at least 1 (dp " << g.dp << ", pp " << g.pp << ", sp "
       << g.sp << ", tp " << g.tp << ")";
  } else if (g.world() != world) {
    os << "dp " << g.dp << " x pp " << g.pp << " x sp " << g.sp << " x tp " << g.tp << " = "
       << g.world() << " ranks, but " << world << " were started";
  } else if (m.heads % g.tp != 0) {
    os << "tp " << g.tp << " does not divide the " << m.heads << " query heads";
  } else if (m.kv_heads % g.tp != 0 && g.tp % m.kv_heads != 0) {
    os << "tp " << g.tp << " neither divides the " << m.kv_heads
       << " KV heads nor is a multiple of them (to replicate each)";
  } else if (m.ffn % g.tp != 0) {
    os << "tp " << g.tp << " does not divide the FFN size " << m.ffn;
  } else if (m.vocab % g.tp != 0) {
    os << "tp " << g.tp << " does not divide the vocabulary of " << m.vocab;
  } else if (g.pp > m.layers) {
    os << "pp " << g.pp << " is more pipeline stages than the model's " << m.layers << " layers";
  } else if (const auto cut = cut_blocks(g.tp, m)) {
    os << *cut;
  } else {
    return std::nullopt;
  }
  return os.str();
}

std::optional<GridShape> suggest_layout(int world, const ModelDims& m) {
  for (int tp = world; tp >= 1; --tp) {
    if (world % tp != 0) continue;
    const GridShape g{1, world / tp, 1, tp};
    if (!layout_problem(g, world, m)) return g;
  }
  return std::nullopt;
}

void check_layout(const GridShape& g, int world, const ModelDims& m) {
  const auto problem = layout_problem(g, world, m);
  if (!problem) return;
  const auto s = suggest_layout(world, m);
  if (s) {
    TESSERA_FAIL("this layout cannot run the model: " << *problem << "; with " << world
                                                      << " ranks, --tp " << s->tp << " --pp "
                                                      << s->pp << " would work");
  }
  TESSERA_FAIL("this layout cannot run the model: " << *problem << "; no tp x pp layout of "
                                                    << world << " ranks fits it");
}

}  // namespace tessera
