// Whether a parallel layout can run a model, decided before any weight is read, with a sentence
// that names the numbers and a layout that would work.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "parallel/process_grid.h"

namespace tessera {

// The blocks a row-parallel weight is stored in: each TP rank's share of its input features
// must be whole blocks (1 element for plain types).
struct InputBlocks {
  std::string tensor;  // one weight with these blocks, to name in a refusal
  std::string format;  // "q4_k", ...
  int64_t elements = 1;
};

// The sizes of a model that constrain its layout (its config, and its file's storage formats).
// io/model_config.h and io/model_store.h make them (layout_dims).
struct ModelDims {
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  int64_t ffn = 0;
  int64_t vocab = 0;
  InputBlocks attention_output;  // o_proj: input features are query heads * head_dim
  InputBlocks ffn_down;          // down_proj: input features are the FFN's
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
