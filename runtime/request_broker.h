// The bridge between a server's connection threads and the engine, which runs on the replica
// leader's main thread (it alone calls MPI). Connection threads submit jobs and cancel them;
// the engine thread, in its service hook between steps, moves them into the engine, checks
// deadlines and the shutdown, and hands back each choice's text and tokens as they are made.
// No HTTP here, so it is tested with an engine and no sockets.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/serving_metrics.h"

namespace tessera {

// One request (its n choices) as a connection thread sees it.
class ServingJob {
 public:
  explicit ServingJob(std::vector<GenerationRequest> choices);
  size_t choices() const { return requests_.size(); }
  const GenerationRequest& request(size_t i) const { return requests_[i]; }

  // What has been made so far: per choice its text, tokens and log-probabilities, and once it
  // ends its finish_reason and counts. `error` (with an HTTP status) when the job failed as a
  // whole (timeout, shutdown, a request the engine refused).
  struct State {
    std::vector<GenerationResult> results;  // per choice, growing
    std::vector<bool> done;                 // per choice
    std::string error;
    int error_status = 0;
    bool ended() const;
  };
  // Waits until the state changed since `seen` (a counter the caller keeps) or `seconds`
  // passed, and brings `out` (the caller's copy, empty at first) up to date: only what is new is
  // copied, since a choice's text, tokens and log-probabilities only grow. Returns whether it
  // changed.
  bool wait(uint64_t& seen, double seconds, State& out);

 private:
  friend class RequestBroker;
  void update(const std::function<void(State&)>& change);

  std::vector<GenerationRequest> requests_;
  std::mutex mu_;
  std::condition_variable cv_;
  State state_;
  uint64_t version_ = 0;
  // engine thread
  std::vector<int64_t> engine_ids_;
  double arrival_ = 0, deadline_ = 0;  // steady seconds; deadline 0: none
  int64_t remaining_ = 0;              // choices not done
};

struct BrokerOptions {
  int64_t max_queued = 256;    // requests waiting to start; more are refused (503)
  double request_timeout = 0;  // seconds from arrival to the end (0: none)
  double shutdown_grace = 30;  // seconds running requests get to finish after a shutdown
  int64_t kv_blocks = 0;       // the replica's KV blocks (all SP ranks), for /metrics
};

class RequestBroker {
 public:
  RequestBroker(BrokerOptions options, ServingMetrics& metrics);

  // Connection threads. submit() throws ApiError 503 when the queue is full or the server is
  // shutting down.
  std::shared_ptr<ServingJob> submit(std::vector<GenerationRequest> choices);
  void cancel(const std::shared_ptr<ServingJob>& job);  // the client has gone
  bool accepting() const { return !shutdown_.load(); }
  // From a signal handler too (it only sets a flag): stop taking requests, give running ones
  // the grace period, cancel what is left, then let the engine's run() end.
  void request_shutdown() { shutdown_.store(true); }

  // The engine thread's Engine::set_service hook.
  bool serve(Engine& engine, bool idle);
  // When the engine failed (its thread), or is stuck in a step that will not end (another
  // thread: the step watchdog's): every job not ended fails with `status` and `message`, and the
  // broker takes no more, so no connection thread waits for the engine.
  void close(int status, const std::string& message);
  int64_t active() const { return int64_t(active_.size()); }  // engine thread

 private:
  void start(Engine& engine, const std::shared_ptr<ServingJob>& job);
  void fail(Engine& engine, const std::shared_ptr<ServingJob>& job, int status,
            const std::string& message);

  BrokerOptions options_;
  ServingMetrics& metrics_;
  std::atomic<bool> shutdown_{false};
  std::mutex mu_;  // guards inbox_, cancels_
  std::condition_variable cv_;
  std::deque<std::shared_ptr<ServingJob>> inbox_;
  std::vector<std::shared_ptr<ServingJob>> cancels_;
  bool closed_ = false;  // the engine takes no more jobs (guarded by mu_)
  // engine thread
  std::map<const ServingJob*, std::shared_ptr<ServingJob>> active_;  // written under active_mu_
  std::mutex active_mu_;  // the engine thread's writes of active_, and close() from elsewhere
  bool draining_ = false;
  double drain_deadline_ = 0;
};

}  // namespace tessera
