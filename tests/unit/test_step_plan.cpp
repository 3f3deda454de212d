// Step plans survive encoding bit for bit, and damaged bytes are refused instead of misread.
#include <gtest/gtest.h>

#include "kernels/error.h"
#include "runtime/step_plan.h"

namespace tessera {
namespace {

StepPlan sample_plan() {
  StepPlan p;
  p.id = 41;
  p.release = {3, 9};
  p.copies = {{1, 8, 2}};
  SequenceWork a;
  a.seq = 12;
  a.position = 0;
  a.tokens = {1, 2, 3, 50000};
  KvShare first, second;  // a start's whole table; a running one's new block and a copy
  first.blocks = {4, 5};
  second.rows = 2;
  second.blocks = {9};
  second.replaced = {TableEntry{1, 11}};
  a.kv = {first, second};
  a.start = true;
  a.context = {8, 8};
  a.logits = -1;
  SequenceWork b;
  b.seq = 7;
  b.position = 99;
  b.tokens = {77};
  b.sample = true;
  b.output_index = 5;
  b.sampling.temperature = 0.7f;
  b.sampling.top_k = 40;
  b.sampling.top_p = 0.9f;
  b.sampling.min_p = 0.05f;
  b.sampling.repetition_penalty = 1.1f;
  b.sampling.seed = 0xdeadbeefcafeull;
  p.work = {a, b};
  return p;
}

TEST(StepPlan, RoundTrips) {
  const StepPlan p = sample_plan();
  const StepPlan q = StepPlan::decode(p.encode());
  EXPECT_EQ(q.id, 41);
  EXPECT_FALSE(q.stop);
  EXPECT_EQ(q.release, p.release);
  ASSERT_EQ(q.work.size(), 2u);
  EXPECT_EQ(q.work[0].seq, 12);
  EXPECT_EQ(q.work[0].tokens, p.work[0].tokens);
  ASSERT_EQ(q.work[0].kv.size(), 2u);
  EXPECT_EQ(q.work[0].kv[1].rows, 2);
  EXPECT_EQ(q.work[0].kv[0].blocks, (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(q.work[0].kv[1].blocks, (std::vector<int32_t>{9}));
  ASSERT_EQ(q.work[0].kv[1].replaced.size(), 1u);
  EXPECT_EQ(q.work[0].kv[1].replaced[0].index, 1);
  EXPECT_EQ(q.work[0].kv[1].replaced[0].block, 11);
  EXPECT_TRUE(q.work[0].kv[0].replaced.empty());
  EXPECT_TRUE(q.work[0].start);
  EXPECT_EQ(q.work[0].context, (std::vector<int32_t>{8, 8}));
  EXPECT_EQ(q.work[0].logits, -1);
  EXPECT_EQ(q.work[1].logits, 0);
  ASSERT_EQ(q.copies.size(), 1u);
  EXPECT_EQ(q.copies[0].sp_rank, 1);
  EXPECT_EQ(q.copies[0].src, 8);
  EXPECT_EQ(q.copies[0].dst, 2);
  EXPECT_FALSE(q.work[0].sample);
  EXPECT_EQ(q.work[1].position, 99);
  EXPECT_TRUE(q.work[1].sample);
  EXPECT_EQ(q.work[1].output_index, 5);
  EXPECT_EQ(q.work[1].sampling.top_k, 40);
  EXPECT_EQ(q.work[1].sampling.temperature, 0.7f);
  EXPECT_EQ(q.work[1].sampling.seed, 0xdeadbeefcafeull);
  EXPECT_EQ(q.tokens(), 5);
  EXPECT_EQ(q.samples(), 1);
  StepPlan stop;
  stop.stop = true;
  EXPECT_TRUE(StepPlan::decode(stop.encode()).stop);
}

TEST(StepPlan, RefusesDamagedBytes) {
  const std::string bytes = sample_plan().encode();
  for (size_t cut : {size_t(0), size_t(3), bytes.size() / 2, bytes.size() - 1})
    EXPECT_THROW(StepPlan::decode(bytes.substr(0, cut)), Error) << "cut at " << cut;
  EXPECT_THROW(StepPlan::decode(bytes + "x"), Error);
  std::string bad_magic = bytes;
  bad_magic[0] ^= 1;
  EXPECT_THROW(StepPlan::decode(bad_magic), Error);
}

}  // namespace
}  // namespace tessera
