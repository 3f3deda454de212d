// The OpenAI-compatible HTTP endpoint on rank 0 (cpp-httplib, which only http_server.cpp
// includes). Routes: POST /v1/completions, POST /v1/chat/completions, GET /v1/models,
// GET /health, GET /metrics. Connection threads parse and check requests and hand them to the
// RequestBroker; the engine runs on the main thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "io/tokenizer.h"
#include "runtime/openai_api.h"
#include "runtime/request_broker.h"
#include "runtime/serving_metrics.h"

namespace tessera::cli {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                  // 0: any free port (bind() says which)
  std::string api_key;              // when set, every /v1 route needs "Authorization: Bearer KEY"
  size_t max_body_bytes = 4 << 20;  // larger bodies get 413
  int threads = 64;                 // connections served at once (a stream holds one)
  int retry_after_seconds = 1;      // the Retry-After of a 503
};

// What the routes need once the model is loaded on every rank.
struct ServingContext {
  const Tokenizer* tokenizer = nullptr;
  ApiLimits limits;
  RequestBroker* broker = nullptr;
  std::function<void(const GenerationRequest&)> check;  // Engine::check_fits
};

class HttpServer {
 public:
  HttpServer(HttpServerOptions options, ServingMetrics& metrics);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds the listening socket (throws naming host and port when it cannot); returns the port.
  int bind();
  // Serves on a thread of its own. Until ready() the model routes answer 503 and /health says
  // "loading".
  void start();
  void ready(const ServingContext& context);
  // The server cannot go on (a rank lost): /health answers 503 {"status": "failed", "error":
  // reason} from now on. Any thread.
  void fail(const std::string& reason);
  // Waits (10 s at most) for answers being written, closes the socket and joins the threads.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::cli
