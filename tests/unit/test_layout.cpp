// Layout checks: what cannot run is refused with the numbers and a layout that works.
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "parallel/layout.h"

namespace tessera {
namespace {

const ModelDims kSmolLM{30, 9, 3, 1536, 49152};
const ModelDims kLlama3_70B{80, 64, 8, 28672, 128256};

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
  ModelDims kv6{2, 12, 6, 64, 64};
  EXPECT_NE(why({1, 1, 1, 4}, 4, kv6).find("6 KV heads"), std::string::npos);
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
