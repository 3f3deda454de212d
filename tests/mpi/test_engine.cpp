// The engine with many requests at once, on every layout that fits the world: each request's
// tokens equal those of the same request run alone on one rank (greedy and seeded sampling; mixed
// prompt and output lengths; prefill in chunks; several steps in flight down the pipeline).
#include <gtest/gtest.h>

#include <random>

#include "parallel/mpi_communicator.h"
#include "parallel/process_groups.h"
#include "runtime/draft_proposer.h"
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

// 64 requests of mixed prompt (1..40) and output (1..24) lengths; a third sample with a seed.
std::vector<GenerationRequest> mixed_requests() {
  std::mt19937 g(7);
  std::vector<GenerationRequest> out;
  for (int i = 0; i < 64; ++i) {
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
    if (i % 4 == 0) r.sampling.logprobs = 3;  // log-probabilities come back with the tokens
    if (i % 8 == 2) r.sampling.logprobs = 0;
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

  // Every request through an engine of its own on `layout` (the rest of the world as replicas
  // doing the same); empty where the layout does not divide the world. On ranks that are not
  // their group's leader the results are empty.
  static std::vector<GenerationResult> each_alone_in_engine(Layout l, EngineOptions options) {
    const int p = ref_->world->size(), model_ranks = l.tp * l.pp * l.sp;
    if (p % model_ranks != 0) return {};
    ProcessGroups g =
        ProcessGroups::create({p / model_ranks, l.pp, l.sp, l.tp}, MpiCommunicator::world());
    const LlamaModel model = LlamaModel::load(ref_->reader, g.tp.get(), g.pp.get(), g.sp.get());
    options.scheduler.num_blocks = 512;
    std::vector<GenerationResult> out;
    for (const GenerationRequest& r : mixed_requests()) {
      Engine engine(model, ref_->tokenizer, options);
      if (engine.leader()) engine.submit(r);
      const std::vector<GenerationResult> one = engine.run();
      if (engine.leader()) out.push_back(one.at(0));
    }
    return out;
  }

  // Runs every request at once on `layout` (the rest of the world as data-parallel replicas,
  // each doing the same) and checks each result against `want` (default: the request alone on
  // one rank, by the Generator).
  void check(Layout l, EngineOptions options = {},
             const std::vector<GenerationResult>* want = nullptr, bool sampled_too = true,
             const LoadOptions& load = {}, bool decode_graphs = false) {
    const std::vector<GenerationResult>& alone = want ? *want : *alone_;
    const int p = ref_->world->size();
    const int model_ranks = l.tp * l.pp * l.sp;
    if (p % model_ranks != 0) GTEST_SKIP() << "layout does not divide " << p << " ranks";
    SCOPED_TRACE("tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp) + " sp " +
                 std::to_string(l.sp));
    ProcessGroups g =
        ProcessGroups::create({p / model_ranks, l.pp, l.sp, l.tp}, MpiCommunicator::world());
    LlamaModel model = LlamaModel::load(ref_->reader, g.tp.get(), g.pp.get(), g.sp.get(), load);
    if (options.scheduler.num_blocks == 0)
      options.scheduler.num_blocks = 512;  // room for every request at once
    options.decode_graphs = decode_graphs;
    Engine engine(model, ref_->tokenizer, options);
    const auto requests = mixed_requests();
    std::vector<std::string> streamed(requests.size());
    if (engine.leader())
      for (size_t i = 0; i < requests.size(); ++i)
        engine.submit(requests[i], [&streamed, i](const std::string& t, const GenerationResult&) {
          streamed[i] += t;
        });
    const std::vector<GenerationResult> got = engine.run();
    EXPECT_GT(engine.stats().steps, 0);
    if (decode_graphs) {  // most steps of the run decode only
      EXPECT_GT(engine.stats().graph_replays, engine.stats().steps / 2);
    }
    if (!engine.leader()) {
      EXPECT_TRUE(got.empty());
      return;
    }
    ASSERT_EQ(got.size(), requests.size());
    last_metrics_ = engine.stats().scheduler;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!sampled_too && requests[i].sampling.temperature > 0) continue;
      EXPECT_EQ(got[i].tokens, alone[i].tokens) << "request " << i;
      EXPECT_EQ(got[i].finish_reason, alone[i].finish_reason) << "request " << i;
      EXPECT_EQ(got[i].text, alone[i].text) << "request " << i;
      EXPECT_EQ(streamed[i], got[i].text) << "request " << i;
      expect_same_logprobs(got[i], alone[i], i);
    }
  }

  // (within 5e-3: some layouts keep the KV cache or weights in 16 bits)
  static void expect_same_logprobs(const GenerationResult& got, const GenerationResult& want,
                                   size_t request) {
    ASSERT_EQ(got.logprobs.size(), want.logprobs.size()) << "request " << request;
    for (size_t t = 0; t < got.logprobs.size(); ++t) {
      EXPECT_NEAR(got.logprobs[t].logprob, want.logprobs[t].logprob, 5e-3)
          << "request " << request << " token " << t;
      ASSERT_EQ(got.logprobs[t].top.size(), want.logprobs[t].top.size());
      for (size_t k = 0; k < got.logprobs[t].top.size(); ++k)
        EXPECT_NEAR(got.logprobs[t].top[k].second, want.logprobs[t].top[k].second, 5e-3)
            << "request " << request << " token " << t << " alternative " << k;
    }
  }

  static ReferenceModel* ref_;
  static std::vector<GenerationResult>* alone_;
  SchedulerMetrics last_metrics_;  // the leader's, after check()
};

