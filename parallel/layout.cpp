#include "parallel/layout.h"

#include <sstream>

#include "kernels/error.h"

namespace tessera {

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
