#include "launch/http_server.h"

#include <httplib.h>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "launch/connection_probe.h"

namespace tessera::cli {
namespace {

using nlohmann::json;

constexpr double kPollSeconds = 0.05;  // how often a waiting handler checks its client

void send_error(httplib::Response& res, int status, const std::string& message,
                const std::string& type = "invalid_request_error", const std::string& code = "") {
  res.status = status;
  res.set_content(error_body(message, type, code), "application/json");
}

ConnectionProbe probe_of(const httplib::Request& req) {
  return ConnectionProbe(req.remote_addr, req.remote_port, req.local_port);
}

std::string sse(const std::string& data) {
  return "data: " + data + "\n\n";
}

// Marks a response tessera wrote itself (to a client that finished sending: see
// ConnectionProbe), so that nothing writes it again.
constexpr const char* kWrittenHere = "X-Tessera-Written";
// Whether this connection thread's request had its body refused unread (pre-routing to logger:
// one request at a time per thread): its connection then closes.
thread_local bool refused_body = false;
// Bytes written to this connection thread's connection before cpp-httplib writes a response.
thread_local uint64_t written_before = 0;

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 413:
      return "Payload Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
  }
  return "";
}

// The status line and headers of `res` as HTTP/1.1 sends them, closing the connection after;
// with the body's length, or chunked, or (an HTTP/1.0 client's stream) delimited by the close.
enum class Framing { kLength, kChunked, kClose };
std::string head_of(const httplib::Response& res, Framing framing) {
  std::string out =
      "HTTP/1.1 " + std::to_string(res.status) + " " + reason_phrase(res.status) + "\r\n";
  for (const auto& [name, value] : res.headers)
    if (name != "Connection" && name != "Keep-Alive" && name != "Content-Length" &&
        name != "Transfer-Encoding" && name != kWrittenHere)
      out += name + ": " + value + "\r\n";  // (the framing is this function's)
  if (framing == Framing::kChunked) out += "Transfer-Encoding: chunked\r\n";
  if (framing == Framing::kLength)
    out += "Content-Length: " + std::to_string(res.body.size()) + "\r\n";
  return out + "Connection: close\r\n\r\n";
}

