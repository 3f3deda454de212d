// Layout checks: what cannot run is refused with the numbers and a layout that works.
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "parallel/layout.h"

namespace tessera {
namespace {

ModelDims dims(int64_t layers, int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t ffn,
               int64_t vocab) {
  ModelDims d;
  d.layers = layers;
  d.heads = heads;
  d.kv_heads = kv_heads;
  d.head_dim = head_dim;
  d.ffn = ffn;
  d.vocab = vocab;
  return d;
}

const ModelDims kSmolLM = dims(30, 9, 3, 64, 1536, 49152);
const ModelDims kLlama3_70B = dims(80, 64, 8, 128, 28672, 128256);

std::string why(const GridShape& g, int world, const ModelDims& m) {
  return layout_problem(g, world, m).value_or("");
}

TEST(Layout, AcceptsWorkingLayouts) {
  EXPECT_FALSE(layout_problem({1, 1, 1, 3}, 3, kSmolLM));
  EXPECT_FALSE(layout_problem({1, 2, 1, 3}, 6, kSmolLM));
  EXPECT_FALSE(layout_problem({1, 4, 1, 2}, 8, kLlama3_70B));
  EXPECT_FALSE(layout_problem({1, 1, 1, 8}, 8, kLlama3_70B));
  EXPECT_FALSE(layout_problem({1, 1, 1, 16}, 16, kLlama3_70B));  // 8 KV heads replicated twice
  EXPECT_FALSE(layout_problem({2, 1, 2, 1}, 4, kSmolLM));
}

TEST(Layout, NamesTheNumbers) {
  EXPECT_NE(why({1, 1, 1, 2}, 2, kSmolLM).find("9 query heads"), std::string::npos);
  EXPECT_NE(why({1, 1, 1, 4}, 8, kSmolLM).find("8 were started"), std::string::npos);
  EXPECT_NE(why({1, 31, 1, 1}, 31, kSmolLM).find("30 layers"), std::string::npos);
  ModelDims odd_ffn = kLlama3_70B;
  odd_ffn.ffn = 1000;
  EXPECT_NE(why({1, 1, 1, 16}, 16, odd_ffn).find("FFN size 1000"), std::string::npos);
  const ModelDims kv6 = dims(2, 12, 6, 8, 64, 64);
  EXPECT_NE(why({1, 1, 1, 4}, 4, kv6).find("6 KV heads"), std::string::npos);
}

TEST(Layout, RefusesToCutAQuantizedWeightsBlocksAndSaysWhatWorks) {
  // SmolLM2 as a q4_k file: down_proj's 1536 input features are 6 blocks of 256.
  ModelDims q4k = kSmolLM;
  q4k.ffn_down = {"layers.0.mlp.down_proj.weight", "q4_k", 256};
  EXPECT_FALSE(layout_problem({1, 1, 1, 3}, 3, q4k));  // 512 each: 2 blocks
  EXPECT_FALSE(layout_problem({1, 1, 1, 2}, 2, dims(2, 8, 8, 64, 1536, 64)));
  const std::string w = why({1, 1, 1, 4}, 4, [&] {
    ModelDims d = dims(2, 8, 8, 64, 1536, 64);
    d.ffn_down = q4k.ffn_down;
    return d;
  }());
  EXPECT_NE(w.find("tp 4 would cut the q4_k blocks (256 elements) of "
                   "layers.0.mlp.down_proj.weight: each rank's 384 of its 1536 input features"),
            std::string::npos)
      << w;
  // o_proj's input is the query heads: 9 heads of 64 in q8_0 blocks of 32 fit tp 3 (192 each);
  // in blocks of 256 they do not, and 576 features fit no tp > 1.
  q4k.attention_output = {"layers.3.self_attn.o_proj.weight", "q4_k", 256};
  EXPECT_NE(why({1, 1, 1, 3}, 3, q4k).find("o_proj.weight: each rank's 192 of its 576"),
            std::string::npos);
  try {
    check_layout({1, 1, 1, 3}, 3, q4k);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tp 1 --pp 3 would work"), std::string::npos)
        << e.what();
  }
}

TEST(Layout, SuggestsALayoutThatWorks) {
  EXPECT_EQ(suggest_layout(2, kSmolLM), (GridShape{1, 2, 1, 1}));
  EXPECT_EQ(suggest_layout(6, kSmolLM), (GridShape{1, 2, 1, 3}));
  EXPECT_EQ(suggest_layout(8, kLlama3_70B), (GridShape{1, 1, 1, 8}));
  try {
    check_layout({1, 1, 1, 2}, 2, kSmolLM);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--tp 1 --pp 2 would work"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tessera