ReferenceModel* EngineTest::ref_ = nullptr;
std::vector<GenerationResult>* EngineTest::alone_ = nullptr;

TEST_F(EngineTest, OneRankBatchesEqualEachRequestAlone) {
  check({1, 1, 1}, {});
}

TEST_F(EngineTest, SmallBatchesAndChunkedPrefill) {
  EngineOptions o;
  o.scheduler.max_sequences = 3;    // requests wait for room
  o.scheduler.max_step_tokens = 7;  // prompts prefilled over several steps
  check({1, 1, 1}, o);
}

// A server's cancellations (Engine::cancel from the service hook) while steps are in flight in
// a pipeline: the cancelled requests end ("cancelled", or finished before), the others are
// untouched, and every KV block is back at the end.
TEST_F(EngineTest, CancelWhileStepsAreInFlight) {
  const int p = ref_->world->size();
  for (const Layout l : {Layout{1, 2, 1}, Layout{2, 2, 1}, Layout{1, 1, 1}}) {
    if (p % (l.tp * l.pp) != 0) continue;
    SCOPED_TRACE("tp " + std::to_string(l.tp) + " pp " + std::to_string(l.pp));
    ProcessGroups g =
        ProcessGroups::create({p / (l.tp * l.pp), l.pp, 1, l.tp}, MpiCommunicator::world());
    LlamaModel model = LlamaModel::load(ref_->reader, g.tp.get(), g.pp.get(), g.sp.get());
    EngineOptions o;
    o.scheduler.num_blocks = 512;
    Engine engine(model, ref_->tokenizer, o);
    const auto requests = mixed_requests();
    std::vector<int64_t> ids;
    if (engine.leader()) {
      for (const auto& r : requests) ids.push_back(engine.submit(r));
      bool cancelled = false;
      engine.set_service([&](bool idle) {
        if (!cancelled && engine.stats().sampled_tokens >= 40) {
          for (size_t i = 0; i < ids.size(); i += 2) engine.cancel(ids[i]);
          engine.cancel(ids[0]);  // twice: ignored
          cancelled = true;
        }
        return !cancelled && !idle;
      });
    }
    const std::vector<GenerationResult> got = engine.run();
    if (!engine.leader()) continue;
    ASSERT_EQ(got.size(), requests.size());
    int n_cancelled = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i].finish_reason == "cancelled") {
        EXPECT_EQ(i % 2, 0u) << "request " << i << " was not cancelled";
        ++n_cancelled;
        const std::vector<int32_t>& all = (*alone_)[i].tokens;
        ASSERT_LE(got[i].tokens.size(), all.size());
        EXPECT_TRUE(std::equal(got[i].tokens.begin(), got[i].tokens.end(), all.begin()));
        continue;
      }
      EXPECT_EQ(got[i].tokens, (*alone_)[i].tokens) << "request " << i;
    }
    EXPECT_GT(n_cancelled, 8);
    EXPECT_EQ(engine.scheduler_metrics().blocks_used, 0);
    EXPECT_EQ(engine.scheduler_metrics().running + engine.scheduler_metrics().waiting, 0);
  }
}