// What a streamed answer has sent of each choice so far.
struct StreamCursor {
  std::vector<size_t> text, tokens;
  std::vector<bool> finished;
  bool roles_sent = false, finished_all = false;
  uint64_t seen = 0;
  ServingJob::State state;  // the job's, brought up to date by each wait
};

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions options;
  ServingMetrics& metrics;
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> is_ready{false};
  std::mutex failure_mu;
  std::string failure;  // why the server cannot go on (guarded by failure_mu)
  ServingContext context;  // set once, before is_ready
  std::atomic<int64_t> next_id{0};
  std::atomic<int64_t> in_flight{0};  // routed requests whose answer is not yet written
  std::atomic<int64_t> next_request{0};
  int port = -1;

  Impl(HttpServerOptions o, ServingMetrics& m) : options(std::move(o)), metrics(m) {}

  // A Content-Length that is not a number of bytes (400) or above --max-body-bytes (413) gets its
  // answer now, and the connection closes (its body is never read).
  bool refuse_declared_length(const httplib::Request& req, httplib::Response& res) const {
    if (!req.has_header("Content-Length")) return false;
    const std::string v = req.get_header_value("Content-Length");
    const bool digits =
        !v.empty() && v.size() <= 19 && v.find_first_not_of("0123456789") == std::string::npos;
    if (digits && std::stoull(v) <= options.max_body_bytes) return false;
    res.set_header("Connection", "close");
    refused_body = true;  // (the logger closes the connection once this is written)
    if (!digits)
      send_error(res, 400, "Content-Length '" + v.substr(0, 40) + "' is not a number of bytes");
    else
      send_error(res, 413,
                 "the request body is too large: " + v + " bytes, more than --max-body-bytes (" +
                     std::to_string(options.max_body_bytes) + ")");
    return true;
  }

  bool authorised(const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty()) return true;
    if (req.get_header_value("Authorization") == "Bearer " + options.api_key) return true;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, 401, "a missing or wrong API key (send \"Authorization: Bearer KEY\")",
               "invalid_request_error", "invalid_api_key");
    return false;
  }

  bool live(httplib::Response& res) {
    if (is_ready.load()) return true;
    res.set_header("Retry-After", std::to_string(options.retry_after_seconds));
    send_error(res, 503, "the model is still loading", "server_error");
    return false;
  }

  void handle_generation(Endpoint endpoint, const httplib::Request& req, httplib::Response& res) {
    if (!authorised(req, res) || !live(res)) return;
    const ServingContext& c = context;
    ApiRequest api;
    std::shared_ptr<ServingJob> job;
    try {
      api = parse_api_request(endpoint, req.body, c.limits, *c.tokenizer, c.check);
      job = c.broker->submit(api.choices);
    } catch (const ApiError& e) {
      if (e.status() == 503)
        res.set_header("Retry-After", std::to_string(options.retry_after_seconds));
      send_error(res, e.status(), e.what(), e.type(), e.code());
      return;
    }
    ApiAnswer answer;
    answer.endpoint = endpoint;
    answer.id = (endpoint == Endpoint::kChat ? "chatcmpl-" : "cmpl-") +
                std::to_string(next_id.fetch_add(1));
    answer.created = int64_t(std::time(nullptr));
    answer.model = c.limits.model_name;
    answer.logprobs = api.logprobs;
    auto probe = std::make_shared<ConnectionProbe>(probe_of(req));
    if (!api.stream) {
      answer_whole(job, answer, *probe, req.version == "HTTP/1.1", res);
      return;
    }
    auto cursor = std::make_shared<StreamCursor>();
    cursor->text.assign(job->choices(), 0);
    cursor->tokens.assign(job->choices(), 0);
    cursor->finished.assign(job->choices(), false);
    const bool include_usage = api.include_usage;
    const int64_t prompt_tokens = api.prompt_tokens;
    RequestBroker* broker = c.broker;
    const Tokenizer* tokenizer = c.tokenizer;
    res.set_header("Cache-Control", "no-cache");
    res.set_header("X-Accel-Buffering", "no");
    if (probe->found()) {
      // The stream is written here, not by cpp-httplib, which stops writing once the client has
      // finished sending (a half-closed client reads on); it ends the connection.
      res.status = 200;
      res.set_header("Content-Type", "text/event-stream");
      stream_here(*probe, req.version == "HTTP/1.1", res, [&](httplib::DataSink& sink) {
        return stream_step(
            *job, answer, *tokenizer, include_usage, prompt_tokens, *cursor,
            [&] { return probe->reset(); }, sink);
      });
      if (!cursor->finished_all) broker->cancel(job);  // the client went away
      return;
    }
    // (no socket found: cpp-httplib writes the stream, which ends when the client stops sending)
    res.set_chunked_content_provider(
        "text/event-stream",
        [=](size_t, httplib::DataSink& sink) {
          return stream_step(
              *job, answer, *tokenizer, include_usage, prompt_tokens, *cursor,
              [&] { return probe->finished_sending(); }, sink);
        },
        [=](bool) {
          if (!cursor->finished_all) broker->cancel(job);  // the client went away
        });
  }

  // A stream written by tessera to the connection, chunk by chunk, until `step` ends it (or the
  // client has gone); then the connection ends and res is marked written. Once the client has
  // finished sending, an SSE comment goes out (once): a client that only half-closed skips it,
  // a closed socket answers it with a reset, which ends the stream even before its first event.
  void stream_here(const ConnectionProbe& probe, bool chunked, httplib::Response& res,
                   const std::function<bool(httplib::DataSink&)>& step) {
    bool ok = probe.send(head_of(res, chunked ? Framing::kChunked : Framing::kClose)), done = false;
    httplib::DataSink sink;
    sink.write = [&](const char* data, size_t n) {
      char size[24];
      std::snprintf(size, sizeof size, "%zx\r\n", n);
      const std::string bytes(data, n);
      return ok = ok && probe.send(chunked ? size + bytes + "\r\n" : bytes);
    };
    sink.done = [&] {
      done = true;
      if (chunked) ok = ok && probe.send("0\r\n\r\n");
    };
    sink.is_writable = [&] { return ok && !probe.reset(); };
    bool pinged = false;
    while (ok && !done) {
      if (!pinged && probe.finished_sending()) {
        pinged = true;
        const std::string comment = ": the client finished sending\n\n";
        sink.write(comment.data(), comment.size());
      }
      if (!step(sink)) break;
    }
    probe.finish(1.0);  // (cpp-httplib's own answer for res goes nowhere)
    res.set_header(kWrittenHere, "1");
  }

  // After cpp-httplib wrote a response, or did not: if the client finished sending before it
  // could (a half-closed connection), nothing of it was sent, and it is written here.
  void write_if_unwritten(const httplib::Request& req, const httplib::Response& res) const {
    if (res.has_header(kWrittenHere)) return;
    const ConnectionProbe probe = probe_of(req);
    if (probe.bytes_written() != written_before || !probe.finished_sending()) return;
    probe.send(head_of(res, Framing::kLength) + (req.method == "HEAD" ? "" : res.body));
  }

  // A whole answer: waits for every choice, watching for the client leaving. A client that
  // finished sending may only have half-closed its connection (it still reads) or have closed it;
  // an HTTP/1.1 client is then sent an interim 100 (Continue), which it skips if it reads, and
  // which a closed socket answers with a reset.
  void answer_whole(const std::shared_ptr<ServingJob>& job, const ApiAnswer& answer,
                    const ConnectionProbe& probe, bool http11, httplib::Response& res) {
    ServingJob::State state;
    uint64_t seen = 0;
    bool asked = false;  // whether the client was sent a 100 (Continue)
    while (true) {
      job->wait(seen, kPollSeconds, state);
      if (state.ended()) break;
      if (probe.reset()) {
        context.broker->cancel(job);
        res.status = 499;  // (nobody reads it)
        return;
      }
      if (!asked && http11 && probe.finished_sending()) {
        asked = true;
        probe.send("HTTP/1.1 100 Continue\r\n\r\n");
      }
    }
    if (!state.error.empty()) {
      if (state.error_status == 503)
        res.set_header("Retry-After", std::to_string(options.retry_after_seconds));
      send_error(res, state.error_status, state.error,
                 state.error_status < 500 ? "invalid_request_error" : "server_error");
      return;
    }
    res.set_content(answer_body(answer, *context.tokenizer, state.results), "application/json");
  }

  // One step of a stream: sends what is new (waiting a little for it) to the sink. Returns false
  // when the client has gone.
  static bool stream_step(ServingJob& job, const ApiAnswer& answer, const Tokenizer& tokenizer,
                          bool include_usage, int64_t prompt_tokens, StreamCursor& cur,
                          const std::function<bool()>& client_left, httplib::DataSink& sink) {
    std::string out;
    if (!cur.roles_sent) {
      cur.roles_sent = true;
      if (answer.endpoint == Endpoint::kChat)
        for (size_t i = 0; i < job.choices(); ++i) out += sse(role_chunk(answer, int(i)));
    }
    ServingJob::State& st = cur.state;
    job.wait(cur.seen, kPollSeconds, st);
    bool all_finished = true;
    int64_t completion_tokens = 0;
    for (size_t i = 0; i < job.choices() && st.error.empty(); ++i) {
      const GenerationResult& r = st.results[i];
      completion_tokens += int64_t(r.tokens.size());
      if (cur.finished[i]) continue;
      const std::string text = r.text.size() > cur.text[i] ? r.text.substr(cur.text[i]) : "";
      const size_t new_tokens = r.tokens.size() - std::min(r.tokens.size(), cur.tokens[i]);
      if (st.done[i]) {
        out += sse(chunk_body(answer, tokenizer, int(i), text, r, cur.tokens[i], new_tokens,
                              r.finish_reason));
        cur.finished[i] = true;
      } else if (!text.empty()) {
        out += sse(chunk_body(answer, tokenizer, int(i), text, r, cur.tokens[i], new_tokens, ""));
        cur.tokens[i] = r.tokens.size();
        all_finished = false;
      } else {
        all_finished = false;
        continue;
      }
      cur.text[i] = r.text.size();
    }
    const bool end = !st.error.empty() || all_finished;
    if (!st.error.empty())
      out += sse(error_body(st.error, "server_error"));
    else if (end && include_usage)
      out += sse(usage_chunk(answer, prompt_tokens, completion_tokens));
    if (end) out += "data: [DONE]\n\n";
    if (!out.empty() && !sink.write(out.data(), out.size())) return false;
    if (end) {
      cur.finished_all = true;
      sink.done();
      return true;
    }
    return !(out.empty() && client_left());
  }

  void routes() {
    server.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      handle_generation(Endpoint::kCompletions, req, res);
    });
    server.Post("/v1/chat/completions",
                [this](const httplib::Request& req, httplib::Response& res) {
                  handle_generation(Endpoint::kChat, req, res);
                });
    server.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
      if (!authorised(req, res) || !live(res)) return;
      json model = {{"id", context.limits.model_name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "tessera"},
                    {"max_model_len", context.limits.context_window}};
      res.set_content(json{{"object", "list"}, {"data", json::array({model})}}.dump(),
                      "application/json");
    });
    server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
      {
        std::lock_guard<std::mutex> lock(failure_mu);
        if (!failure.empty()) {
          res.status = 503;
          res.set_content(json{{"status", "failed"}, {"error", failure}}.dump(),
                          "application/json");
          return;
        }
      }
      const bool ready = is_ready.load();
      const bool draining = ready && !context.broker->accepting();
      res.status = ready && !draining ? 200 : 503;
      res.set_content(json{{"status", draining ? "shutting down"
                                      : ready  ? "ok"
                                               : "loading"}}
                          .dump(),
                      "application/json");
    });
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(), "text/plain; version=0.0.4");
    });
    for (const char* path : {"/v1/completions", "/v1/chat/completions"})
      server.Get(path, [](const httplib::Request&, httplib::Response& res) {
        send_error(res, 405, "use POST");
      });
    server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;
      if (res.status == 413)
        send_error(res, 413, "the request body is too large");
      else if (res.status == 404)
        send_error(res, 404, "no route " + req.method + " " + req.path);
      else
        send_error(res, res.status,
                   "the request was refused (HTTP " + std::to_string(res.status) + ")");
    });
    server.set_exception_handler(
        [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
          std::string what = "unknown";
          try {
            std::rethrow_exception(ep);
          } catch (const std::exception& e) {
            what = e.what();
          } catch (...) {
          }
          send_error(res, 500, "internal error: " + what, "server_error");
        });
    // Requests that reach the routes carry an X-Request-Id; the logger runs once the answer is
    // written (also for requests refused before routing, such as a 413, which carry none).
    // A client that asked for a 100 (Continue) before its body is refused the same way, before
    // it sends the body.
    server.set_expect_100_continue_handler(
        [this](const httplib::Request& req, httplib::Response& res) {
          return refuse_declared_length(req, res) ? res.status : 100;
        });
    server.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      // (Before the body is read: a body that will not be taken is refused at once, instead of
      // read in full or waited for until the read timeout.)
      if (refuse_declared_length(req, res)) return httplib::Server::HandlerResponse::Handled;
      res.set_header("X-Request-Id", std::to_string(next_request.fetch_add(1)));
      in_flight.fetch_add(1);
      return httplib::Server::HandlerResponse::Unhandled;
    });
    server.set_post_routing_handler([](const httplib::Request& req, httplib::Response& res) {
      if (!res.has_header(kWrittenHere))  // (cpp-httplib writes it next)
        written_before = probe_of(req).bytes_written();
    });
    server.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      write_if_unwritten(req, res);
      metrics.record_http(res.status);
      if (refused_body) {  // a lingering close: the client reads the refusal, not a reset
        refused_body = false;
        probe_of(req).finish(2.0);
      }
      if (res.has_header("X-Request-Id")) in_flight.fetch_sub(1);
    });
  }
};

