// The engine: many requests through one model replica at once, one step at a time on every
// rank of the replica (vLLM's engine core).
//
// The replica's leader (pipeline stage 0, TP rank 0, SP rank 0) owns the requests and schedules:
// each step it builds a StepPlan (which sequences, which tokens) and gives it to the other ranks
// of stage 0 by broadcast. Every rank's model runner (runtime/model_runner.h) executes it; each
// stage passes the plan on with its hidden state; the last stage samples and returns the tokens
// to the leader. With pipeline parallelism several steps are in flight at once, each with its
// own group of sequences, so that no stage waits for a whole round trip: while stage 1 works on
// step k, stage 0 works on step k + 1; and a prompt is prefilled in chunks (two per stage by
// default) that follow each other down the pipeline.
//
// Followers hold no scheduling state, only what their runner keeps. The leader's scheduler
// (runtime/scheduler.h) does continuous batching, chunked prefill, paged KV with prefix caching,
// and preemption; the leader's output processing (detokenizing, stop strings, the requests'
// figures) happens as tokens come back.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer.h"
#include "runtime/batch_sampler.h"
#include "runtime/llama_model.h"
#include "runtime/model_runner.h"
#include "runtime/ngram_proposer.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"
#include "runtime/step_plan.h"

namespace tessera {

struct GenerationRequest {
  std::vector<int32_t> prompt;  // token ids, special tokens included
  SamplingParams sampling;
  int64_t max_tokens = 256;
  std::vector<std::string> stop;  // stop strings (not included in the output text)
  bool ignore_eos = false;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // generated ids (a stop id that ended generation is not included)
  std::string text;
  std::vector<TokenLogprobs> logprobs;  // with sampling.logprobs >= 0: one per token
  std::string finish_reason;            // "stop", "length", or "cancelled" (by cancel())
  int64_t prompt_tokens = 0;
  double prefill_seconds = 0;  // from the start of the run until the leader has the first token
  double decode_seconds = 0;   // from the first token to the last
};

struct EngineOptions {
  // Batching, chunking and the KV cache's blocks: num_blocks (> 0, the same on every rank) and
  // block_size; max_sequences, max_step_tokens, prefix_caching, static_batches; prefill_chunk, a
  // prompt's tokens per step (0: with pipeline stages, two chunks per stage of at least 64
  // tokens; >= the prompt: no chunks). Its groups, sp and prompt_chunks are the engine's to set,
  // from the model's layout and max_in_flight.
  SchedulerOptions scheduler;
  int64_t max_context = 0;       // caps the context window, prompt + output tokens (0: no cap)
  DType kv_dtype = DType::kF32;  // of the KV cache: f32, f16 (half the memory and traffic) or e4m3
  int max_in_flight = 0;         // steps in the pipeline at once (0: one per stage)
  bool decode_graphs = false;    // on a GPU: decode steps replay CUDA graphs (RunnerOptions)
  // Speculative decoding (runtime/proposer.h): each decoding sequence's step also checks up to
  // this many proposed tokens (0: off), from `proposer` (the
  // leader's: a draft model, runtime/draft_proposer.h) or, without one, by prompt lookup with
  // `ngram` (runtime/ngram_proposer.h). scheduler.speculative_max_batch: see SchedulerOptions.
  int64_t speculative_tokens = 0;
  NgramOptions ngram;
  std::shared_ptr<Proposer> proposer;
  int64_t fail_at_step = 0;      // testing: throw when this step starts on this rank (0: never)
  bool record_spans = true;      // keep every step's span in EngineStats (a server runs for days:
                                 // it keeps none)
};

// What one rank did during run(): for the utilisation figure and the timeline.
struct EngineSpan {
  int64_t step = 0;
  double begin = 0, end = 0;  // steady-clock seconds (one clock for the ranks of a node)
  int64_t tokens = 0;         // rows of the step's batch
};

struct EngineStats {
  int64_t steps = 0;
  int64_t sampled_tokens = 0;     // the leader's: tokens that came back from sampling so far
  double run_seconds = 0;         // wall time of run()
  double busy_seconds = 0;        // computing steps (collectives inside the stage included)
  std::vector<EngineSpan> spans;  // one per step this rank computed, in order
  // The leader's: requests and their timing.
  int64_t finished = 0, prompt_tokens = 0, output_tokens = 0;
  double ttft_sum = 0, tpot_sum = 0;  // seconds to first token; per output token after it
  int64_t ttft_count = 0;             // requests that produced a token (cancelled ones may not)
  int64_t tpot_count = 0;             // requests with more than one output token
  double mean_ttft() const { return ttft_count ? ttft_sum / double(ttft_count) : 0.0; }
  double mean_tpot() const { return tpot_count ? tpot_sum / double(tpot_count) : 0.0; }
  SchedulerMetrics scheduler;   // at the end of the run (peaks over the run)
  int64_t graph_replays = 0;    // this rank's decode steps that were CUDA graph replays (so far)
  int64_t graphs_captured = 0;  // and the graphs captured for them (one per batch-size bucket)
  int64_t block_size = 0;
};

class Engine {
 public:
  // The new text, and the result so far (its tokens and their log-probabilities).
  using TextCallback = std::function<void(const std::string& text, const GenerationResult&)>;
  using DoneCallback = std::function<void(int64_t id, const GenerationResult&)>;

