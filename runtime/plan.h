// Deployment arithmetic for `tessera plan`: for each layout of N nodes x G GPUs, the weight bytes
// and KV-cache capacity of the busiest rank, whether it fits, and a recommendation (TP inside a
// node, PP across nodes). Pure arithmetic on the model config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "parallel/process_grid.h"

namespace tessera {

struct PlanOptions {
  int nodes = 1;
  int gpus_per_node = 8;
  uint64_t gpu_memory = 80ull << 30;  // bytes per rank (a GPU's, or a CPU rank's share of a node)
  // How the weights are held: f32, f16, bf16, or a quantized format or mix as `tessera convert
  // --quantize` makes it (q8_0, ..., q4_k_m: matrices quantized, vectors f32). A GPU holds
  // quantized files' weights as bf16 today; the CPU keeps them as stored.
  std::string weights = "bf16";
  int kv_bytes = 2;                   // bf16 KV cache
  double reserve = 0.10;              // share of GPU memory kept for activations and the runtime
  int64_t context = 0;                // tokens one sequence must be able to hold (0: the model's)
};

struct RankLoad {
  int64_t parameters = 0;       // this rank's share of the weights
  int64_t weight_bytes = 0;     // their bytes in PlanOptions::weights (each tensor's format)
  int64_t kv_bytes_per_token = 0;
};

struct LayoutPlan {
  GridShape layout;
  int64_t weight_bytes = 0;     // the busiest rank's
  int64_t kv_tokens = 0;        // tokens of KV cache each model replica holds (the tightest rank)
  bool fits = false;            // weights fit and one sequence of `context` tokens fits the cache
  std::string why_not;          // when it does not fit, or the layout cannot run the model
};

// The parameters and KV bytes per token of the rank at pipeline stage `stage` of `layout`.
RankLoad rank_load(const ModelConfig& c, const GridShape& layout, int stage, const PlanOptions& o);
int64_t total_parameters(const ModelConfig& c);
// Every layout with tp dividing the GPUs of a node, pp dividing the rest, dp the remainder.
std::vector<LayoutPlan> plan_layouts(const ModelConfig& c, const PlanOptions& o);
// The recommended plan: fits, the largest tp up to a node, then the fewest stages, then the most
// replicas; nullptr when nothing fits.
const LayoutPlan* recommend(const std::vector<LayoutPlan>& plans);

}  // namespace tessera
