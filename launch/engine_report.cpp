#include "launch/engine_report.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

namespace tessera::cli {

void report_progress(Engine& engine, double interval_seconds) {
  if (!engine.leader() || interval_seconds <= 0) return;
  struct Last {
    double at = 0;
    int64_t sampled = 0, prefilled = 0;
  };
  engine.set_progress(interval_seconds, [last = Last{}](double elapsed, const SchedulerMetrics& m,
                                                        const EngineStats& s) mutable {
    if (m.running + m.waiting == 0 && s.sampled_tokens == last.sampled &&
        m.prefill_tokens == last.prefilled)
      return;  // nothing to say (an idle server)
    const double dt = std::max(1e-9, elapsed - last.at);
    const int64_t total = m.blocks_used + m.blocks_free + m.blocks_cached;
    std::fprintf(stderr,
                 "tessera: %.0f s: %lld running, %lld waiting; KV cache %lld of %lld blocks in "
                 "use (%.1f%%), %lld cached; prefix hits %.1f%%; %lld preemptions; %.1f "
                 "generated and %.1f prompt tokens/s\n",
                 elapsed, (long long)m.running, (long long)m.waiting, (long long)m.blocks_used,
                 (long long)total, total ? 100.0 * double(m.blocks_used) / double(total) : 0.0,
                 (long long)m.blocks_cached, 100.0 * m.prefix_hit_rate(), (long long)m.preemptions,
                 double(s.sampled_tokens - last.sampled) / dt,
                 double(m.prefill_tokens - last.prefilled) / dt);
    last = {elapsed, s.sampled_tokens, m.prefill_tokens};
  });
}

void report_engine(ProcessGroups& groups, const EngineStats& stats, const std::string& trace_path) {
  Communicator& world = *groups.world;
  const int n = world.size();
  // (stage, busy seconds, run seconds) of every rank
  Tensor mine = Tensor::from_f32(
      {float(groups.coord.pp), float(stats.busy_seconds), float(stats.run_seconds)}, {3});
  Tensor all = Tensor::empty({n, 3}, DType::kF32);
  world.all_gather(mine, all);
  if (world.rank() == 0 && stats.run_seconds > 0) {
    std::map<int, std::pair<double, int>> by_stage;  // stage -> (sum of busy shares, ranks)
    for (int r = 0; r < n; ++r) {
      const float* a = all.data<float>() + 3 * r;
      auto& [sum, count] = by_stage[int(a[0])];
      sum += a[2] > 0 ? a[1] / a[2] : 0.0;
      ++count;
    }
    std::string line = "busy: ";
    char buf[64];
    for (const auto& [stage, v] : by_stage) {
      std::snprintf(buf, sizeof buf, "%sstage %d %.1f%%", stage ? ", " : "", stage,
                    100.0 * v.first / v.second);
      line += buf;
    }
    std::fprintf(stderr, "%s of %.2f s (computing steps, mean over each stage's ranks)\n",
                 line.c_str(), stats.run_seconds);
    if (stats.graphs_captured > 0)
      std::fprintf(stderr,
                   "CUDA graphs: %lld of rank 0's %lld steps were graph replays (%lld "
                   "graphs captured, one per batch-size bucket)\n",
                   (long long)stats.graph_replays, (long long)stats.steps,
                   (long long)stats.graphs_captured);
  }
  if (world.rank() == 0 && stats.finished > 0) {
    const SchedulerMetrics& m = stats.scheduler;
    std::fprintf(stderr,
                 "requests: %lld, mean time to first token %.3f s, mean time per output token "
                 "%.1f ms\n",
                 (long long)stats.finished, stats.mean_ttft(), 1e3 * stats.mean_tpot());
    const int64_t total = m.blocks_used + m.blocks_free + m.blocks_cached;
    const int64_t block = stats.block_size;
    std::fprintf(stderr,
                 "KV cache: peak %lld of %lld blocks in use, %.1f%% of their slots empty; prefix "
                 "cache hits %.1f%% of prompt tokens (%lld of %lld); %lld preemptions\n",
                 (long long)m.peak_blocks_used, (long long)total,
                 m.peak_blocks_used
                     ? 100.0 * double(m.wasted_slots_at_peak) / double(m.peak_blocks_used * block)
                     : 0.0,
                 100.0 * m.prefix_hit_rate(), (long long)m.cached_tokens,
                 (long long)m.prompt_tokens, (long long)m.preemptions);
    if (m.speculative_steps > 0)
      std::fprintf(stderr,
                   "speculative decoding: %lld proposals in %lld steps of requests, %lld accepted "
                   "(%.1f%%), %.2f tokens per such step\n",
                   (long long)m.proposed_tokens, (long long)m.speculative_steps,
                   (long long)m.accepted_tokens, 100.0 * m.acceptance_rate(),
                   m.mean_accepted_length());
  }
  if (trace_path.empty()) return;
  // Every rank's spans to rank 0, which writes one trace (a process per rank, times in us from
  // the earliest span; the ranks share a clock when they share a node).
  nlohmann::json spans = nlohmann::json::array();
  for (const EngineSpan& s : stats.spans) spans.push_back({s.step, s.begin, s.end, s.tokens});
  std::string bytes = spans.dump();
  constexpr int kTraceTag = 31;
  if (world.rank() != 0) {
    world.send_bytes(bytes, 0, kTraceTag);
    return;
  }
  std::vector<nlohmann::json> per_rank = {spans};
  for (int r = 1; r < n; ++r) {
    world.recv_bytes(bytes, r, kTraceTag);
    per_rank.push_back(nlohmann::json::parse(bytes));
  }
  double t0 = 1e300;
  for (const auto& rank_spans : per_rank)
    for (const auto& s : rank_spans) t0 = std::min(t0, s[1].get<double>());
  nlohmann::json events = nlohmann::json::array();
  for (int r = 0; r < n; ++r) {
    events.push_back({{"name", "process_name"},
                      {"ph", "M"},
                      {"pid", r},
                      {"args", {{"name", "rank " + std::to_string(r)}}}});
    for (const auto& s : per_rank[size_t(r)])
      events.push_back({{"name", "step " + std::to_string(s[0].get<int64_t>())},
                        {"ph", "X"},
                        {"pid", r},
                        {"tid", 0},
                        {"ts", (s[1].get<double>() - t0) * 1e6},
                        {"dur", (s[2].get<double>() - s[1].get<double>()) * 1e6},
                        {"args", {{"tokens", s[3]}}}});
  }
  std::ofstream out(trace_path);
  TESSERA_CHECK(out, trace_path << ": cannot open the trace file for writing");
  out << nlohmann::json{{"traceEvents", events}, {"displayTimeUnit", "ms"}}.dump() << "\n";
  TESSERA_CHECK_IO(out, trace_path << ": write failed");
  std::fprintf(stderr, "timeline: %s\n", trace_path.c_str());
}

}  // namespace tessera::cli