TEST_F(EngineTest, TensorParallel) {
  check({2, 1, 1}, {});
}
TEST_F(EngineTest, PipelineStepsInFlight) {
  check({1, 2, 1}, {});
}
TEST_F(EngineTest, PipelineOneStepAtATime) {
  EngineOptions o;
  o.max_in_flight = 1;
  check({1, 2, 1}, o);
}
// By default a pipeline prefills a long prompt in two chunks per stage (of at least
// kMinPromptChunk tokens), so that the stages work on different chunks at once: a 400-token
// prompt through PP=2 in 4 steps of 100 tokens (then one token a step), on the engine's path,
// with the tokens of the one-rank run; a prompt shorter than two chunks' minimum is not cut.
TEST_F(EngineTest, PipelinePrefillsAPromptInTwoChunksPerStageByDefault) {
  const int p = ref_->world->size();
  if (p % 2 != 0) GTEST_SKIP() << "PP=2 does not divide " << p << " ranks";
  ModelConfig c = engine_config();
  c.max_position_embeddings = 512;
  ProcessGroups g = ProcessGroups::create({p / 2, 2, 1, 1}, MpiCommunicator::world());
  const LlamaModel model = LlamaModel::random(c, 5, g.tp.get(), g.pp.get());
  const std::unique_ptr<Communicator> local = make_local_communicator();
  const LlamaModel one_rank = LlamaModel::random(c, 5, local.get(), local.get());
  for (const int prompt : {400, 100}) {
    SCOPED_TRACE("a prompt of " + std::to_string(prompt));
    EngineOptions o;
    o.scheduler.num_blocks = 64;
    Engine engine(model, ref_->tokenizer, o);
    GenerationRequest r;
    for (int t = 0; t < prompt; ++t) r.prompt.push_back(int32_t((t * 37 + 5) % 256));
    r.max_tokens = 3;
    r.ignore_eos = true;
    if (engine.leader()) engine.submit(r);
    const std::vector<GenerationResult> got = engine.run();
    std::vector<int64_t> step_tokens;
    for (const EngineSpan& s : engine.stats().spans) step_tokens.push_back(s.tokens);
    const std::vector<int64_t> want = prompt == 400
                                          ? std::vector<int64_t>{100, 100, 100, 100, 1, 1}
                                          : std::vector<int64_t>{kMinPromptChunk, 36, 1, 1};
    EXPECT_EQ(step_tokens, want);
    if (engine.leader()) {
      EXPECT_EQ(got.at(0).tokens, Generator(one_rank, ref_->tokenizer).generate(r).tokens);
    }
  }
}

