// `tessera plan` arithmetic against figures computed by hand for Llama-3-70B (80 layers, hidden
// 8192, 64 query / 8 KV heads of 128, FFN 28672, vocabulary 128256, untied head).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "io/convert.h"
#include "runtime/plan.h"

namespace tessera {
namespace {

ModelConfig llama3_70b() {
  std::ifstream in(std::string(TESSERA_TEST_DATA_DIR) + "/../../configs/llama-3-70b.json");
  return config_from_hf(nlohmann::json::parse(in), "llama-3-70b.json");
}

TEST(Plan, Llama3_70BParameters) {
  // per layer: q 8192*8192 + k, v 1024*8192 each + o 8192*8192 + 3 * 28672*8192 + 2 norms
  //   = 67108864 + 16777216 + 67108864 + 704643072 + 16384 = 855654400
  // 80 layers + embedding and head 2 * 128256*8192 + final norm 8192
  EXPECT_EQ(total_parameters(llama3_70b()), 80LL * 855654400 + 2LL * 1050673152 + 8192);
}

TEST(Plan, Llama3_70BTp8) {
  const ModelConfig c = llama3_70b();
  PlanOptions o;  // 80 GiB, bf16, 10% reserved
  const RankLoad r = rank_load(c, {1, 1, 1, 8}, 0, o);
  // per layer / 8: q, o 8388608 each; k, v one KV head: 1048576 each; MLP 88080384; norms 16384
  //   = 106971136; 80 layers + embedding and head rows 16032 * 8192 each + final norm
  EXPECT_EQ(r.parameters, 80LL * 106971136 + 2LL * 131334144 + 8192);  // 8820367360
  EXPECT_EQ(r.kv_bytes_per_token, 2 * 80 * 128 * 2);                   // 40960
  const auto plans = plan_layouts(c, o);
  const auto it = std::find_if(plans.begin(), plans.end(), [](const LayoutPlan& p) {
    return p.layout == GridShape{1, 1, 1, 8};
  });
  ASSERT_NE(it, plans.end());
  EXPECT_EQ(it->weight_bytes, 17640734720LL);  // 16.43 GiB
  // usable 0.9 * 80 GiB = 77309411328; free 59668676608; / 40960
  EXPECT_EQ(it->kv_tokens, 1456754);
  EXPECT_TRUE(it->fits);
}

TEST(Plan, Llama3_70BTp2Pp4StagesDiffer) {
  const ModelConfig c = llama3_70b();
  PlanOptions o;
  o.gpus_per_node = 8;
  // per layer / 2: q, o 33554432 each; k, v 4 KV heads 4194304 each; MLP 352321536; norms 16384
  //   = 427835392; 20 layers per stage
  const int64_t layers = 20LL * 427835392;
  EXPECT_EQ(rank_load(c, {1, 4, 1, 2}, 0, o).parameters, layers + 64128LL * 8192);  // + embedding
  EXPECT_EQ(rank_load(c, {1, 4, 1, 2}, 1, o).parameters, layers);
  EXPECT_EQ(rank_load(c, {1, 4, 1, 2}, 3, o).parameters, layers + 64128LL * 8192 + 8192);
  EXPECT_EQ(rank_load(c, {1, 4, 1, 2}, 1, o).kv_bytes_per_token, 2 * 20 * 4 * 128 * 2);
}

TEST(Plan, WeightBytesFollowTheFormat) {
  // TP=8 rank of Llama-3-70B: matrices per layer / 8: q, o 8388608; k, v 1048576; MLP 88080384
  // (106954752 in all), norms 16384; embedding and head 16032 * 8192 each, final norm 8192.
  const ModelConfig c = llama3_70b();
  PlanOptions o;
  const int64_t matrices = 80LL * 106954752, vectors = 80LL * 16384 + 8192,
                vocab = 2LL * 16032 * 8192;
  o.weights = "f32";
  EXPECT_EQ(rank_load(c, {1, 1, 1, 8}, 0, o).weight_bytes, 4 * (matrices + vectors + vocab));
  o.weights = "q8_0";  // 34 bytes per 32 matrix elements, vectors f32
  EXPECT_EQ(rank_load(c, {1, 1, 1, 8}, 0, o).weight_bytes,
            (matrices + vocab) / 32 * 34 + 4 * vectors);
  // q4_k_m: q6_k (210 bytes / 256) for the head and for v_proj and down_proj in the layers with
  // more bits (the first and last 10 of 80, and every third of those between: 10 + 10 + 20),
  // q4_k (144 / 256) elsewhere.
  o.weights = "q4_k_m";
  const int64_t v = 1048576, down = 88080384 / 3;
  const int64_t q6 = 40 * (v + down) + vocab / 2, q4 = matrices + vocab - q6;
  EXPECT_EQ(rank_load(c, {1, 1, 1, 8}, 0, o).weight_bytes,
            q6 / 256 * 210 + q4 / 256 * 144 + 4 * vectors);
}

TEST(Plan, RefusesLayoutsThatCutTheWeightsBlocks) {
  // Qwen2-72B's FFN of 29568 is not whole 256-blocks: q4_k_m keeps its down_proj in q5_0 and
  // q8_0 blocks of 32, of which TP=8 would give each rank 115.5.
  std::ifstream in(std::string(TESSERA_TEST_DATA_DIR) + "/../../configs/qwen2-72b.json");
  const ModelConfig c = config_from_hf(nlohmann::json::parse(in), "qwen2-72b.json");
  PlanOptions o;
  o.gpus_per_node = 8;
  // The plan of TP=tp and one stage on the node's 8 GPUs (8 / tp replicas).
  const auto tp_alone = [&](int tp) {
    for (const LayoutPlan& p : plan_layouts(c, o))
      if (p.layout == GridShape{8 / tp, 1, 1, tp}) return p;
    ADD_FAILURE() << "no plan for tp " << tp;
    return LayoutPlan{};
  };
  EXPECT_TRUE(tp_alone(8).why_not.empty());  // bf16: no blocks
  o.weights = "q4_k_m";
  const LayoutPlan tp8 = tp_alone(8);
  EXPECT_NE(tp8.why_not.find("tp 8 would cut the q8_0 blocks (32 elements) of "
                             "layers.0.mlp.down_proj.weight"),
            std::string::npos)
      << tp8.why_not;
  EXPECT_EQ(tp8.weight_bytes, 0);
  EXPECT_TRUE(tp_alone(4).fits);
}

TEST(Plan, RecommendsTpInsideANodeAndRefusesWhatCannotRun) {
  const ModelConfig c = llama3_70b();
  PlanOptions o;
  o.nodes = 2;
  o.gpus_per_node = 8;
  const auto plans = plan_layouts(c, o);
  const LayoutPlan* best = recommend(plans);
  ASSERT_NE(best, nullptr);
  EXPECT_EQ(best->layout, (GridShape{2, 1, 1, 8}));
  // On 24 GiB cards across 4 nodes of 4: TP stays inside the node, stages across nodes.
  o.nodes = 4;
  o.gpus_per_node = 4;
  o.gpu_memory = 24ull << 30;
  const auto small = plan_layouts(c, o);
  const LayoutPlan* b2 = recommend(small);
  ASSERT_NE(b2, nullptr);
  EXPECT_EQ(b2->layout.tp, 4);
  EXPECT_EQ(b2->layout.pp, 2);
  for (const LayoutPlan& p : small) {
    if (p.layout.tp == 1 && p.layout.pp == 1) {
      EXPECT_FALSE(p.fits);
    }
  }
  o.nodes = 1;
  o.gpus_per_node = 3;  // tp 3 does not divide 64 heads
  for (const LayoutPlan& p : plan_layouts(c, o)) {
    if (p.layout.tp == 3) {
      EXPECT_NE(p.why_not.find("64 query heads"), std::string::npos);
    }
  }
}

// The decode estimate's formula (runtime/plan.h), its terms written out here by hand for
// Llama-3-70B (80 layers, hidden 8192) on round-number links: a 1 GB/s, 100 us network between
// nodes of one GPU each, weights read at 1 TB/s.
PlanOptions one_gpu_nodes(int nodes) {
  PlanOptions o;
  o.nodes = nodes;
  o.gpus_per_node = 1;
  o.step.inter_node = {1e9, 100e-6};
  o.step.memory_bandwidth = 1e12;
  return o;
}

TEST(Plan, DecodeEstimateTpAcrossNodes) {
  const ModelConfig c = llama3_70b();
  PlanOptions o = one_gpu_nodes(2);
  const GridShape tp2{1, 1, 1, 2};
  const double weights = double(rank_load(c, tp2, 0, o).weight_bytes) / 1e12;
  // 2 all-reduces a layer and the embedding's: 161 of 8192 f32 (all-reduces are summed in f32),
  // one round each for 2 ranks; the plan's broadcast and the sampling: a latency each
  const double comm = 161 * (100e-6 + 32768 / 1e9) + 2 * 100e-6;
  DecodeEstimate e = decode_estimate(c, tp2, o);
  EXPECT_NEAR(e.step_seconds, weights + comm, 1e-9);
  EXPECT_NEAR(e.comm_seconds, comm, 1e-9);
  EXPECT_NEAR(e.tokens_per_second, 1 / (weights + comm), 1e-6);
  // q8 over 4 ranks: 2 rounds of latency, and each rank gathers 3 encoded sums of 8192 values
  // (256 blocks of 37 bytes); the embedding stays f32 (2 rounds of 32768 bytes); the plan's
  // broadcast and the sampling 2 latencies each
  o = one_gpu_nodes(4);
  o.step.wire = WireFormat::kQ8;
  const GridShape tp4{1, 1, 1, 4};
  const double q8 = 160 * (2 * 100e-6 + 3 * 9472 / 1e9) + 2 * (100e-6 + 32768 / 1e9) + 4 * 100e-6;
  e = decode_estimate(c, tp4, o);
  EXPECT_NEAR(e.comm_seconds, q8, 1e-9);
  // Inside a node the same layout talks over the node's links
  o.gpus_per_node = 4;
  o.nodes = 1;
  o.step.intra_node = {100e9, 2e-6};
  e = decode_estimate(c, tp4, o);
  EXPECT_NEAR(e.comm_seconds,
              160 * (2 * 2e-6 + 3 * 9472 / 100e9) + 2 * (2e-6 + 32768 / 100e9) + 4 * 2e-6, 1e-9);
}

TEST(Plan, DecodeEstimatePpAcrossNodesWithStreams) {
  const ModelConfig c = llama3_70b();
  PlanOptions o = one_gpu_nodes(2);
  const GridShape pp2{1, 2, 1, 1};
  const double w0 = double(rank_load(c, pp2, 0, o).weight_bytes) / 1e12;
  const double w1 = double(rank_load(c, pp2, 1, o).weight_bytes) / 1e12;
  // one stream: stage 0, the plan (a latency) and the hidden state (8192 bf16, as a GPU computes
  // it) to stage 1, stage 1, its token back (8 bytes)
  const double hop = 2 * 100e-6 + 16384 / 1e9, back = 100e-6 + 8 / 1e9;
  DecodeEstimate e = decode_estimate(c, pp2, o);
  EXPECT_NEAR(e.step_seconds, w0 + hop + w1 + back, 1e-9);
  EXPECT_NEAR(e.comm_seconds, hop + back, 1e-9);
  // --comm-dtype bf16 changes nothing for bf16 hidden states; f32 ones are twice the bytes
  o.step.wire = WireFormat::kBF16;
  EXPECT_NEAR(decode_estimate(c, pp2, o).comm_seconds, hop + back, 1e-9);
  o.step.wire = WireFormat::kF32;
  o.step.activations = DType::kF32;
  EXPECT_NEAR(decode_estimate(c, pp2, o).comm_seconds, hop + 16384 / 1e9 + back, 1e-9);
  o.step.activations = DType::kBF16;
  // 8 streams: 2 steps in flight of 4 sequences; a round is the slower of the whole pipeline
  // and two steps through its slowest stage
  o.step.streams = 8;
  const double t0 = w0 + 2 * 100e-6 + 4 * 16384 / 1e9, t1 = w1 + 100e-6 + 20 / 1e9;
  e = decode_estimate(c, pp2, o);
  EXPECT_NEAR(e.tokens_per_second, 8 / std::max(t0 + t1, 2 * std::max(t0, t1)), 1e-6);
  // Where arithmetic is slower than the weights' reads (2 flops a parameter and sequence)
  o.step.compute_rate = 1e12;
  const double p0 = double(rank_load(c, pp2, 0, o).parameters);
  const double p1 = double(rank_load(c, pp2, 1, o).parameters);
  const double c0 = 2 * p0 * 4 / 1e12 + 2 * 100e-6 + 4 * 16384 / 1e9;
  const double c1 = 2 * p1 * 4 / 1e12 + 100e-6 + 20 / 1e9;
  ASSERT_GT(2 * p0 * 4 / 1e12, w0);
  EXPECT_NEAR(decode_estimate(c, pp2, o).tokens_per_second,
              8 / std::max(c0 + c1, 2 * std::max(c0, c1)), 1e-6);
}

TEST(Plan, DecodeEstimateCountsABoundaryCrossedInAnyReplica) {
  // 3 nodes of 8, tp 2 x pp 3 x dp 4: replica 0 (ranks 0-5) stays on node 0, replica 1 (ranks
  // 6-11) crosses from node 0 to node 1 between its stages 0 and 1.
  const ModelConfig c = llama3_70b();
  PlanOptions o = one_gpu_nodes(3);
  o.gpus_per_node = 8;
  o.step.intra_node = {100e9, 2e-6};
  const GridShape g{4, 3, 1, 2};
  const double inter = 2 * 100e-6 + 16384 / 1e9;  // the plan and a bf16 hidden state
  const DecodeEstimate e = decode_estimate(c, g, o);
  // Stage 0 -> 1 crosses in replica 1 (ranks 6 -> 8), 1 -> 2 in replica 2 (ranks 14 -> 16), and
  // the tokens' way back in replicas 1 and 2 (10 -> 6, 16 -> 12); TP stays inside its node (80
  // layers' all-reduces, the embedding's, the plan's broadcast and the sampling's latency).
  const double tp_terms = 160 * (2e-6 + 32768 / 100e9) + (2e-6 + 32768 / 100e9) + 2 * 2e-6;
  const double back_across = 100e-6 + 8 / 1e9;
  EXPECT_NEAR(e.comm_seconds, tp_terms + 2 * inter + back_across, 1e-9);
}

TEST(Plan, TpAcrossNodesIsListedButNotRecommended) {
  PlanOptions o = one_gpu_nodes(8);
  o.gpu_memory = 80ull << 30;
  const auto plans = plan_layouts(llama3_70b(), o);
  const auto tp8 = std::find_if(plans.begin(), plans.end(), [](const LayoutPlan& p) {
    return p.layout == GridShape{1, 1, 1, 8};
  });
  ASSERT_NE(tp8, plans.end());
  EXPECT_TRUE(tp8->tp_across_nodes && tp8->fits);
  const LayoutPlan* best = recommend(plans);
  ASSERT_NE(best, nullptr);
  EXPECT_EQ(best->layout.tp, 1);  // one GPU a node: pipeline stages across them
}

}  // namespace
}  // namespace tessera
