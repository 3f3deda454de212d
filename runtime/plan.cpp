#include "runtime/plan.h"

#include <algorithm>
#include <cmath>

#include "io/convert.h"
#include "io/llama_tensors.h"
#include "parallel/layout.h"

namespace tessera {

int64_t total_parameters(const ModelConfig& c) {
  const int64_t h = c.hidden_size;
  const int64_t layer = c.q_size() * h * 2 + c.kv_size() * h * 2 + 3 * c.intermediate_size * h +
                        2 * h + (c.attention_bias ? c.q_size() + 2 * c.kv_size() : 0);
  return c.num_layers * layer + c.vocab_size * h * (c.tie_word_embeddings ? 1 : 2) + h;
}

namespace {

// The format a tensor is held in under `weights` (a plain dtype, or a --quantize scheme).
DType held_format(const std::string& weights, const std::string& name, const Shape& shape,
                  const ModelConfig& c) {
  if (weights == "f32" || weights == "f16" || weights == "bf16") return dtype_from_name(weights);
  if (shape.size() != 2) return DType::kF32;
  return quantize_format(weights, name, c.num_layers, shape[1], c.tie_word_embeddings);
}

}  // namespace

RankLoad rank_load(const ModelConfig& c, const GridShape& g, int stage, const PlanOptions& o) {
  const int64_t h = c.hidden_size, tp = g.tp;
  const LayerRange layers = stage_layers(c.num_layers, g.pp, stage);
  const int64_t kv_heads = tp <= c.num_kv_heads ? c.num_kv_heads / tp : 1;
  const int64_t q = c.q_size() / tp, kv = kv_heads * c.head_dim;
  const bool first = stage == 0, last = stage == g.pp - 1;
  RankLoad r;
  double bytes = 0;
  for (const TensorSpec& t : llama_tensor_specs(c)) {
    if (!t.required) continue;  // (rope frequencies, input orders: a few bytes)
    const std::string layer_part = layer_suffix(t.name);
    int64_t n = 0;  // this rank's elements of the tensor
    if (!layer_part.empty()) {
      const int64_t layer = std::stoll(t.name.substr(7, t.name.find('.', 7) - 7));
      if (layer < layers.first || layer >= layers.last) continue;
      // q and o sliced by heads, k and v by KV heads (replicated past them), the MLP by
      // features, the norms whole
      if (layer_part == "self_attn.q_proj.weight" || layer_part == "self_attn.o_proj.weight")
        n = q * h;
      else if (layer_part == "self_attn.k_proj.weight" || layer_part == "self_attn.v_proj.weight")
        n = kv * h;
      else if (layer_part == "self_attn.q_proj.bias")
        n = q;
      else if (layer_part == "self_attn.k_proj.bias" || layer_part == "self_attn.v_proj.bias")
        n = kv;
      else if (layer_part.rfind("mlp.", 0) == 0)
        n = c.intermediate_size / tp * h;
      else
        n = h;  // the norms
    } else if (t.name == "embed_tokens.weight") {
      // the first stage's embedding; the last stage's head when tied (once if both)
      n = first || (last && c.tie_word_embeddings) ? c.vocab_size / tp * h : 0;
    } else if (t.name == "lm_head.weight") {
      n = last ? c.vocab_size / tp * h : 0;
    } else if (t.name == "norm.weight") {
      n = last ? h : 0;
    }
    if (n == 0) continue;
    r.parameters += n;
    const DType f = held_format(o.weights, t.name, t.shape, c);
    bytes += double(n) * double(dtype_block_bytes(f)) / double(dtype_block_elements(f));
  }
  r.weight_bytes = int64_t(bytes);
  r.kv_bytes_per_token = 2 * layers.size() * kv * o.kv_bytes;  // K and V
  return r;
}

namespace {

double message_seconds(const Link& link, double bytes) {
  return link.latency + bytes / link.bandwidth;
}

double rounds(int p) {
  return std::ceil(std::log2(double(p)));
}

// An all-reduce of `values` summed over p ranks, as all_reduce_sum sends them (parallel/
// wire_format.h): f32 by recursive doubling, a compressed format gathered whole.
double all_reduce_seconds(const Link& link, int p, WireFormat wire, int64_t values) {
  if (p == 1) return 0;
  const double m = double(wire_bytes(wire, values));
  if (wire == WireFormat::kF32) return rounds(p) * message_seconds(link, m);
  return rounds(p) * link.latency + double(p - 1) * m / link.bandwidth;
}

// Bytes of a hidden state of `values` between stages: as computed under f32, else encoded.
double hidden_bytes(const StepModel& m, int64_t values) {
  if (m.wire == WireFormat::kF32) return double(values) * double(dtype_size(m.activations));
  return double(wire_bytes(m.wire, values));
}

// Whether the first TP ranks of stages a and b sit on different nodes in any replica (ranks
// numbered tp fastest, then sp, pp, dp; o.gpus_per_node to a node).
bool across_nodes(const GridShape& g, int a, int b, const PlanOptions& o) {
  const auto node = [&](int dp, int stage) {
    return int64_t(dp * g.pp + stage) * g.sp * g.tp / o.gpus_per_node;
  };
  for (int d = 0; d < g.dp; ++d)
    if (node(d, a) != node(d, b)) return true;
  return false;
}

}  // namespace

DecodeEstimate decode_estimate(const ModelConfig& c, const GridShape& g, const PlanOptions& o) {
  const StepModel& m = o.step;
  TESSERA_CHECK(m.streams >= 1, "the estimate needs at least one stream");
  TESSERA_CHECK(m.activations == DType::kF32 || m.activations == DType::kBF16,
                "activations are f32 or bf16, not " << dtype_name(m.activations));
  const int64_t h = c.hidden_size;
  const Link& tp_link = g.tp <= o.gpus_per_node ? m.intra_node : m.inter_node;
  const auto link_between = [&](int a, int b) -> const Link& {
    return across_nodes(g, a, b, o) ? m.inter_node : m.intra_node;
  };
  // T_s(b) and its communication, for every stage
  const auto stages = [&](int64_t b, std::vector<double>& comm) {
    std::vector<double> t(size_t(g.pp));
    comm.assign(size_t(g.pp), 0.0);
    for (int s = 0; s < g.pp; ++s) {
      const int64_t layers = stage_layers(c.num_layers, g.pp, s).size();
      double& k = comm[size_t(s)];
      k = 2.0 * double(layers) * all_reduce_seconds(tp_link, g.tp, m.wire, b * h);
      if (s == 0 && g.tp > 1)  // the plan broadcast over TP, the embedding's f32 all-reduce
        k += rounds(g.tp) * tp_link.latency +
             all_reduce_seconds(tp_link, g.tp, WireFormat::kF32, b * h);
      if (s + 1 < g.pp) {  // the plan, then the hidden state
        const Link& next = link_between(s, s + 1);
        k += next.latency + message_seconds(next, hidden_bytes(m, b * h));
      }
      if (s == g.pp - 1) {
        if (g.tp > 1) k += rounds(g.tp) * tp_link.latency;  // sampling across the vocabulary
        if (g.pp > 1) k += message_seconds(link_between(s, 0), 4.0 * double(b + 1));  // tokens
      }
      const RankLoad r = rank_load(c, g, s, o);
      t[size_t(s)] = std::max(double(r.weight_bytes) / m.memory_bandwidth,
                              2.0 * double(r.parameters) * double(b) / m.compute_rate) +
                     k;
    }
    return t;
  };
  DecodeEstimate e;
  std::vector<double> comm;
  const std::vector<double> one = stages(1, comm);
  for (int s = 0; s < g.pp; ++s) {
    e.step_seconds += one[size_t(s)];
    e.comm_seconds += comm[size_t(s)];
  }
  const int64_t k = std::min<int64_t>(g.pp, m.streams), b = (m.streams + k - 1) / k;
  const std::vector<double> t = stages(b, comm);
  double sum = 0, slowest = 0;
  for (double x : t) {
    sum += x;
    slowest = std::max(slowest, x);
  }
  e.tokens_per_second = double(m.streams) / std::max(sum, double(k) * slowest);
  return e;
}

std::vector<LayoutPlan> plan_layouts(const ModelConfig& c, const PlanOptions& o) {
  const int world = o.nodes * o.gpus_per_node;
  const int64_t context = o.context > 0 ? o.context : c.max_position_embeddings;
  const auto usable = int64_t(double(o.gpu_memory) * (1.0 - o.reserve));
  // The sizes that constrain a layout, with the blocks `weights` stores o_proj and down_proj in.
  ModelDims dims = layout_dims(c);
  for (const TensorSpec& t : llama_tensor_specs(c)) {
    const std::string part = layer_suffix(t.name);
    InputBlocks* blocks = part == "self_attn.o_proj.weight" ? &dims.attention_output
                          : part == "mlp.down_proj.weight"  ? &dims.ffn_down
                                                            : nullptr;
    const DType f = held_format(o.weights, t.name, t.shape, c);
    if (blocks && dtype_block_elements(f) > blocks->elements)
      *blocks = {t.name, std::string(dtype_name(f)), dtype_block_elements(f)};
  }
  std::vector<LayoutPlan> plans;
  for (int tp = 1; tp <= world; ++tp) {
    if (o.gpus_per_node % tp != 0 && (tp % o.gpus_per_node != 0 || world % tp != 0)) continue;
    for (int pp = 1; tp * pp <= world; ++pp) {
      if ((world / tp) % pp != 0) continue;
      LayoutPlan p;
      p.layout = GridShape{world / (tp * pp), pp, 1, tp};
      p.tp_across_nodes = tp > o.gpus_per_node;
      if (auto problem = layout_problem(p.layout, world, dims)) {
        p.why_not = *problem;
        plans.push_back(p);
        continue;
      }
      p.kv_tokens = INT64_MAX;
      for (int s = 0; s < pp; ++s) {
        const RankLoad r = rank_load(c, p.layout, s, o);
        const int64_t weights = r.weight_bytes;
        p.weight_bytes = std::max(p.weight_bytes, weights);
        p.kv_tokens = std::min(p.kv_tokens, std::max<int64_t>(0, usable - weights) /
                                                std::max<int64_t>(1, r.kv_bytes_per_token));
      }
      p.decode = decode_estimate(c, p.layout, o);
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
    if (!p.fits || p.tp_across_nodes) continue;
    auto key = [](const LayoutPlan& x) {
      return std::tuple(x.layout.tp, -x.layout.pp, x.layout.dp);
    };
    if (!best || key(p) > key(*best)) best = &p;
  }
  return best;
}

}  // namespace tessera
