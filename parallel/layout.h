// Whether a parallel layout can run a model, decided before any weight is read, with a sentence
// that names the numbers and a layout that would work.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "parallel/process_grid.h"

namespace tessera {

// The sizes of a model that constrain its layout (taken from its config).
struct ModelDims {
  int64_t layers = 0, heads = 0, kv_heads = 0, ffn = 0, vocab = 0;
};

// Empty when the layout works; otherwise why not, as one sentence.
std::optional<std::string> layout_problem(const GridShape& layout, int world_size,
                                          const ModelDims& model);
// The layout for world_size ranks with the largest TP (then PP) that works with dp = sp = 1,
// if any.
std::optional<GridShape> suggest_layout(int world_size, const ModelDims& model);
// Throws tessera::Error with layout_problem's sentence (plus a suggestion) when there is one.
void check_layout(const GridShape& layout, int world_size, const ModelDims& model);

}  // namespace tessera
