// Pipeline-parallel transport: a stage receives the hidden state from the stage before it and
// sends its output to the stage after it, point to point over the PP group.
#pragma once

#include <string>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/process_grid.h"
#include "parallel/wire_format.h"

namespace tessera {

class PipelineStage {
 public:
  PipelineStage() = default;
  // pp: the pipeline group (rank = stage); n_layers: the model's layers, split evenly by
  // stage_layers, or by weighted_stage_layers when `weights` has one weight per stage; wire: how
  // hidden states cross stages.
  PipelineStage(Communicator* pp, int64_t n_layers, const std::vector<double>& weights = {},
                WireFormat wire = WireFormat::kF32);
  bool first() const { return stage_ == 0; }
  bool last() const { return stage_ == stages_ - 1; }
  int stage() const { return stage_; }
  int stages() const { return stages_; }
  const LayerRange& layers() const { return layers_; }

  // x is filled from the previous stage (a no-op for the first stage).
  void receive(Tensor& x) const;
  // x goes to the next stage (a no-op for the last stage).
  void send(const Tensor& x) const;
  // A token id sampled on the last stage, given to every stage (all take part).
  int32_t share_token(int32_t token) const;
  // A step plan (serialised) passed to the next stage ahead of its hidden state.
  void send_plan(const std::string& plan) const;
  void receive_plan(std::string& plan) const;
  // The last stage returns sampled tokens to the first, which plans the next steps.
  void send_to_first(const Tensor& t) const;
  void receive_from_last(Tensor& t) const;
  // Every stage ends with the first stage's bytes (all take part).
  void broadcast_from_first(std::string& bytes) const;

 private:
  Communicator* pp_ = nullptr;
  int stage_ = 0, stages_ = 1;
  LayerRange layers_;
  WireFormat wire_ = WireFormat::kF32;
};

}  // namespace tessera
