// tessera plan: which parallel layouts can serve a model on a cluster, with per-rank weight
// bytes and KV-cache capacity, and the one to use.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "io/convert.h"
#include "launch/options.h"
#include "parallel/wire_format.h"
#include "runtime/plan.h"

namespace tessera::cli {

int run_plan(const Args& args) {
  po::options_description desc("Options");
  std::string model, memory = "80GiB", comm_dtype = "f32", activations = "bf16";
  std::string inter_rate = "25Gbit/s", inter_latency = "10us", intra_rate = "450GB/s",
              intra_latency = "5us", memory_rate = "3000GB/s", compute_rate = "600TFLOP/s";
  std::string json_path;
  PlanOptions o;
  // clang-format off
  desc.add_options()
      ("model,m", po::value(&model)->required(),
       "a preset (configs/*.json, Hugging Face config.json form) or a tessera model file")
      ("nodes", po::value(&o.nodes)->default_value(1), "nodes")
      ("gpus-per-node", po::value(&o.gpus_per_node)->default_value(8), "GPUs per node (one rank each)")
      ("gpu-memory", po::value(&memory)->default_value("80GiB"),
       "memory per rank (80GiB, 141GB, ...): a GPU's, or a CPU rank's share of its node")
      ("weights", po::value(&o.weights)->default_value("bf16"),
       "how the weights are held: f32, f16, bf16, or as tessera convert --quantize makes them "
       "(q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, i4_g32, i4_g128, f8_e4m3, q4_k_m): "
       "kept so by CPU and GPU ranks")
      ("kv-bytes", po::value(&o.kv_bytes)->default_value(2), "bytes per KV-cache element")
      ("reserve", po::value(&o.reserve)->default_value(0.10, "0.10"),
       "share of GPU memory kept for activations and the runtime")
      ("context", po::value(&o.context)->default_value(0),
       "tokens one sequence must fit (0: the model's context window)")
      ("inter-node-bandwidth", po::value(&inter_rate)->default_value(inter_rate),
       "the network between nodes, one way (Gbit/s, Mbit/s, GB/s, MB/s)")
      ("inter-node-latency", po::value(&inter_latency)->default_value(inter_latency),
       "a message's latency between nodes (us, ms)")
      ("intra-node-bandwidth", po::value(&intra_rate)->default_value(intra_rate),
       "between the GPUs of a node, one way (NVLink: 450GB/s; PCIe 4: 25GB/s)")
      ("intra-node-latency", po::value(&intra_latency)->default_value(intra_latency),
       "a message's latency inside a node")
      ("memory-bandwidth", po::value(&memory_rate)->default_value(memory_rate),
       "the rate a rank reads its weights at in a decode step (an H100: 3000GB/s)")
      ("compute-rate", po::value(&compute_rate)->default_value(compute_rate),
       "a rank's arithmetic rate in a decode step of many sequences (an H100: 600TFLOP/s)")
      ("streams", po::value(&o.step.streams)->default_value(1),
       "sequences decoding at once per replica, for the estimated tokens/s")
      ("comm-dtype", po::value(&comm_dtype)->default_value(comm_dtype),
       "what crosses ranks, as tessera generate --comm-dtype: f32, bf16 or q8")
      ("activations", po::value(&activations)->default_value(activations),
       "what the hidden states are computed in: bf16 (a GPU's) or f32 (the CPU's)")
      ("json", po::value(&json_path), "also write every layout and its estimate to this file");
  // clang-format on
  po::variables_map vm;
  if (!parse_options("plan", "--model PRESET --nodes N --gpus-per-node G --gpu-memory 80GiB", desc,
                     args, vm))
    return 0;
  TESSERA_CHECK(o.nodes >= 1 && o.gpus_per_node >= 1, "--nodes and --gpus-per-node must be >= 1");
  TESSERA_CHECK(o.reserve >= 0 && o.reserve < 1, "--reserve must be in [0, 1)");
  o.gpu_memory = parse_bytes(memory, "--gpu-memory");
  TESSERA_CHECK(o.step.streams >= 1, "--streams must be >= 1");
  o.step.inter_node = {parse_rate(inter_rate, "--inter-node-bandwidth"),
                       parse_seconds(inter_latency, "--inter-node-latency")};
  o.step.intra_node = {parse_rate(intra_rate, "--intra-node-bandwidth"),
                       parse_seconds(intra_latency, "--intra-node-latency")};
  o.step.memory_bandwidth = parse_rate(memory_rate, "--memory-bandwidth");
  o.step.compute_rate = parse_flops(compute_rate, "--compute-rate");
  o.step.wire = wire_format_from_name(comm_dtype);
  TESSERA_CHECK(activations == "f32" || activations == "bf16",
                "--activations must be f32 or bf16, got '" << activations << "'");
  o.step.activations = dtype_from_name(activations);
  const ModelConfig c = load_model_config(model);
  if (o.weights != "f32" && o.weights != "f16" && o.weights != "bf16")
    check_quantize_scheme(o.weights, "--weights (f32, f16, bf16 or a quantized format)");
  const auto plans = plan_layouts(c, o);
  const LayoutPlan* best = recommend(plans);
  std::printf("model: %s, %.4g B parameters (%s), %lld layers, %lld/%lld heads\n", model.c_str(),
              double(total_parameters(c)) / 1e9, c.architecture.c_str(), (long long)c.num_layers,
              (long long)c.num_heads, (long long)c.num_kv_heads);
  std::printf("cluster: %d node(s) x %d GPU(s) x %.1f GiB, %.0f%% reserved; weights %s\n\n",
              o.nodes, o.gpus_per_node, double(o.gpu_memory) / double(1ull << 30), 100 * o.reserve,
              o.weights.c_str());
  std::printf(
      "decode estimate: links %s, %s between nodes and %s, %s inside a node; weights "
      "read at %s, computed at %s; --comm-dtype %s; %lld stream(s) per replica\n\n",
      inter_rate.c_str(), inter_latency.c_str(), intra_rate.c_str(), intra_latency.c_str(),
      memory_rate.c_str(), compute_rate.c_str(), comm_dtype.c_str(), (long long)o.step.streams);
  std::printf("%-4s %-4s %-4s %16s %18s %11s %8s %10s  %s\n", "tp", "pp", "dp", "weights/rank GiB",
              "KV tokens/replica", "step ms", "comm %", "tok/s", "fits");
  // (step ms: one stream's decode step; tok/s: every replica's streams together)
  for (const LayoutPlan& p : plans) {
    if (p.weight_bytes == 0) {  // the layout cannot run the model at all
      std::printf("%-4d %-4d %-4d %16s %18s %11s %8s %10s  no: %s\n", p.layout.tp, p.layout.pp,
                  p.layout.dp, "-", "-", "-", "-", "-", p.why_not.c_str());
      continue;
    }
    const DecodeEstimate& e = p.decode;
    std::printf(
        "%-4d %-4d %-4d %16.2f %18lld %11.3f %7.1f%% %10.1f  %s%s%s\n", p.layout.tp, p.layout.pp,
        p.layout.dp, double(p.weight_bytes) / double(1ull << 30), (long long)p.kv_tokens,
        1e3 * e.step_seconds, 100.0 * e.comm_seconds / e.step_seconds,
        e.tokens_per_second * p.layout.dp, p.fits ? "yes" : ("no: " + p.why_not).c_str(),
        p.tp_across_nodes ? " (tp across nodes)" : "", &p == best ? "  <- recommended" : "");
  }
  if (!json_path.empty()) {
    nlohmann::json layouts = nlohmann::json::array();
    for (const LayoutPlan& p : plans)
      layouts.push_back({{"tp", p.layout.tp},
                         {"pp", p.layout.pp},
                         {"dp", p.layout.dp},
                         {"runs", p.weight_bytes > 0},
                         {"fits", p.fits},
                         {"why_not", p.why_not},
                         {"tp_across_nodes", p.tp_across_nodes},
                         {"weight_bytes", p.weight_bytes},
                         {"kv_tokens", p.kv_tokens},
                         {"step_seconds", p.decode.step_seconds},
                         {"comm_seconds", p.decode.comm_seconds},
                         {"tokens_per_second", p.decode.tokens_per_second * p.layout.dp},
                         {"recommended", &p == best}});
    write_text_file(
        json_path,
        nlohmann::json{{"parameters", total_parameters(c)}, {"layouts", layouts}}.dump(1) + "\n");
  }
  if (best)
    std::printf("\nrecommended: --tp %d --pp %d --dp %d (mpirun -np %d)\n", best->layout.tp,
                best->layout.pp, best->layout.dp, best->layout.world());
  else
    std::printf("\nno layout fits: add nodes or memory, or use fewer bytes per weight\n");
  return 0;
}

}  // namespace tessera::cli
