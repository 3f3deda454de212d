// The server's bridge to the engine (runtime/request_broker.h), with a real engine on a random
// model and client threads instead of sockets: what clients get equals the engine's own results
// for the same requests; a cancelled request ends at once with its KV blocks back; a full queue
// refuses with 503; a deadline gives 504; a shutdown lets running requests finish within the
// grace period and cancels them after it. Also the log-probabilities of sampled tokens against
// a direct log-softmax.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>

#include "parallel/communicator.h"
#include "runtime/batch_sampler.h"
#include "runtime/openai_api.h"
#include "runtime/request_broker.h"

namespace tessera {
namespace {

struct TinyEngine {
  std::unique_ptr<Communicator> tp = make_local_communicator(), pp = make_local_communicator();
  LlamaModel model;
  Tokenizer tokenizer{stand_in_tokenizer(300)};
  EngineOptions options;
  TinyEngine() {
    ModelConfig c;
    c.architecture = "llama";
    c.vocab_size = 300;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.head_dim = 8;
    c.max_position_embeddings = 256;
    model = LlamaModel::random(c, 7, tp.get(), pp.get());
    options.scheduler.num_blocks = 64;
    options.scheduler.block_size = 4;
    options.scheduler.max_sequences = 4;
  }
};

GenerationRequest request(int i, int64_t max_tokens) {
  GenerationRequest r;
  for (int t = 0; t <= i % 5; ++t) r.prompt.push_back(int32_t(10 + 7 * i + t));
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  if (i % 2) {
    r.sampling.temperature = 0.8f;
    r.sampling.top_k = 20;
    r.sampling.seed = uint64_t(i);
  }
  r.sampling.logprobs = i % 3 == 0 ? 2 : -1;
  return r;
}

// Waits for the job to end; returns its last state.
ServingJob::State wait_end(ServingJob& job) {
  ServingJob::State s;
  uint64_t seen = 0;
  do job.wait(seen, 1.0, s);
  while (!s.ended());
  return s;
}

// Runs the engine with the broker on this thread while `client` runs on another; the client
// must end with request_shutdown().
void serve_with(TinyEngine& t, RequestBroker& broker, const std::function<void()>& client) {
  Engine engine(t.model, t.tokenizer, t.options);
  engine.set_service([&](bool idle) { return broker.serve(engine, idle); });
  std::thread c(client);
  engine.run();
  c.join();
  EXPECT_EQ(engine.scheduler_metrics().blocks_used, 0);
  EXPECT_EQ(engine.scheduler_metrics().running + engine.scheduler_metrics().waiting, 0);
}

TEST(RequestBroker, ClientsGetWhatTheEngineMakesAlone) {
  TinyEngine t;
  std::vector<GenerationResult> want;
  {
    Engine alone(t.model, t.tokenizer, t.options);
    for (int i = 0; i < 9; ++i) alone.submit(request(i, 12));
    want = alone.run();
  }
  ServingMetrics metrics;
  RequestBroker broker(BrokerOptions{}, metrics);
  std::vector<ServingJob::State> got(9);
  serve_with(t, broker, [&] {
    std::vector<std::shared_ptr<ServingJob>> jobs;
    for (int i = 0; i < 9; ++i) jobs.push_back(broker.submit({request(i, 12)}));
    for (int i = 0; i < 9; ++i) got[size_t(i)] = wait_end(*jobs[size_t(i)]);
    broker.request_shutdown();
  });
  for (size_t i = 0; i < 9; ++i) {
    ASSERT_TRUE(got[i].error.empty()) << got[i].error;
    const GenerationResult& r = got[i].results[0];
    EXPECT_EQ(r.tokens, want[i].tokens) << "request " << i;
    EXPECT_EQ(r.text, want[i].text);
    EXPECT_EQ(r.finish_reason, "length");
    EXPECT_EQ(r.logprobs.size(), i % 3 == 0 ? r.tokens.size() : 0u);
  }
  EXPECT_NE(metrics.render().find("tessera_requests_finished_total{finish_reason=\"length\"} 9"),
            std::string::npos);
}

TEST(RequestBroker, CancelledRequestsEndAtOnceAndGiveTheirBlocksBack) {
  TinyEngine t;
  ServingMetrics metrics;
  RequestBroker broker(BrokerOptions{}, metrics);
  ServingJob::State cancelled, other;
  serve_with(t, broker, [&] {
    auto job = broker.submit({request(0, 200)});
    auto keep = broker.submit({request(1, 20)});
    ServingJob::State s;
    uint64_t seen = 0;
    do job->wait(seen, 1.0, s);
    while (s.results[0].tokens.size() < 3 && !s.ended());
    broker.cancel(job);
    cancelled = wait_end(*job);
    other = wait_end(*keep);
    broker.request_shutdown();
  });
  EXPECT_EQ(cancelled.results[0].finish_reason, "cancelled");
  EXPECT_LT(cancelled.results[0].tokens.size(), 200u);
  EXPECT_EQ(other.results[0].finish_reason, "length");
  EXPECT_EQ(other.results[0].tokens.size(), 20u);
}

TEST(RequestBroker, AFullQueueRefusesWith503) {
  ServingMetrics metrics;
  BrokerOptions o;
  o.max_queued = 2;
  RequestBroker broker(o, metrics);
  broker.submit({request(0, 4)});
  broker.submit({request(1, 4)});
  try {
    broker.submit({request(2, 4)});
    FAIL() << "a third request was queued";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
    EXPECT_NE(std::string(e.what()).find("--max-queued-requests 2"), std::string::npos);
  }
}

TEST(RequestBroker, ADeadlineGives504) {
  TinyEngine t;
  ServingMetrics metrics;
  BrokerOptions o;
  o.request_timeout = 1e-4;
  RequestBroker broker(o, metrics);
  ServingJob::State s;
  serve_with(t, broker, [&] {
    auto job = broker.submit({request(0, 200)});
    s = wait_end(*job);
    broker.request_shutdown();
  });
  EXPECT_EQ(s.error_status, 504);
  EXPECT_NE(s.error.find("--request-timeout"), std::string::npos);
}

TEST(RequestBroker, ShutdownFinishesRunningRequestsWithinTheGrace) {
  TinyEngine t;
  ServingMetrics metrics;
  RequestBroker broker(BrokerOptions{}, metrics);  // 30 s of grace
  ServingJob::State s;
  int refused = 0;
  serve_with(t, broker, [&] {
    auto job = broker.submit({request(0, 40)});
    ServingJob::State first;
    uint64_t seen = 0;
    do job->wait(seen, 1.0, first);
    while (first.results[0].tokens.empty());
    broker.request_shutdown();
    try {
      broker.submit({request(1, 4)});
    } catch (const ApiError& e) {
      refused = e.status();
    }
    s = wait_end(*job);
  });
  EXPECT_EQ(refused, 503);
  EXPECT_TRUE(s.error.empty()) << s.error;
  EXPECT_EQ(s.results[0].tokens.size(), 40u);
}

TEST(RequestBroker, ShutdownCancelsWhatOutlastsTheGrace) {
  TinyEngine t;
  ServingMetrics metrics;
  BrokerOptions o;
  o.shutdown_grace = 0;
  RequestBroker broker(o, metrics);
  ServingJob::State s;
  serve_with(t, broker, [&] {
    auto job = broker.submit({request(0, 200)});
    ServingJob::State first;
    uint64_t seen = 0;
    do job->wait(seen, 1.0, first);
    while (first.results[0].tokens.empty());
    broker.request_shutdown();
    s = wait_end(*job);
  });
  EXPECT_EQ(s.error_status, 503);
  EXPECT_LT(s.results[0].tokens.size(), 200u);
}

TEST(RequestBroker, AFailedEngineFailsEveryJobAndTakesNoMore) {
  TinyEngine t;
  t.options.fail_at_step = 3;  // the engine throws when step 3 starts
  ServingMetrics metrics;
  RequestBroker broker(BrokerOptions{}, metrics);
  Engine engine(t.model, t.tokenizer, t.options);
  engine.set_service([&](bool idle) { return broker.serve(engine, idle); });
  auto job = broker.submit({request(0, 50)});
  ServingJob::State s;
  std::thread client([&] { s = wait_end(*job); });
  EXPECT_THROW(engine.run(), Error);
  broker.close(500, "the server failed");  // what tessera serve does before it stops
  client.join();
  EXPECT_EQ(s.error_status, 500);
  try {
    broker.submit({request(1, 4)});
    FAIL() << "a closed broker took a job";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
  }
}

TEST(TokenLogprobs, EqualADirectLogSoftmax) {
  std::vector<float> logits = {1.0f, 3.0f, -2.0f, 3.0f, NAN, 0.5f};
  const TokenLogprobs lp = logprobs_of(logits.data(), int64_t(logits.size()), 5, 3);
  double z = 0;
  for (float l : logits)
    if (!std::isnan(l)) z += std::exp(double(l));
  EXPECT_NEAR(lp.logprob, 0.5 - std::log(z), 1e-6);
  ASSERT_EQ(lp.top.size(), 3u);
  EXPECT_EQ(lp.top[0].first, 1);  // ties: the lower id first
  EXPECT_EQ(lp.top[1].first, 3);
  EXPECT_EQ(lp.top[2].first, 0);
  EXPECT_NEAR(lp.top[2].second, 1.0 - std::log(z), 1e-6);
  // Through the pipeline's message and back.
  std::vector<int32_t> words;
  append_sampled(words, 5, lp, 3);
  append_sampled(words, 9, {}, -1);
  EXPECT_EQ(int64_t(words.size()), sampled_words(3) + sampled_words(-1));
  size_t at = 0;
  TokenLogprobs back;
  EXPECT_EQ(read_sampled(words, at, 3, back), 5);
  EXPECT_EQ(back.logprob, lp.logprob);
  EXPECT_EQ(back.top, lp.top);
  EXPECT_EQ(read_sampled(words, at, -1, back), 9);
  EXPECT_EQ(at, words.size());
}

}  // namespace
}  // namespace tessera
