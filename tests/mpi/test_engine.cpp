// The engine with many requests at once, on every layout that fits the world: each request's
// tokens equal those of the same request run alone on one rank (greedy and seeded sampling; mixed
// prompt and output lengths; prefill in chunks; several steps in flight down the pipeline).
#include <gtest/gtest.h>

#include <random>

#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "runtime/engine.h"
#include "runtime/generator.h"
#include "tests/mpi/random_model.h"

namespace tessera {
namespace {

ModelConfig engine_config() {
  ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = 256;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_layers = 4;
  c.num_heads = 8;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 96;
  return c;
}

// 20 requests of mixed prompt (1..40) and output (1..24) lengths; a third sample with a seed.
std::vector<GenerationRequest> mixed_requests() {
  std::mt19937 g(7);
  std::vector<GenerationRequest> out;
  for (int i = 0; i < 20; ++i) {
    GenerationRequest r;
    const int prompt = 1 + int(g() % 40);
    for (int t = 0; t < prompt; ++t) r.prompt.push_back(int32_t(g() % 256));
    r.max_tokens = 1 + int(g() % 24);
    r.ignore_eos = true;
    if (i % 3 == 1) {
      r.sampling.temperature = 0.8f;
      r.sampling.top_k = i % 2 ? 20 : 0;
      r.sampling.top_p = 0.9f;
      r.sampling.repetition_penalty = i % 2 ? 1.0f : 1.3f;
      r.sampling.seed = uint64_t(100 + i);
    }
    out.push_back(r);
  }
  return out;
}

struct Layout {
  int tp, pp, sp;
};

class EngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ref_ = new ReferenceModel(engine_config(), "tessera_engine.h5", 3);
    alone_ = new std::vector<GenerationResult>;
    Generator one(ref_->model, ref_->tokenizer);
    for (const GenerationRequest& r : mixed_requests()) alone_->push_back(one.generate(r));
  }
  static void TearDownTestSuite() {
    delete alone_;
    delete ref_;
  }

  // Runs every request at once on `layout` (the rest of the world as data-parallel replicas,
  // each doing the same) and checks each result against the request alone on one rank.
  void check(Layout l, EngineOptions options = {}) {
    const int p = ref_->world->size();
    const int model_ranks = l.tp * l.pp * l.sp;
    if (p % model_ranks != 0) GTEST_SKIP() << "layout does not divide " << p << " ranks";
    SCOPED_TRACE("tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp) + " sp " +
                 std::to_string(l.sp));
    ProcessGroups g =
        ProcessGroups::create({p / model_ranks, l.pp, l.sp, l.tp}, MpiCommunicator::world());
    const LlamaModel model = LlamaModel::load(ref_->reader, g.tp.get(), g.pp.get(), g.sp.get());
    if (options.num_blocks == 0) options.num_blocks = 256;  // room for every request at once
    Engine engine(model, ref_->tokenizer, options);
    const auto requests = mixed_requests();
    std::vector<std::string> streamed(requests.size());
    if (engine.leader())
      for (size_t i = 0; i < requests.size(); ++i)
        engine.submit(requests[i], [&streamed, i](const std::string& t) { streamed[i] += t; });
    const std::vector<GenerationResult> got = engine.run();
    EXPECT_GT(engine.stats().steps, 0);
    if (!engine.leader()) {
      EXPECT_TRUE(got.empty());
      return;
    }
    ASSERT_EQ(got.size(), requests.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_EQ(got[i].tokens, (*alone_)[i].tokens) << "request " << i;
      EXPECT_EQ(got[i].finish_reason, (*alone_)[i].finish_reason) << "request " << i;
      EXPECT_EQ(got[i].text, (*alone_)[i].text) << "request " << i;
      EXPECT_EQ(streamed[i], got[i].text) << "request " << i;
    }
  }

  static ReferenceModel* ref_;
  static std::vector<GenerationResult>* alone_;
};

ReferenceModel* EngineTest::ref_ = nullptr;
std::vector<GenerationResult>* EngineTest::alone_ = nullptr;

TEST_F(EngineTest, OneRankBatchesEqualEachRequestAlone) { check({1, 1, 1}, {}); }

TEST_F(EngineTest, SmallBatchesAndChunkedPrefill) {
  EngineOptions o;
  o.max_sequences = 3;    // requests wait for room
  o.max_step_tokens = 7;  // prompts prefilled over several steps
  check({1, 1, 1}, o);
}

TEST_F(EngineTest, TensorParallel) { check({2, 1, 1}, {}); }
TEST_F(EngineTest, PipelineStepsInFlight) { check({1, 2, 1}, {}); }
TEST_F(EngineTest, PipelineOneStepAtATime) {
  EngineOptions o;
  o.max_in_flight = 1;
  check({1, 2, 1}, o);
}
TEST_F(EngineTest, FourStagesSmallChunks) {
  EngineOptions o;
  o.prefill_chunk = 5;
  check({1, 4, 1}, o);
}
TEST_F(EngineTest, TensorAndPipeline) { check({2, 2, 1}, {}); }
TEST_F(EngineTest, SequenceParallel) { check({1, 1, 2}, {}); }
TEST_F(EngineTest, SequenceTensorPipeline) { check({2, 2, 2}, {}); }
TEST_F(EngineTest, EightWayTensorParallel) { check({8, 1, 1}, {}); }

}  // namespace
}  // namespace tessera
