// The Llama-family decoder (Llama 2/3, Mistral, Qwen2, SmolLM): weights, layers and head. It reads
// like the paper: embed, then per layer x += attn(norm(x)); x += mlp(norm(x)), then the final
// norm and the LM head. Compute is float32 whatever the stored dtype, or bf16 weights and
// activations with float32 accumulation on a GPU. Under tensor parallelism each rank holds its
// shard of every layer and the collectives live in the parallel layers (parallel/
// parallel_layers.h); under sequence parallelism, in the SP attention (parallel/
// sequence_parallel.h). What a step computes, and where its keys and values go, is the step's
// inputs (runtime/step_inputs.h), made by the model runner (runtime/model_runner.h), which also
// moves hidden states between pipeline stages, replays decode graphs and samples.
#pragma once

#include <cstdint>
#include <vector>

#include "io/model_config.h"
#include "io/model_store.h"
#include "kernels/tensor.h"
#include "parallel/parallel_layers.h"
#include "parallel/pipeline.h"
#include "parallel/sequence_parallel.h"
#include "parallel/sharding.h"
#include "runtime/kv_cache.h"
#include "runtime/step_inputs.h"

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

class WeightSource;  // runtime/weight_source.h

// Where and how a rank holds its shard.
struct LoadOptions {
  // One weight per pipeline stage for uneven layer ranges (empty: even).
  std::vector<double> stage_weights;
  Device device = Device::cpu();  // where the weights, activations and KV cache live
  DType dtype = DType::kF32;      // of weights and activations: f32, or bf16 on a GPU
  // What crosses ranks: the TP all-reduce's partial sums and the hidden states between stages.
  WireFormat wire = WireFormat::kF32;
  // LlamaModel::random only: the format its matrices are made in (RandomWeights: f32, or a
  // quantized format, random blocks).
  DType random_matrices = DType::kF32;
};

class LlamaModel {
 public:
  // Reads this rank's shard from the model file: its pipeline stage's layers (pp->rank() of
  // pp->size() stages), and of those only its TP rows and columns (tp->rank() of tp->size()).
  // The communicators must outlive the model.
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
  DType dtype() const { return act_; }
  int64_t weight_bytes() const;  // of the weights this rank holds (a tied head counted once)
  // Of those, the bytes a decode step reads: all but an untied embedding table (a row per token).
  int64_t decode_weight_bytes() const;
  // How its linears take a step's rows: ops::linear_row_tiling of the FFN's weights (most of a
  // layer's work), with the least max_rows over all of this stage's linears (the head's on the
  // last stage only: the scheduler reads the first stage's).
  ops::RowTiling row_tiling() const;
  Communicator& tp() const { return *tp_; }
  Communicator* sp() const { return sp_; }  // null without sequence parallelism
  const PipelineStage& stage() const { return stage_; }
  WireFormat wire() const { return wire_; }  // LoadOptions::wire
  // The shape of this rank's KV pool: its layers and KV heads.
  KvPoolShape kv_shape(int64_t block_size = 16, DType dtype = DType::kF32) const;
  // Its layers' scales of an FP8 KV cache (io/model_store.h: k_scale, v_scale; 1 where absent).
  const std::vector<ops::KvScale>& kv_scales() const { return kv_scales_; }

  // The first stage: x (tokens, hidden) = the embeddings of `tokens`.
  void embed(const std::vector<int32_t>& tokens, Tensor& x) const;
  // Every layer of this stage over the residual stream x (in.rows, hidden), in place; the step's
  // keys and values go into `pool` at in's slots. in.device must be uploaded.
  void forward(Tensor& x, const StepInputs& in, KvPool& pool) const;
  // The last stage: the final norm and the LM head over every row of h: (rows, vocab / tp) in
  // the model's dtype.
  Tensor head(const Tensor& h) const;

 private:
  static LlamaModel build(const WeightSource& weights, Communicator* tp, Communicator* pp,
                          Communicator* sp, const LoadOptions& options);
  struct Buffers;  // a step's per-layer temporaries, made once for all its layers
  void attention(const LlamaLayer& w, int64_t layer, const Tensor& x, const StepInputs& in,
                 KvPool& pool, Buffers& b, Tensor& out) const;
  void mlp(const LlamaLayer& w, const Tensor& x, Buffers& b, Tensor& out) const;

  ModelConfig config_;
  ModelShard shard_;
  Device device_ = Device::cpu();
  DType act_ = DType::kF32;  // weights and activations (attention states and the KV cache's
                             // inputs are float32 whatever it is)
  WireFormat wire_ = WireFormat::kF32;
  Communicator* tp_ = nullptr;
  Communicator* sp_ = nullptr;
  SequenceParallelAttention sp_attention_;
  PipelineStage stage_;
  VocabParallelEmbedding embed_;    // (vocab / tp, hidden), first stage only
  std::vector<LlamaLayer> layers_;  // this stage's layers
  Tensor norm_;                     // (hidden), last stage only
  ColumnParallelLinear lm_head_;    // (vocab / tp, hidden), last stage; the embedding when tied
  Tensor rope_inv_freq_;            // (head_dim / 2) f32 on the model's device
  std::vector<ops::KvScale> kv_scales_;  // (this stage's layers)
};

}  // namespace tessera