TEST_F(EngineTest, FourStagesSmallChunks) {
  EngineOptions o;
  o.scheduler.prefill_chunk = 5;
  check({1, 4, 1}, o);
}
TEST_F(EngineTest, TensorAndPipeline) {
  check({2, 2, 1}, {});
}
TEST_F(EngineTest, SequenceParallel) {
  check({1, 1, 2}, {});
}
TEST_F(EngineTest, SequenceTensorPipeline) {
  check({2, 2, 2}, {});
}
// A half-precision KV cache: batched, every request's tokens equal those it gets alone on the
// same layout with the same cache: all of them on one rank; the greedy ones under TP x PP and
// SP. (Steps of more than 16 rows multiply through OpenBLAS, whose blocking follows the row
// count; a K/V value an ulp of float32 away can round to a neighbouring float16, 2^13 times
// further, and under TP x PP that moves one seeded draw of request 22 here.) The cache takes
// half the bytes.
TEST_F(EngineTest, HalfPrecisionKvCacheBatchesEqualEachRequestAlone) {
  EngineOptions o;
  o.kv_dtype = DType::kF16;
  const ModelConfig c = engine_config();
  EXPECT_EQ(KvPoolShape({1, 2, c.head_dim, 16, DType::kF16}).bytes_per_block() * 2,
            KvPoolShape({1, 2, c.head_dim, 16, DType::kF32}).bytes_per_block());
  for (const Layout l : {Layout{1, 1, 1}, Layout{2, 2, 1}, Layout{1, 1, 2}}) {
    const std::vector<GenerationResult> alone = each_alone_in_engine(l, o);
    if (ref_->world->size() % (l.tp * l.pp * l.sp) == 0)
      check(l, o, &alone, /*sampled_too=*/l.tp * l.pp * l.sp == 1);
  }
}
#if TESSERA_HAVE_CUDA
// The engine on the GPU path (weights, activations and the paged KV pool on the GPU; on an
// emulated one where there is none): 64 mixed requests batched equal each request alone on the
// CPU, on one rank and under TP x PP with every rank on one GPU. Greedy requests only: the GPU's
// float32 sums differ from the CPU's in the last bits, which a sampled draw may amplify.
LoadOptions on_test_gpu() {
  LoadOptions gpu;
  gpu.device = test_gpu();
  return gpu;
}
TEST_F(EngineTest, GpuPathBatchesEqualEachRequestAloneOnTheCpu) {
  check({1, 1, 1}, {}, nullptr, false, on_test_gpu());
}
TEST_F(EngineTest, GpuPathUnderTensorAndPipelineParallelism) {
  check({2, 2, 1}, {}, nullptr, false, on_test_gpu());
}
// Decode steps as CUDA graph replays on every stage (stages hand each other GPU tensors; a
// graph holds no MPI collective, so TP stays 1), against each request alone on the CPU.
TEST_F(EngineTest, GpuPathWithDecodeGraphsOverPipelineStages) {
  // (The emulator is slow: the 2- and 4-rank runs cover it.)
  if (ref_->world->size() > 4) GTEST_SKIP() << "covered by the runs on 2 and 4 ranks";
  check({1, 2, 1}, {}, nullptr, false, on_test_gpu(), true);
}
#endif

TEST_F(EngineTest, EightWayTensorParallel) {
  check({8, 1, 1}, {});
}

// Speculative decoding by prompt lookup changes no token, greedy or seeded (each checked token
// is sampled as decoding samples it: same logits, same seed per output index), on one rank and
// under TP, PP with steps in flight, and both; and proposals were checked, some accepted and
// some not. (The random model's outputs repeat themselves, so n-grams of 1 to 3 tokens recur.)
EngineOptions speculating() {
  EngineOptions o;
  o.speculative_tokens = 3;
  o.ngram = {1, 3};
  return o;
}
TEST_F(EngineTest, SpeculativeDecodingChangesNoTokenOnOneRank) {
  check({1, 1, 1}, speculating());
  if (!last_metrics_.steps) return;  // (not the leader)
  std::printf("speculative decoding, one rank: %lld proposals, %lld accepted, %lld steps\n",
              (long long)last_metrics_.proposed_tokens, (long long)last_metrics_.accepted_tokens,
              (long long)last_metrics_.steps);
  EXPECT_GT(last_metrics_.proposed_tokens, 100);
  EXPECT_GT(last_metrics_.accepted_tokens, 20);
  EXPECT_LT(last_metrics_.accepted_tokens, last_metrics_.proposed_tokens);
}
TEST_F(EngineTest, SpeculativeDecodingUnderTensorAndPipelineParallelism) {
  check({2, 1, 1}, speculating());
  check({1, 2, 1}, speculating());
  check({2, 2, 1}, speculating());
  if (!last_metrics_.steps) return;
  EXPECT_GT(last_metrics_.accepted_tokens, 20);
}
// Under SP each checked row's K/V goes to the SP rank of its position, and each row attends over
// every rank's keys up to its own position.
TEST_F(EngineTest, SpeculativeDecodingUnderSequenceParallelism) {
  check({1, 1, 2}, speculating());
  check({2, 1, 2}, speculating());
  if (!last_metrics_.steps) return;
  EXPECT_GT(last_metrics_.accepted_tokens, 20);
}