HttpServer::HttpServer(HttpServerOptions options, ServingMetrics& metrics)
    : impl_(std::make_unique<Impl>(std::move(options), metrics)) {
  const int threads = std::max(impl_->options.threads, 4);
  impl_->server.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  impl_->server.set_payload_max_length(impl_->options.max_body_bytes);
  impl_->server.set_keep_alive_timeout(5);
  impl_->server.set_read_timeout(30);
  impl_->server.set_write_timeout(30);
  impl_->routes();
}

HttpServer::~HttpServer() {
  stop();
}

int HttpServer::bind() {
  const HttpServerOptions& o = impl_->options;
  const int port = o.port == 0 ? impl_->server.bind_to_any_port(o.host)
                               : (impl_->server.bind_to_port(o.host, o.port) ? o.port : -1);
  TESSERA_CHECK(port > 0, "cannot listen on " << o.host << ":" << o.port
                                              << " (in use, or not an address of this host)");
  impl_->port = port;
  widen_listen_backlog(port, 1024);  // (5 in cpp-httplib 0.11)
  return port;
}

void HttpServer::start() {
  // The connection threads (started by this one, inheriting its mask) never take SIGTERM or
  // SIGINT: a signal that lands on a thread in poll() would fail its write and cut a stream.
  // The main thread takes them.
  sigset_t stop, old;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop, &old);
  impl_->thread = std::thread([this] { impl_->server.listen_after_bind(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

void HttpServer::ready(const ServingContext& context) {
  impl_->context = context;
  impl_->is_ready.store(true);
}

void HttpServer::fail(const std::string& reason) {
  std::lock_guard<std::mutex> lock(impl_->failure_mu);
  impl_->failure = reason;
}

void HttpServer::stop() {
  if (!impl_->thread.joinable()) return;
  // Answers being written (the end of a stream whose request has finished) get a moment.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (impl_->in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->server.stop();
  impl_->thread.join();
}

}  // namespace tessera::cli
