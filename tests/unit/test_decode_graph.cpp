// Decode steps as CUDA graph replays (RunnerOptions::graph_batch) against the same model run
// kernel by kernel, through the model runner: sequences prefilled, then decode steps whose batches
// grow and shrink (padded to buckets of 1, 2, 4, 8 rows), on a GPU, or on an emulated one where
// there is none (the emulator records and replays the launches). With a key capacity the eager plan
// also uses (one piece per key list) the logits are bitwise the eager ones; with a larger capacity
// (the key lists split differently) they agree to float32 rounding, and the greedy tokens are the
// same.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/ops.h"
#include "parallel/communicator.h"
#include "runtime/llama_model.h"
#include "runtime/model_runner.h"
#include "tests/gpu_or_emulated.h"

namespace tessera {
namespace {

#if TESSERA_HAVE_CUDA

ModelConfig small_config() {
  ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = 128;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 2;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 4096;
  return c;
}

// One model and its runner, stepping sequences with plans as an engine would.
struct Runner {
  std::unique_ptr<Communicator> tp = make_local_communicator();
  std::unique_ptr<Communicator> pp = make_local_communicator();
  LlamaModel model;
  std::unique_ptr<ModelRunner> runner;
  std::vector<std::vector<int32_t>> tables;  // each sequence's blocks
  std::vector<int64_t> lengths;
  int64_t next_step = 1;

  Runner(int64_t graph_keys, int sequences, int blocks_each = 8) {
    LoadOptions o;
    o.device = test_gpu();
    model = LlamaModel::random(small_config(), 11, tp.get(), pp.get(), nullptr, o);
    RunnerOptions r;
    r.block_size = 4;
    r.num_blocks = blocks_each * sequences;
    if (graph_keys > 0) r.graph_batch = 8, r.graph_keys = graph_keys;
    runner = std::make_unique<ModelRunner>(model, r);
    for (int s = 0; s < sequences; ++s) {  // blocks of 4 keys, interleaved in the pool
      std::vector<int32_t> t;
      for (int b = 0; b < blocks_each; ++b) t.push_back(int32_t(b * sequences + s));
      tables.push_back(t);
      lengths.push_back(0);
    }
  }
  // One step: sequence ids[i] takes tokens[i]; returns the logits of each sequence's last row.
  std::vector<float> step(const std::vector<int>& ids,
                          const std::vector<std::vector<int32_t>>& toks) {
    StepPlan plan;
    plan.id = next_step++;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int s = ids[i];
      SequenceWork w;
      w.seq = s;
      w.position = lengths[size_t(s)];
      w.tokens = toks[i];
      w.start = w.position == 0;
      KvShare share;
      share.rows = w.position;
      if (w.start) share.blocks = tables[size_t(s)];  // the whole table once
      w.kv = {share};
      w.logits = 1;
      plan.work.push_back(w);
      lengths[size_t(s)] += int64_t(toks[i].size());
    }
    return runner->execute(plan).logits.to_f32_vector();
  }
};

int32_t argmax_row(const std::vector<float>& logits, size_t row, size_t vocab) {
  const auto b = logits.begin() + std::ptrdiff_t(row * vocab);
  return int32_t(std::max_element(b, b + std::ptrdiff_t(vocab)) - b);
}

// Prefills 5 sequences (prompts of `prompt` + s tokens), then decodes greedily with the batches
// below, on both runners; returns the largest |difference| / max|logit| over every step.
float run_both(Runner& eager, Runner& graphs, bool exact, int prompt) {
  const size_t vocab = size_t(small_config().vocab_size);
  std::vector<int32_t> next(5);
  for (int s = 0; s < 5; ++s) {
    std::vector<int32_t> prompt_tokens(size_t(prompt + s));
    for (size_t i = 0; i < prompt_tokens.size(); ++i)
      prompt_tokens[i] = int32_t((7 * s + i * 5) % 128);
    const std::vector<int32_t>& prompt = prompt_tokens;
    const std::vector<float> a = eager.step({s}, {prompt}), b = graphs.step({s}, {prompt});
    EXPECT_EQ(a, b) << "a prefill runs kernel by kernel in both";
    next[size_t(s)] = argmax_row(a, 0, vocab);
  }
  const std::vector<std::vector<int>> batches = {{0, 1, 2}, {0, 1, 2}, {3},         {0, 1, 2, 3, 4},
                                                 {4, 2},    {0, 1, 2}, {1, 3, 4, 0}};
  float worst = 0;
  for (const std::vector<int>& ids : batches) {
    std::vector<std::vector<int32_t>> toks;
    for (const int s : ids) toks.push_back({next[size_t(s)]});
    const std::vector<float> a = eager.step(ids, toks), b = graphs.step(ids, toks);
    EXPECT_EQ(a.size(), b.size());
    float scale = 0, diff = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      scale = std::max(scale, std::fabs(a[i]));
      diff = std::max(diff, std::fabs(a[i] - b[i]));
    }
    worst = std::max(worst, diff / scale);
    if (exact) {
      EXPECT_EQ(a, b);
    }
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_EQ(argmax_row(a, i, vocab), argmax_row(b, i, vocab));
      next[size_t(ids[i])] = argmax_row(a, i, vocab);
    }
  }
  return worst;
}

TEST(DecodeGraphs, ReplaysGiveTheEagerLogitsBitwise) {
  Runner eager(0, 5), graphs(32, 5);  // 32 keys: one piece per key list, as the eager plan
  run_both(eager, graphs, true, 3);
  EXPECT_EQ(eager.runner->graph_replays(), 0);
  EXPECT_EQ(graphs.runner->graph_replays(), 7);    // every decode step
  EXPECT_EQ(graphs.runner->graphs_captured(), 4);  // buckets 4 (3 rows), 1, 8 (5 rows), 2
}

TEST(DecodeGraphs, ALargerKeyCapacityAgreesToRounding) {
  // 300-odd keys: the eager plan cuts them in two pieces of ~160, the graphs' (sized for 4096
  // keys) in pieces of 256, so the sums are taken in another order.
  Runner eager(0, 5, 96), graphs(4096, 5, 96);
  const float worst = run_both(eager, graphs, false, 300);
  EXPECT_GT(worst, 0.0f) << "the pieces should differ";
  EXPECT_LE(worst, 1e-5f);
  EXPECT_EQ(graphs.runner->graph_replays(), 7);
}

TEST(DecodeGraphs, StepsThatDoNotFitRunKernelByKernel) {
  Runner graphs(32, 2);
  std::vector<int32_t> prompt(30, 5);
  graphs.step({0}, {prompt});
  graphs.step({0}, {{1}});  // 31 keys: fits
  EXPECT_EQ(graphs.runner->graph_replays(), 1);
  graphs.step({0}, {{1}});  // 32 keys: fits
  EXPECT_EQ(graphs.runner->graph_replays(), 2);
  graphs.step({1}, {{1, 2}});  // two tokens: a prefill
  EXPECT_EQ(graphs.runner->graph_replays(), 2);
}
#else
TEST(DecodeGraphs, NeedTheCudaBackend) {
  GTEST_SKIP() << "built without the CUDA backend";
}
#endif

}  // namespace
}  // namespace tessera
