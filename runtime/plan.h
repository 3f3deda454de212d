// Deployment arithmetic for `tessera plan`: for each layout of N nodes x G GPUs, the weight bytes
// and KV-cache capacity of the busiest rank, whether it fits, and a recommendation (TP inside a
// node, PP across nodes). Pure arithmetic on the model config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "io/model_config.h"
#include "parallel/process_grid.h"
#include "parallel/wire_format.h"

namespace tessera {

// A link between two ranks: a message of m bytes takes latency + m / bandwidth.
struct Link {
  double bandwidth = 0;  // bytes/s, one way
  double latency = 0;    // seconds
};

// What a decode step's estimate assumes (DecodeEstimate).
struct StepModel {
  Link intra_node{450e9, 5e-6};        // NVLink-class between a node's GPUs
  Link inter_node{25e9 / 8, 10e-6};    // a 25 Gbit/s network
  double memory_bandwidth = 3000e9;    // bytes/s a rank reads its weights at (an H100's HBM)
  double compute_rate = 600e12;        // multiply-adds x 2 per second (an H100's dense bf16, 60%)
  WireFormat wire = WireFormat::kF32;  // --comm-dtype
  DType activations = DType::kBF16;    // the hidden states as computed (a GPU's; the CPU's: f32)
  int64_t streams = 1;                 // sequences decoding at once
};

struct PlanOptions {
  int nodes = 1;
  int gpus_per_node = 8;
  uint64_t gpu_memory = 80ull << 30;  // bytes per rank (a GPU's, or a CPU rank's share of a node)
  // How the weights are held: f32, f16, bf16, or a quantized format or mix as `tessera convert
  // --quantize` makes it, or an AWQ / GPTQ / FP8 checkpoint imports as (q8_0, ..., q4_k_m,
  // i4_g32, i4_g128, f8_e4m3: matrices quantized, vectors f32), kept so by CPUs and GPUs alike.
  std::string weights = "bf16";
  int kv_bytes = 2;       // bf16 KV cache
  double reserve = 0.10;  // share of GPU memory kept for activations and the runtime
  int64_t context = 0;    // tokens one sequence must be able to hold (0: the model's)
  StepModel step;
};

// A decode step of a layout, estimated (decode_estimate). Ranks are placed as the grid numbers
// them (tp fastest) on nodes of PlanOptions::gpus_per_node: ranks that share a node talk over
// StepModel::intra_node, else over inter_node (a stage boundary that crosses nodes in any replica
// counts as crossing). A message of m bytes takes latency + m / bandwidth. For b sequences of one
// token each:
//   a hidden state            m(b) = b * hidden values: in `activations` under f32, else encoded
//   an all-reduce over p      f32: ceil(log2 p) * (latency + m / bandwidth)   (recursive doubling)
//                             bf16, q8: ceil(log2 p) * latency + (p - 1) * m / bandwidth
//                             (every rank gathers the others' encoded sums)
//   stage s                   T_s(b) = max(its rank's weight bytes / memory_bandwidth,
//                                          2 * its rank's parameters * b / compute_rate)
//                                      + 2 all-reduces per layer of its layers
//                                      + stage 0 with TP: the plan's broadcast over TP
//                                        (ceil(log2 tp) latencies) and the embedding's f32
//                                        all-reduce
//                                      + to stage s + 1: the plan (a latency), the hidden state
//                                      + the last stage: sampling across TP (ceil(log2 tp)
//                                        latencies), and with PP the tokens back to stage 0
//                                        (4 (b + 1) bytes)
// S streams run as k = min(pp, S) steps in flight of b = ceil(S / k) sequences: a round of every
// stream's next token takes max(sum of T_s(b), k * max of T_s(b)), and tokens/s = S / round.
// (A roofline: a small batch reads the weights, a large one computes; attention and the KV cache
// are left out.)
struct DecodeEstimate {
  double step_seconds = 0;       // one stream's step: the sum over stages of T_s(1)
  double comm_seconds = 0;       // of that, in communication
  double tokens_per_second = 0;  // StepModel::streams streams together
};

struct RankLoad {
  int64_t parameters = 0;    // this rank's share of the weights
  int64_t weight_bytes = 0;  // their bytes in PlanOptions::weights (each tensor's format)
  int64_t kv_bytes_per_token = 0;
};

struct LayoutPlan {
  GridShape layout;
  int64_t weight_bytes = 0;      // the busiest rank's
  int64_t kv_tokens = 0;         // tokens of KV cache each model replica holds (the tightest rank)
  bool fits = false;             // weights fit and one sequence of `context` tokens fits the cache
  std::string why_not;           // when it does not fit, or the layout cannot run the model
  bool tp_across_nodes = false;  // its TP groups span nodes
  DecodeEstimate decode;         // when the layout can run the model
};

// The parameters and KV bytes per token of the rank at pipeline stage `stage` of `layout`.
RankLoad rank_load(const ModelConfig& c, const GridShape& layout, int stage, const PlanOptions& o);
int64_t total_parameters(const ModelConfig& c);
DecodeEstimate decode_estimate(const ModelConfig& c, const GridShape& layout, const PlanOptions& o);
// Every layout with tp dividing the GPUs of a node, or a multiple of them that divides the world
// (TP across nodes), pp dividing the rest, dp the remainder.
std::vector<LayoutPlan> plan_layouts(const ModelConfig& c, const PlanOptions& o);
// The recommended plan: fits, the largest tp up to a node (never across nodes), then the fewest
// stages, then the most replicas; nullptr when nothing fits.
const LayoutPlan* recommend(const std::vector<LayoutPlan>& plans);

}  // namespace tessera
