// What the server counts, for GET /metrics in Prometheus' text format: HTTP answers by status,
// requests by how they finished, prompt and generated tokens, the engine's queue and KV cache,
// and histograms of time to first token, time per output token and request latency.
// Thread-safe: HTTP threads and the engine thread record into it.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "runtime/scheduler.h"

namespace tessera {

// A Prometheus histogram: cumulative counts of observations at or below each bound.
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // The exposition lines of `name` (_bucket{le=...}, _sum, _count).
  std::string render(const std::string& name, const std::string& help) const;
  int64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<int64_t> counts_;  // per bound (not cumulative), then +Inf
  double sum_ = 0;
  int64_t count_ = 0;
};

class ServingMetrics {
 public:
  ServingMetrics();
  void record_http(int status);
  // A finished choice: its finish reason, token counts and times (ttft < 0: no token came).
  void record_finish(const std::string& reason, int64_t prompt_tokens, int64_t output_tokens,
                     double ttft, double tpot, double latency);
  // The engine's state now (the server adds requests it holds that the engine has not seen).
  void set_engine(const SchedulerMetrics& m, int64_t queued_outside, int64_t num_blocks);
  int64_t waiting() const;  // requests waiting to start
  SchedulerMetrics engine() const;
  std::string render() const;

 private:
  mutable std::mutex mu_;
  std::map<int, int64_t> http_;              // status -> answers
  std::map<std::string, int64_t> finished_;  // finish reason -> choices
  int64_t prompt_tokens_ = 0, output_tokens_ = 0;
  SchedulerMetrics engine_;
  int64_t queued_outside_ = 0, num_blocks_ = 0;
  Histogram ttft_, tpot_, latency_;
};

}  // namespace tessera
