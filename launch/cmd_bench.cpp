// tessera bench: one fixed workload (prompt and output lengths drawn from a seed) through the
// engine with continuous batching and through the same engine with static batches (a batch
// starts only when the previous one has finished), in one run: throughput, time to first token,
// time per output token, KV-cache use, and the ratio of the two throughputs.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "launch/commands.h"
#include "launch/engine_report.h"
#include "launch/model_run.h"

namespace tessera::cli {
namespace {

struct Workload {
  std::vector<GenerationRequest> requests;
  int64_t prompt_tokens = 0, output_tokens = 0;
};

// `mixed`: prompts of 8-96 tokens; outputs long-tailed like chat traffic: four in five requests
// want 8-48 tokens, one in five 256-448. `uniform`: 64 and 64. Token ids are random (ignore_eos:
// every request produces exactly its output length).
Workload make_workload(const std::string& kind, int64_t n, uint64_t seed, int64_t vocab,
                       int64_t window) {
  TESSERA_CHECK(kind == "mixed" || kind == "uniform",
                "--workload must be mixed or uniform, got '" << kind << "'");
  std::mt19937_64 g(seed);
  auto uniform = [&](int64_t lo, int64_t hi) {
    return lo + int64_t(g() % uint64_t(hi - lo + 1));
  };
  Workload w;
  for (int64_t i = 0; i < n; ++i) {
    GenerationRequest r;
    const int64_t prompt = kind == "mixed" ? uniform(8, 96) : 64;
    const int64_t output = kind == "uniform" ? 64 : (g() % 5 == 0 ? uniform(256, 448) : uniform(8, 48));
    for (int64_t t = 0; t < prompt; ++t) r.prompt.push_back(int32_t(uniform(vocab / 8, vocab - 1)));
    r.max_tokens = std::min(output, window - prompt);
    r.ignore_eos = true;
    w.prompt_tokens += prompt;
    w.output_tokens += r.max_tokens;
    w.requests.push_back(std::move(r));
  }
  return w;
}

struct ModeResult {
  std::string mode;
  double seconds = 0;
  EngineStats stats;
  int64_t output_tokens = 0;
};

ModeResult run_mode(ModelRun& run, const Workload& w, bool static_batches,
                    const std::string& trace, double stats_interval) {
  EngineOptions o = run.engine;
  o.scheduler.static_batches = static_batches;
  Engine engine(*run.bundle.model, *run.bundle.tokenizer, o);
  report_progress(engine, stats_interval);
  if (engine.leader())
    for (const GenerationRequest& r : w.requests) engine.submit(r);
  const std::vector<GenerationResult> results = engine.run();
  report_engine(run.groups, engine.stats(),
                trace.empty() ? "" : trace + (static_batches ? ".static.json" : ".continuous.json"));
  ModeResult m;
  m.mode = static_batches ? "static batches" : "continuous batching";
  m.stats = engine.stats();
  m.seconds = m.stats.run_seconds;
  for (const GenerationResult& r : results) m.output_tokens += int64_t(r.tokens.size());
  return m;
}

nlohmann::json to_json(const ModeResult& m) {
  const EngineStats& s = m.stats;
  const SchedulerMetrics& k = s.scheduler;
  return {{"mode", m.mode},
          {"seconds", m.seconds},
          {"output_tokens", m.output_tokens},
          {"output_tokens_per_second", m.output_tokens / m.seconds},
          {"requests_per_second", double(s.finished) / m.seconds},
          {"mean_ttft_seconds", s.mean_ttft()},
          {"mean_tpot_seconds", s.mean_tpot()},
          {"steps", k.steps},
          {"peak_kv_blocks", k.peak_blocks_used},
          {"wasted_kv_share_at_peak",
           k.peak_blocks_used
               ? double(k.wasted_slots_at_peak) / double(k.peak_blocks_used * s.block_size)
               : 0.0},
          {"prefix_hit_rate", k.prefix_hit_rate()},
          {"preemptions", k.preemptions},
          {"speculative_proposed_tokens", k.proposed_tokens},
          {"speculative_accepted_tokens", k.accepted_tokens},
          {"speculative_acceptance_rate", k.acceptance_rate()},
          {"speculative_mean_accepted_length", k.mean_accepted_length()}};
}

}  // namespace

int run_bench(const Args& args) {
  po::options_description desc("Options");
  ModelRunOptions run_options;
  run_options.engine.scheduler.max_sequences = 8;
  run_options.add_to(desc);
  int64_t requests = 64, rounds = 1;
  uint64_t seed = 1;
  std::string workload = "mixed", mode = "both", json_path;
  desc.add_options()
      ("requests", po::value(&requests)->default_value(64), "requests in the workload")
      ("seed", po::value(&seed)->default_value(1), "seed of the workload's lengths and tokens")
      ("workload", po::value(&workload)->default_value("mixed"),
       "mixed (prompts 8-96 tokens, outputs 8-48 or, one in five, 256-448) or uniform "
       "(64 and 64)")
      ("mode", po::value(&mode)->default_value("both"), "continuous, static, or both")
      ("rounds", po::value(&rounds)->default_value(1),
       "run the modes this many times, alternating which goes first, and report each mode's "
       "median (for machines whose speed drifts)")
      ("json", po::value(&json_path), "also write the figures to this JSON file");
  po::variables_map vm;
  if (!parse_options("bench", "--model FILE [options]", desc, args, vm)) return 0;
  TESSERA_CHECK(requests >= 1, "--requests must be at least 1");
  TESSERA_CHECK(rounds >= 1, "--rounds must be at least 1");
  TESSERA_CHECK(mode == "both" || mode == "continuous" || mode == "static",
                "--mode must be continuous, static or both, got '" << mode << "'");
  TESSERA_CHECK(run_options.layout.dp == 1,
                "tessera bench measures one replica (--dp 1): the figures are per replica");
  ModelRun run = ModelRun::start(run_options, vm);
  const ModelConfig& c = run.bundle.model->config();
  const int64_t window = c.context_window(run.engine.max_context);
  const Workload w = make_workload(workload, requests, seed, c.vocab_size, window);
  if (run.rank0)
    std::fprintf(stderr,
                 "tessera bench: %lld requests (%s, seed %llu): %lld prompt and %lld output "
                 "tokens; at most %lld running at once\n",
                 (long long)requests, workload.c_str(), (unsigned long long)seed,
                 (long long)w.prompt_tokens, (long long)w.output_tokens,
                 (long long)run.engine.scheduler.max_sequences);
  std::vector<bool> modes;  // static_batches of each mode
  if (mode != "static") modes.push_back(false);
  if (mode != "continuous") modes.push_back(true);
  std::vector<std::vector<ModeResult>> runs(modes.size());  // per mode, one per round
  for (int64_t round = 0; round < rounds; ++round)
    for (size_t i = 0; i < modes.size(); ++i) {
      const size_t which = round % 2 ? modes.size() - 1 - i : i;  // odd rounds: reversed
      runs[which].push_back(
          run_mode(run, w, modes[which], round == 0 ? run_options.trace : std::string(),
                   run_options.stats_interval));
    }
  if (!run.rank0) return 0;
  // Each mode's median round (the lower middle one for an even count).
  std::vector<ModeResult> results;
  for (std::vector<ModeResult> r : runs) {  // (a copy: runs keeps the rounds' order)
    std::sort(r.begin(), r.end(),
              [](const ModeResult& a, const ModeResult& b) { return a.seconds < b.seconds; });
    results.push_back(r[(r.size() - 1) / 2]);
  }
  nlohmann::json out = {{"model", run.bundle.path},
                        {"requests", requests},
                        {"workload", workload},
                        {"seed", seed},
                        {"max_batch", run.engine.scheduler.max_sequences},
                        {"rounds", rounds},
                        {"ranks", run.groups.world->size()},
                        {"modes", nlohmann::json::array()}};
  std::printf("| mode | time | output tokens/s | mean TTFT | mean TPOT | peak KV blocks | "
              "empty slots at peak | preemptions |\n|---|---|---|---|---|---|---|---|\n");
  for (size_t i = 0; i < results.size(); ++i) {
    const ModeResult& m = results[i];
    nlohmann::json j = to_json(m);
    j["seconds_of_each_round"] = nlohmann::json::array();
    for (const ModeResult& r : runs[i]) j["seconds_of_each_round"].push_back(r.seconds);
    out["modes"].push_back(j);
    std::printf("| %s | %.1f s | %.1f | %.2f s | %.1f ms | %lld | %.1f%% | %lld |\n",
                m.mode.c_str(), m.seconds, j["output_tokens_per_second"].get<double>(),
                j["mean_ttft_seconds"].get<double>(), 1e3 * j["mean_tpot_seconds"].get<double>(),
                (long long)j["peak_kv_blocks"].get<int64_t>(),
                100.0 * j["wasted_kv_share_at_peak"].get<double>(),
                (long long)j["preemptions"].get<int64_t>());
  }
  if (results.size() == 2) {
    const double ratio = results[1].seconds / results[0].seconds;
    out["continuous_over_static"] = ratio;
    std::printf("\ncontinuous batching: %.2fx the throughput of static batches", ratio);
    if (rounds > 1) {
      std::printf(" (medians of %lld rounds; each mode's times:", (long long)rounds);
      for (size_t i = 0; i < runs.size(); ++i) {
        std::printf(" %s", i ? "; static" : "continuous");
        for (const ModeResult& r : runs[i]) std::printf(" %.1f", r.seconds);
      }
      std::printf(" s)");
    }
    std::printf("\n");
  }
  std::fflush(stdout);
  if (!json_path.empty()) write_text_file(json_path, out.dump(2) + "\n");
  return 0;
}

}  // namespace tessera::cli