// With a draft model, the target's own weights in q4_0 (a file of its own, whole on each
// leader): no token changes, on one rank and under TP, PP with steps in flight, both, and SP.
TEST_F(EngineTest, SpeculativeDecodingWithADraftModel) {
  const std::string draft =
      write_random_model(*ref_->world, engine_config(), "tessera_engine_draft.h5", 3, DType::kQ4_0);
  const TokenizerData tokenizer = ref_->reader.read_tokenizer();
  auto drafting = [&] {
    EngineOptions o;
    o.speculative_tokens = 3;
    o.proposer = std::make_shared<DraftProposer>(DraftModel::load(draft, tokenizer, {}),
                                                 DraftOptions{512, 16});
    return o;
  };
  check({1, 1, 1}, drafting());
  if (last_metrics_.steps) {
    std::printf("draft model, one rank: %lld proposals, %lld accepted, %lld steps\n",
                (long long)last_metrics_.proposed_tokens, (long long)last_metrics_.accepted_tokens,
                (long long)last_metrics_.steps);
    EXPECT_GT(last_metrics_.proposed_tokens, 100);
    EXPECT_GT(last_metrics_.accepted_tokens, last_metrics_.proposed_tokens / 4);
    EXPECT_LT(last_metrics_.accepted_tokens, last_metrics_.proposed_tokens);
  }
  check({1, 2, 1}, drafting());
  check({2, 2, 1}, drafting());
  check({1, 1, 2}, drafting());
  ref_->world->barrier();
  if (ref_->world->rank() == 0) std::filesystem::remove(draft);
}

// A KV cache far too small for the load: sequences are preempted and recomputed, and every
// request still ends with the tokens it has alone.
TEST_F(EngineTest, PreemptionKeepsEveryRequestsTokens) {
  EngineOptions o;
  o.scheduler.num_blocks = 12;  // 192 tokens for 64 requests of up to 64 positions each
  o.scheduler.max_sequences = 16;
  check({1, 1, 1}, o);
  if (ref_->world->rank() == 0) {
    EXPECT_GT(last_metrics_.preemptions, 0);
  }
}

TEST_F(EngineTest, PreemptionUnderPipelineAndTensorParallel) {
  EngineOptions o;
  o.scheduler.num_blocks = 12;
  o.scheduler.max_sequences = 16;
  check({2, 2, 1}, o);
}

// Requests sharing a long system prompt, submitted together: its blocks are computed once, and
// every answer equals the request alone (without any cache).
TEST(EnginePrefixCache, SharedSystemPromptIsComputedOnce) {
  ReferenceModel ref(engine_config(), "tessera_prefix.h5", 5);
  std::vector<int32_t> system;
  for (int i = 0; i < 50; ++i) system.push_back(int32_t((i * 37 + 11) % 256));
  std::vector<GenerationRequest> requests;
  for (int r = 0; r < 8; ++r) {
    GenerationRequest q;
    q.prompt = system;
    for (int t = 0; t <= r; ++t) q.prompt.push_back(int32_t((r * 13 + t * 7) % 256));
    q.max_tokens = 12;
    q.ignore_eos = true;
    requests.push_back(q);
  }
  EngineOptions o;
  o.scheduler.num_blocks = 64;
  Engine engine(ref.model, ref.tokenizer, o);
  for (const GenerationRequest& q : requests) engine.submit(q);
  const std::vector<GenerationResult> got = engine.run();
  const SchedulerMetrics m = engine.stats().scheduler;
  int64_t prompt_tokens = 0;
  for (const GenerationRequest& q : requests) prompt_tokens += int64_t(q.prompt.size());
  // The 3 full blocks of the 50-token system prompt (48 tokens) are computed by the first
  // request only.
  EXPECT_EQ(m.cached_tokens, 7 * 48);
  EXPECT_EQ(m.prefill_tokens, prompt_tokens - 7 * 48);
  EngineOptions no_cache = o;
  no_cache.scheduler.prefix_caching = false;
  Generator alone(ref.model, ref.tokenizer, no_cache);
  ASSERT_EQ(got.size(), requests.size());
  for (size_t i = 0; i < requests.size(); ++i)
    EXPECT_EQ(got[i].tokens, alone.generate(requests[i]).tokens) << "request " << i;
}

}  // namespace
}  // namespace tessera
