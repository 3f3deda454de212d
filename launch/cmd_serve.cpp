// tessera serve: the OpenAI-compatible endpoint. Every rank loads its shard and runs the
// engine; rank 0 (the replica's leader) also listens for HTTP and schedules. SIGTERM or SIGINT
// stops taking requests, lets running ones finish within --shutdown-grace, cancels the rest and
// shuts every rank down.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include <unistd.h>

#include "launch/engine_report.h"
#include "launch/http_server.h"
#include "launch/job_failure.h"
#include "launch/model_run.h"
#include "launch/options.h"
#include "parallel/mpi_communicator.h"
#include "runtime/request_broker.h"
#include "runtime/serving_metrics.h"

namespace tessera::cli {
namespace {

// Set by SIGTERM / SIGINT (a signal handler can only reach a global); read between steps.
// (lock-free, so the handler may run on any thread and the main thread read it)
std::atomic<int> g_stop_requested{0};
static_assert(std::atomic<int>::is_always_lock_free);

extern "C" void on_stop_signal(int) {
  g_stop_requested.store(1);
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a client gone mid-write is an error return, not a signal
}

std::string default_model_name(const ModelRunOptions& o) {
  if (!o.random.empty()) return std::filesystem::path(o.random).stem().string();
  return std::filesystem::path(o.model).stem().string();
}

}  // namespace

int run_serve(const Args& args) {
  po::options_description desc("Options");
  ModelRunOptions run_options;
  run_options.add_to(desc);
  HttpServerOptions http;
  BrokerOptions broker_options;
  std::string model_name;
  int64_t default_max_tokens = 0;
  int max_n = 16;
  int64_t max_body = int64_t(http.max_body_bytes);
  // clang-format off
  desc.add_options()
      ("host", po::value(&http.host)->default_value(http.host),
       "address to listen on (0.0.0.0: every interface)")
      ("port", po::value(&http.port)->default_value(http.port), "TCP port (0: any free one)")
      ("api-key", po::value(&http.api_key),
       "require \"Authorization: Bearer KEY\" on every /v1 route (default: $TESSERA_API_KEY)")
      ("served-model-name", po::value(&model_name),
       "the model's name in the API (default: the model file's name without .h5)")
      ("max-queued-requests", po::value(&broker_options.max_queued)->default_value(256),
       "requests waiting to start at most; more get 503 with Retry-After")
      ("request-timeout", po::value(&broker_options.request_timeout)->default_value(0, "0"),
       "seconds a request may take from arrival to its end, else 504 (0: no limit)")
      ("shutdown-grace", po::value(&broker_options.shutdown_grace)->default_value(30, "30"),
       "seconds running requests get to finish after SIGTERM before they are cancelled")
      ("max-body-bytes", po::value(&max_body)->default_value(max_body),
       "largest request body; larger ones get 413")
      ("http-threads", po::value(&http.threads)->default_value(0),
       "connections served at once (0: running + queued requests + 16)")
      ("default-max-tokens", po::value(&default_max_tokens)->default_value(0),
       "max_tokens of a request that gives none (0: what the context window leaves)")
      ("max-n", po::value(&max_n)->default_value(max_n), "choices (n) per request at most");
  // clang-format on
  po::variables_map vm;
  if (!parse_options("serve", "--model FILE [--host ADDR] [--port N] [options]", desc, args, vm))
    return 0;
  TESSERA_CHECK(run_options.layout.dp == 1,
                "tessera serve runs one replica (--dp 1); run one server per replica behind a "
                "load balancer");
  TESSERA_CHECK(run_options.trace.empty(),
                "--trace is for generate and bench: a server runs for days and keeps no timeline");
  TESSERA_CHECK(http.port >= 0 && http.port <= 65535, "--port must be in [0, 65535]");
  TESSERA_CHECK(broker_options.max_queued >= 1, "--max-queued-requests must be at least 1");
  TESSERA_CHECK(broker_options.request_timeout >= 0, "--request-timeout must be >= 0");
  TESSERA_CHECK(broker_options.shutdown_grace >= 0, "--shutdown-grace must be >= 0");
  TESSERA_CHECK(max_body >= 1024, "--max-body-bytes must be at least 1024");
  TESSERA_CHECK(max_n >= 1, "--max-n must be at least 1");
  http.max_body_bytes = size_t(max_body);
  if (http.api_key.empty())
    if (const char* key = std::getenv("TESSERA_API_KEY")) http.api_key = key;
  if (model_name.empty()) model_name = default_model_name(run_options);
  install_stop_handlers();

  const int rank = MpiCommunicator::world()->rank();
  ServingMetrics metrics;
  std::unique_ptr<HttpServer> server;
  if (rank == 0) {  // listening first, so /health answers "loading" meanwhile
    if (http.threads == 0)
      http.threads = int(std::min<int64_t>(
          4096, run_options.engine.scheduler.max_sequences + broker_options.max_queued + 16));
    server = std::make_unique<HttpServer>(http, metrics);
    const int port = server->bind();
    server->start();
    std::fprintf(stderr,
                 "tessera: listening on http://%s:%d (pid %d: SIGTERM stops it gracefully; "
                 "loading the model)\n",
                 http.host.c_str(), port, int(getpid()));
  }
  // A step stuck on a lost rank (--step-timeout): /health says so, every request not ended fails
  // with that line (a stream with an error event), and the job ends a few seconds later (time
  // for the connection threads to answer, and for a client to see /health). The other ranks
  // that find a stuck step wait a little longer before they end the job, so that rank 0's
  // clients hear first.
  std::mutex broker_mu;  // the broker's publication against the watchdog's use of it
  RequestBroker* live_broker = nullptr;  // (guarded by broker_mu)
  run_options.on_stuck_step = [&server, &broker_mu, &live_broker](const std::string& line) {
    report_error(line);
    if (server) {
      server->fail(line);
      std::lock_guard<std::mutex> lock(broker_mu);
      if (live_broker) live_broker->close(503, "the server lost a rank: " + line);
    }
    std::this_thread::sleep_for(std::chrono::seconds(server ? 3 : 4));
    end_job();
  };
  ModelRun run = ModelRun::start(run_options, vm);
  run.engine.record_spans = false;
  Engine engine(*run.bundle.model, *run.bundle.tokenizer, run.engine);
  report_progress(engine, run_options.stats_interval);
  broker_options.kv_blocks = run.engine.scheduler.num_blocks * run_options.layout.sp;
  RequestBroker broker(broker_options, metrics);
  {
    std::lock_guard<std::mutex> lock(broker_mu);
    live_broker = &broker;
  }
  struct Unpublish {  // (before the broker is destroyed; waits for a watchdog using it)
    std::mutex& mu;
    RequestBroker*& broker;
    ~Unpublish() {
      std::lock_guard<std::mutex> lock(mu);
      broker = nullptr;
    }
  } unpublish{broker_mu, live_broker};
  if (engine.leader()) {
    ServingContext context;
    context.tokenizer = run.bundle.tokenizer.get();
    context.limits.model_name = model_name;
    context.limits.context_window = engine.context_window();
    context.limits.default_max_tokens = default_max_tokens;
    context.limits.max_n = max_n;
    context.broker = &broker;
    context.check = [&engine](const GenerationRequest& r) { engine.check_fits(r); };
    server->ready(context);
    std::fprintf(stderr,
                 "tessera: serving '%s' (context window %lld tokens) on every rank; "
                 "ready\n",
                 model_name.c_str(), (long long)engine.context_window());
    engine.set_service([&](bool idle) {
      if (g_stop_requested.load()) broker.request_shutdown();
      return broker.serve(engine, idle);
    });
  }
  try {
    engine.run();  // collective: ends after a shutdown on every rank
  } catch (...) {
    // No connection thread may wait for (or touch) the engine once it is gone: fail every job,
    // stop the server, then let launch/ report the error and abort every rank.
    if (server) {
      broker.close(500, "the server failed; see its log");
      server->stop();
    }
    throw;
  }
  if (server) {
    server->stop();
    const EngineStats& s = engine.stats();
    std::fprintf(stderr,
                 "tessera: shut down after %.1f s: %lld requests finished, %lld prompt and %lld "
                 "generated tokens\n",
                 s.run_seconds, (long long)s.finished, (long long)s.prompt_tokens,
                 (long long)s.output_tokens);
  }
  return 0;
}

}  // namespace tessera::cli
