// What every command that runs a model shares: the layout flags, loading this rank's shard, and
// sizing the KV cache; collective over the world.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "launch/gpu_setup.h"
#include "launch/kv_budget.h"
#include "launch/options.h"
#include "launch/step_watchdog.h"
#include "parallel/process_groups.h"
#include "runtime/engine.h"
#include "runtime/model_bundle.h"

namespace tessera::cli {

// --speculative-max-batch's default: on this project's 2-core CPU a step's rows cost nearly
// their full compute once a handful of requests decode together (scripts/bench_speculative.sh).
inline constexpr int64_t kSpeculativeMaxBatch = 4;
// --num-speculative-tokens's defaults. Prompt lookup's proposals cost nothing to make, and a
// copying request's are nearly all right: the more a step checks, the fewer steps (the default
// model rewriting a passage, medians of 4 interleaved runs each: K = 4 1.83x, 8 1.91x, 12 2.03x
// (11 checked in 12 rows: three of the CPU's 4-row tiles), 16 1.84x, its acceptance falling at
// 16). Each of a draft model's costs a draft step.
inline constexpr int64_t kNgramSpeculativeTokens = 11;
inline constexpr int64_t kDraftSpeculativeTokens = 4;

struct ModelRunOptions {
  std::string model;
  std::string random;  // --random CONFIG: random weights of that shape instead of a model file
  GridShape layout;
  std::string pp_weights;
  int64_t max_context = 0;
  KvBudget kv;
  DeviceOptions device;
  std::string kv_dtype = "f32";    // --kv-cache-dtype: f32, f16 or fp8 (= fp8_e4m3)
  std::string comm_dtype = "f32";  // --comm-dtype: f32, bf16 or q8 (parallel/wire_format.h)
  std::string speculative = "off";  // --speculative: ngram, draft or off
  int64_t speculative_tokens = 0;   // --num-speculative-tokens (0 as given: the method's default)
  std::string draft_model;          // --draft-model, with --speculative draft
  EngineOptions engine;
  std::string trace;
  double stats_interval = 10;  // seconds between progress lines (0: none)
  // Called (from the step watchdog's thread) with the line of a step stuck past --step-timeout;
  // it must end the job (null: end_job_with_error at once).
  std::function<void(const std::string&)> on_stuck_step;
  // Adds --model, --tp/--pp/--sp/--dp, --pp-weights, --microbatch, the KV-cache and batching
  // flags, --device and --gpu-memory, --max-context and --trace.
  void add_to(po::options_description& desc);
};

struct ModelRun {
  ProcessGroups groups;
  ModelBundle bundle;
  EngineOptions engine;  // with the KV pool's size
  bool rank0 = false;
  std::shared_ptr<StepWatchdog> watchdog;  // --step-timeout, from the end of loading on
  // Checks the layout, loads this rank's shard, sizes the KV cache (the least over ranks), and
  // prints what it did on rank 0.
  static ModelRun start(ModelRunOptions& options, const po::variables_map& vm);
};

// What went through the model's communicators (TP, SP, PP), averaged over all ranks: the share
// of `seconds` spent inside them (waiting included), and the bytes a rank sent per token its
// layers computed (TimedCommunicator::bytes_sent over the rows of the steps in `stats`).
// Collective.
struct Communication {
  double share = 0;
  double bytes_per_token = 0;
};
Communication communication_totals(ProcessGroups& groups, double seconds, const EngineStats& stats);
// On rank 0 of several: the line "communication: ...".
void print_communication(const ProcessGroups& groups, const Communication& c, WireFormat wire);
void print_speed(const char* what, int64_t tokens, double seconds);

}  // namespace tessera::cli
