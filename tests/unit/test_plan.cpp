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

}  // namespace
}  // namespace tessera
