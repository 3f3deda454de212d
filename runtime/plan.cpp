#include "runtime/plan.h"

#include <algorithm>

#include "parallel/layout.h"

namespace tessera {

int64_t total_parameters(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t layer = c.q_size() * h * 2 + c.kv_size() * h * 2 + 3 * c.intermediate_size * h +
                        2 * h + (c.attention_bias ? c.q_size() + 2 * c.kv_size() : 0);
  return c.num_layers * layer + c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + h;
}

RankLoad rank_load(const ModelConfig& c, const GridShape& g, int stage, const PlanOptions& o) {
  const int64_t h = c.hidden_size, tp = g.tp;
  const LayerRange layers = stage_layers(c.num_layers, g.pp, stage);
  const int64_t kv_heads = tp <= c.num_kv_heads ? c.num_kv_heads / tp : 1;
  const int64_t q = c.q_size() / tp, kv = kv_heads * c.head_dim;
  // Per layer: q and o sliced by heads, k and v by KV heads (replicated past them), the MLP by
  // features, the two norms whole.
  const int64_t layer = q * h * 2 + kv * h * 2 + 3 * (c.intermediate_size / tp) * h + 2 * h +
                        (c.attention_bias ? q + 2 * kv : 0);
  RankLoad r;
  r.parameters = layers.size() * layer;
  const int64_t vocab_rows = c.vocab_size / tp * h;
  if (stage == 0) r.parameters += vocab_rows;                                     // embedding
  if (stage == g.pp - 1) r.parameters += h + (c.tie_word_embeddings && stage == 0 ? 0 : vocab_rows);
  r.kv_bytes_per_token = 2 * layers.size() * kv * o.kv_bytes;  // K and V
  return r;
}

std::vector<LayoutPlan> plan_layouts(const ModelConfig& c, const PlanOptions& o) {
  const int world = o.nodes * o.gpus_per_node;
  const int64_t context = o.context > 0 ? o.context : c.max_position_embeddings;
  const auto usable = int64_t(double(o.gpu_memory) * (1.0 - o.reserve));
  std::vector<LayoutPlan> plans;
  for (int tp = 1; tp <= o.gpus_per_node; ++tp) {
    if (o.gpus_per_node % tp != 0) continue;
    for (int pp = 1; tp * pp <= world; ++pp) {
      if ((world / tp) % pp != 0) continue;
      LayoutPlan p;
      p.layout = GridShape{world / (tp * pp), pp, 1, tp};
      if (auto problem = layout_problem(p.layout, world, layout_dims(c))) {
        p.why_not = *problem;
        plans.push_back(p);
        continue;
      }
      p.kv_tokens = INT64_MAX;
      for (int s = 0; s < pp; ++s) {
        const RankLoad r = rank_load(c, p.layout, s, o);
        const int64_t weights = r.parameters * o.weight_bytes;
        p.weight_bytes = std::max(p.weight_bytes, weights);
        p.kv_tokens = std::min(p.kv_tokens, std::max<int64_t>(0, usable - weights) /
                                                std::max<int64_t>(1, r.kv_bytes_per_token));
      }
      p.fits = p.weight_bytes < usable && p.kv_tokens >= context;
      if (p.weight_bytes >= usable)
        p.why_not = "the weights do not fit";
      else if (!p.fits)
        p.why_not = "the KV cache holds fewer than " + std::to_string(context) + " tokens";
      plans.push_back(p);
    }
  }
  return plans;
}

const LayoutPlan* recommend(const std::vector<LayoutPlan>& plans) {
  const LayoutPlan* best = nullptr;
  for (const LayoutPlan& p : plans) {
    if (!p.fits) continue;
    auto key = [](const LayoutPlan& x) {
      return std::tuple(x.layout.tp, -x.layout.pp, x.layout.dp);
    };
    if (!best || key(p) > key(*best)) best = &p;
  }
  return best;
}

}  // namespace tessera