  Engine(const LlamaModel& model, const Tokenizer& tokenizer, EngineOptions options = {});
  ~Engine();

  bool leader() const { return leader_; }
  int64_t context_window() const { return window_; }
  // Throws (invalid input) if the request cannot run: empty prompt, a prompt that leaves no
  // room in the context window or does not fit a rank's KV pool, bad sampling parameters.
  void check_fits(const GenerationRequest& request) const;
  // Leader only: queues a request and returns its id (0, 1, ... in submission order). on_text
  // receives the text as it is made (at UTF-8 boundaries, never past a stop string). on_done
  // receives the result when it finishes, after which the engine forgets the request; without
  // on_done the result is kept for run() to return.
  int64_t submit(const GenerationRequest& request, TextCallback on_text = {},
                 DoneCallback on_done = {});
  // Leader only: a source of more requests, called during run() whenever fewer than
  // max_sequences requests wait to start; it submits some and returns false once it has no more.
  void set_feeder(std::function<bool()> feeder) { feeder_ = std::move(feeder); }
  // Leader only: a server's hook, called during run() before every step. It may submit and
  // cancel requests; `idle` says nothing runs, waits or is in flight, so it may block until
  // there is work. run() goes on while it returns true; once it returns false, run() ends when
  // what was submitted has finished.
  void set_service(std::function<bool(bool idle)> service) { service_ = std::move(service); }
  // Leader only: ends request `id` now ("cancelled"; its blocks go back at once), or when the
  // token of its step in flight arrives. A finished or unknown id is ignored.
  void cancel(int64_t id);
  // Leader only: called during run() about every `interval_seconds` (between steps) with the
  // seconds since run() began, the scheduler's figures then and the run's statistics so far.
  using ProgressCallback =
      std::function<void(double elapsed, const SchedulerMetrics&, const EngineStats&)>;
  void set_progress(double interval_seconds, ProgressCallback on_progress) {
    progress_interval_ = interval_seconds;
    on_progress_ = std::move(on_progress);
  }
  // Collective over the replica: steps until every submitted request has finished and the
  // feeder is dry. The leader returns the kept results in submission order; the others nothing.
  std::vector<GenerationResult> run();
  const EngineStats& stats() const { return stats_; }
  // Leader: the scheduler's figures now (running, waiting, blocks, prefix hits, preemptions).
  SchedulerMetrics scheduler_metrics() const { return scheduler_->metrics(); }

 private:
  struct Sequence;
  struct InFlight;
  void apply_tokens(const StepPlan& plan, const SampledTokens& sampled);
  // false when the token ended the sequence
  bool accept_token(Sequence& s, int32_t token, const TokenLogprobs& logprobs);
  void finish(Sequence& s, const std::string& reason);
  void share_plan_in_first_stage(std::string& bytes) const;
  // Runs a plan on this rank; on the last stage returns the sampled tokens.
  SampledTokens compute(const StepPlan& plan);

  const LlamaModel& model_;
  int64_t window_;  // (before runner_, which is made with it)
  ModelRunner runner_;
  const Tokenizer& tokenizer_;
  EngineOptions options_;
  bool leader_;
  int max_in_flight_;
  // leader state
  std::unique_ptr<Scheduler> scheduler_;
  std::map<int64_t, std::unique_ptr<Sequence>> sequences_;  // unfinished, or kept for run()
  int64_t next_id_ = 0;
  std::function<bool()> feeder_;
  std::function<bool(bool)> service_;
  double progress_interval_ = 0;
  ProgressCallback on_progress_;
  // every rank
  EngineStats stats_;
  double clock_zero_ = 0;
};

}  // namespace tessera
