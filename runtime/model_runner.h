// The model runner: what every rank of a replica does with a step plan (vLLM's worker and model
// runner). It keeps what outlives a step on this rank: the KV pool, each live sequence's block
// table (plans carry a table whole once, then only its changes) and, on the last stage, each
// sequence's token ids for the repetition penalty. Per step it turns the plan into one
// StepInputs, takes the hidden state from the stage before (the first stage embeds), runs the
// model's layers kernel by kernel or as a replay of a decode graph, and passes the plan and its
// output to the stage after; the last stage computes the logits asked for and samples, and in a
// pipeline sends the sampled tokens back to the leader.
//
// Every rank of the replica executes every plan, in the order the leader made them; stage 0's
// ranks get each plan from the leader (the engine shares it), the others from the stage before
// (receive_plan). One path: the engine, the tests and the benchmarks all drive this.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "runtime/batch_sampler.h"
#include "runtime/kv_cache.h"
#include "runtime/llama_model.h"
#include "runtime/step_plan.h"

namespace tessera {

class DecodeGraphs;  // runtime/decode_graphs.h

struct RunnerOptions {
  int64_t num_blocks = 0;        // KV blocks in this rank's pool (> 0)
  int64_t block_size = 16;       // tokens per KV block
  DType kv_dtype = DType::kF32;  // of the KV cache: f32, f16 or e4m3
  // On a GPU: a step whose sequences all decode one token replays a graph captured for its
  // batch-size bucket (1, 2, 4, ... up to graph_batch sequences; the batch padded with rows that
  // attend to nothing and store nothing), instead of a few hundred launches. graph_keys bounds
  // every sequence's keys (a graph's attention plan is sized for it). Used only where every
  // collective of a step can be captured: TP over NCCL or no TP, and no sequence parallelism.
  int64_t graph_batch = 0;  // 0: no graphs
  int64_t graph_keys = 0;
};

// What a step computed on this rank.
struct StepOutput {
  SampledTokens sampled;  // the last stage's: the sampled sequences' tokens, in plan order
  Tensor logits;          // the last stage's, when some sequence asked for logits
                          // (SequenceWork::logits): (rows, vocab / tp) f32 on the host, each
                          // sequence's last `logits` rows (a sampled one's last row at least),
                          // in plan order; else undefined
  // When this rank computed the step (steady-clock seconds): from its input's arrival to its
  // output, without the waits for the stages before and after.
  double compute_begin = 0, compute_end = 0;
};

class ModelRunner {
 public:
  ModelRunner(const LlamaModel& model, const RunnerOptions& options);
  ~ModelRunner();
  ModelRunner(const ModelRunner&) = delete;
  ModelRunner& operator=(const ModelRunner&) = delete;

  const LlamaModel& model() const { return model_; }
  KvPool& pool() { return pool_; }
  // A stage after the first: the next plan, from the stage before.
  StepPlan receive_plan() const;
  // Runs the plan on this rank (see above); on the last stage returns what it computed. A stop
  // plan is passed on and does nothing else.
  StepOutput execute(const StepPlan& plan);
  // The leader of a pipeline: the tokens of `plan` (the oldest step it has in flight) from the
  // last stage.
  SampledTokens receive_sampled(const StepPlan& plan) const;
  // Forgets a sequence, as a plan's release would (for plans made outside an engine, by
  // SingleSequence; every rank calls it alike).
  void forget(int64_t seq) { sequences_.erase(seq); }

  // Decode steps that were graph replays, and graphs captured, so far.
  int64_t graph_replays() const;
  int64_t graphs_captured() const;
  // For benchmarks: seconds per replay of the graph captured for `bucket` sequences, replayed
  // `times` times back to back (the GPU never waits for the host, so this is the GPU's time for
  // a step). The replays rewrite the last step's K/V and hidden state with garbage: run it last.
  double time_graph_replays(int64_t bucket, int times) const;

 private:
  struct Sequence {
    std::vector<int32_t> blocks;   // this rank's block table
    std::vector<int32_t> history;  // the last stage's: its token ids so far
  };
  StepInputs inputs_of(const StepPlan& plan);
  Tensor run_eagerly(StepInputs& in, const Tensor& hidden);
  // The last stage's logits (in.logits, vocab / tp) f32 on the device, from the residual stream.
  Tensor logits_of(const Tensor& x, const StepInputs& in) const;
  StepOutput finish_last_stage(const StepPlan& plan, const StepInputs& in, const Tensor& logits);
  // The last stage of a pipeline, its TP and SP rank 0: the step's tokens to the leader.
  void send_sampled(const StepPlan& plan, const SampledTokens& sampled) const;

  const LlamaModel& model_;
  RunnerOptions options_;
  RankShare rank_;
  KvPool pool_;
  std::map<int64_t, Sequence> sequences_;
  std::unique_ptr<DecodeGraphs> graphs_;
};

}  // namespace tessera
