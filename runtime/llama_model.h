// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM): weights and the forward pass.
// It reads like the paper: embed, then per layer x += attn(norm(x)); x += mlp(norm(x)), then the
// final norm and the LM head. Compute is float32 whatever the stored dtype, or bf16 weights and
// activations with float32 accumulation on a GPU. Under tensor
// parallelism each rank holds its shard of every layer; the collectives live in the parallel
// layers (parallel/parallel_layers.h), not here.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "io/model_config.h"
#include "io/model_store.h"
#include "kernels/tensor.h"
#include "parallel/parallel_layers.h"
#include "parallel/pipeline.h"
#include "parallel/sharding.h"
#include "runtime/kv_cache.h"

namespace tessera {

// What this rank holds of the model.
struct ModelShard {
  int tp_rank = 0, tp_size = 1;
  int sp_rank = 0, sp_size = 1;
  LayerRange layers;  // this pipeline stage's layers
  HeadShard heads;    // query heads and KV heads
  Range ffn;          // intermediate features
  Range vocab;        // embedding / LM head rows
};

struct LlamaLayer {
  Tensor input_norm;          // (hidden)
  ColumnParallelLinear q;     // (local q heads * head_dim, hidden) [+ bias]
  ColumnParallelLinear k;     // (local kv heads * head_dim, hidden) [+ bias]
  ColumnParallelLinear v;     // (local kv heads * head_dim, hidden) [+ bias]
  RowParallelLinear o;        // (hidden, local q heads * head_dim)
  Tensor post_norm;           // (hidden)
  ColumnParallelLinear gate;  // (ffn / tp, hidden)
  ColumnParallelLinear up;    // (ffn / tp, hidden)
  RowParallelLinear down;     // (hidden, ffn / tp)
};

// One sequence's rows in a batch step (see LlamaModel::forward_stage). Every sequence of a
// batch has its KV in the same pool.
struct BatchRows {
  KvPool* pool = nullptr;
  const int32_t* blocks = nullptr;  // its block table: room for the rows it holds after the step
  int64_t length = 0;               // positions before the step
  int64_t rows = 0;                 // KV rows this rank holds before the step
  int64_t tokens = 0;               // its consecutive rows of the batch
  int64_t logits = 0;               // logits wanted for its last `logits` rows (-1: all)
  int64_t kept = 0;                 // out: KV rows this rank added in the step
};

class WeightSource;  // runtime/weight_source.h

// Where and how a rank holds its shard.
struct LoadOptions {
  // One weight per pipeline stage for uneven layer ranges (empty: even).
  std::vector<double> stage_weights;
  Device device = Device::cpu();  // where the weights, activations and KV cache live
  DType dtype = DType::kF32;      // of weights and activations: f32, or bf16 on a GPU
};

class LlamaModel {
 public:
  // Reads this rank's shard from the model file: its pipeline stage's layers (pp->rank() of
  // pp->size() stages), and of those only its TP rows and columns (tp->rank() of tp->size()).
  // The communicators must outlive the model. On a GPU the model's inputs and outputs (token ids,
  // hidden states between stages, logits) stay in host memory; everything else is on the GPU.
  static LlamaModel load(const ModelReader& reader, Communicator* tp, Communicator* pp,
                         Communicator* sp = nullptr, const LoadOptions& options = {});
  // A model of `config`'s shape with random weights (runtime/weight_source.h: RandomWeights),
  // made on the model's device: for benchmarks of models too big to write and read, and tests.
  static LlamaModel random(const ModelConfig& config, uint64_t seed, Communicator* tp,
                           Communicator* pp, Communicator* sp = nullptr,
                           const LoadOptions& options = {});

  const ModelConfig& config() const { return config_; }
  const ModelShard& shard() const { return shard_; }
  Device device() const { return device_; }
  int64_t weight_bytes() const;  // of the weights this rank holds (a tied head counted once)
  DType dtype() const { return act_; }
  Communicator& tp() const { return *tp_; }
  Communicator* sp() const { return sp_; }  // null without sequence parallelism
  const PipelineStage& stage() const { return stage_; }
  // The shape of this rank's KV pool: its layers and KV heads.
  KvPoolShape kv_shape(int64_t block_size = 16, DType dtype = DType::kF32) const;
  SequenceKvCache make_cache(int64_t capacity) const {
    return SequenceKvCache(kv_shape(), capacity);
  }

  // Sequence parallelism: a prompt of n tokens (prefilled into an empty cache) is split into
  // contiguous chunks, one per SP rank; decode position p (after the prompt) is kept by SP rank
  // p % sp. These give the rows of KV cache each rank needs.
  Range sp_chunk(int64_t n, int sp_rank) const;
  int64_t kv_rows_needed(int64_t prompt, int64_t total) const;

  // One step over a batch of sequences on this rank's pipeline stage. The batch's rows are the
  // sequences' new tokens, one sequence after another; each sequence's tokens continue it at
  // positions length .., and their K/V are written to its blocks after the rows it holds. The first
  // stage embeds `tokens`; the others take `hidden` (rows: local_rows(batch)) from the stage
  // before. A stage that is not the last returns its hidden state for the next stage; the last
  // returns this rank's logits (columns [shard().vocab.begin, end)) for each sequence's last
  // `logits` rows, in batch order. Every rank of the replica runs the same batch. With sequence
  // parallelism a prompt (a sequence with an empty cache) is split over the SP group (ring
  // attention) and must be the batch's only sequence, with logits 1; decode tokens (one per
  // sequence) are computed by every SP rank and kept by SP rank position % sp.
  // With outputs_on_device (on a GPU), what the stage returns stays there: the last stage's
  // logits in float32, for sampling on the device (runtime/batch_sampler.h); another stage's
  // hidden state in the model's dtype, for the next stage over NCCL (or MPI, staged).
  Tensor forward_stage(const std::vector<int32_t>& tokens, std::vector<BatchRows>& batch,
                       const Tensor& hidden, bool outputs_on_device = false) const;
  // Rows of the hidden state this rank computes for `batch` (fewer than its tokens for a
  // sequence-parallel prompt).
  int64_t local_rows(const std::vector<BatchRows>& batch) const;
  // One sequence through every stage: forward_stage with the hidden state received from the
  // stage before and sent to the stage after; the cache grows as needed. Returns the last stage's
  // logits for the last `n_logits` tokens (-1: all), an undefined tensor on other stages.
  Tensor forward(const std::vector<int32_t>& tokens, SequenceKvCache& cache,
                 int64_t n_logits = 1) const;
  // forward() of a prompt in microbatches of `microbatch` tokens, so that pipeline stages work
  // on different microbatches at once. Returns what the last forward returns.
  Tensor prefill(const std::vector<int32_t>& tokens, SequenceKvCache& cache, int64_t microbatch,
                 int64_t n_logits = 1) const;
  // The full logits (n, vocab) from every rank's shard (an all-gather when tp > 1).
  Tensor gather_logits(const Tensor& local) const;

  // CUDA graphs for decode steps on a GPU: a step whose sequences all decode one token runs as
  // one replay of a graph captured for its batch-size bucket (1, 2, 4, ... rows; the batch padded
  // with rows that attend to nothing and store nothing), instead of a few hundred launches.
  // max_keys bounds every sequence's keys (the graphs' attention plans are sized for it). Used
  // only where every collective of a step can be captured: TP over NCCL or no TP, and no
  // sequence parallelism. max_batch 0: off.
  void use_decode_graphs(int64_t max_batch, int64_t max_keys);
  // For benchmarks: seconds per replay of the graph captured for `bucket` rows, replayed `times`
  // times back to back (the GPU never waits for the host, so this is the GPU's time for a step).
  // The replays rewrite the last step's K/V and hidden state with garbage: run it last.
  double time_graph_replays(int64_t bucket, int times) const;
  // Decode steps that ran as a graph replay, and graphs captured, so far.
  int64_t graph_replays() const { return graph_replays_; }
  int64_t graphs_captured() const { return int64_t(graphs_.size()); }

 private:
  static LlamaModel build(const WeightSource& weights, Communicator* tp, Communicator* pp,
                          Communicator* sp, const LoadOptions& options);
  struct Segment;       // one sequence's rows of a step, as this rank computes them
  struct StepRows;      // a step's per-row metadata on the model's device, read by every layer
  struct HostRows;      // the same, as the host makes it
  struct DecodeGraph;   // a captured decode step for one batch-size bucket
  struct LayerBuffers;  // a step's per-layer temporaries, made once for all its layers
  std::vector<Segment> segments(const std::vector<BatchRows>& batch) const;
  HostRows host_rows(const std::vector<Segment>& segs, int64_t n) const;
  StepRows upload(const HostRows& h, int64_t n, const std::vector<Segment>& segs,
                  int64_t keys_capacity) const;
  // Every layer of this stage over the residual stream x (n, hidden), in place.
  void run_layers(Tensor& x, const StepRows& rows) const;
  // The final norm and the LM head over every row of h: (rows, vocab / tp) in the model's dtype.
  Tensor head(const Tensor& h) const;
  bool decode_graph_fits(const std::vector<Segment>& segs) const;
  Tensor forward_decode_graph(const std::vector<int32_t>& tokens, const std::vector<Segment>& segs,
                              const Tensor& hidden, bool outputs_on_device) const;
  void attention_block(const LlamaLayer& w, int64_t layer, const Tensor& x, const StepRows& rows,
                       LayerBuffers& buf, Tensor& out) const;
  // Sequence-parallel attention of this rank's query rows of a prompt of n_prompt tokens.
  void ring_attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t n_prompt,
                      Tensor& out) const;
  // Sequence-parallel decode: every row's attention over the positions each SP rank keeps,
  // merged across the group.
  void sp_decode_attention(const Tensor& q, int64_t layer, const StepRows& rows, Tensor& out) const;
  void mlp_block(const LlamaLayer& w, const Tensor& x, LayerBuffers& buf, Tensor& out) const;

  ModelConfig config_;
  ModelShard shard_;
  Device device_ = Device::cpu();
  DType act_ = DType::kF32;  // weights and activations (attention states and the KV cache's
                             // inputs are float32 whatever it is)
  Communicator* tp_ = nullptr;
  Communicator* sp_ = nullptr;
  PipelineStage stage_;
  VocabParallelEmbedding embed_;    // first stage only
  std::vector<LlamaLayer> layers_;  // this stage's layers
  Tensor norm_;                     // (hidden), last stage only
  ColumnParallelLinear
      lm_head_;  // (vocab / tp, hidden), last stage; the embedding's rows when tied
  std::vector<float> rope_inv_freq_;                  // (head_dim / 2)
  Tensor rope_inv_freq_device_;                       // (head_dim / 2) f32 on the model's device
  int64_t graph_max_batch_ = 0, graph_max_keys_ = 0;  // use_decode_graphs
  // Captured decode graphs by batch-size bucket: made by the first step of each bucket. (A cache
  // of the const forward; the model is used by one thread.)
  mutable std::map<int64_t, std::shared_ptr<DecodeGraph>> graphs_;
  mutable std::set<int64_t> failed_buckets_;  // whose graph could not be captured
  mutable int64_t graph_replays_ = 0;
};

}  // namespace tessera
