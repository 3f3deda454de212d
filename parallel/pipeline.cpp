#include "parallel/pipeline.h"

namespace tessera {

namespace {
constexpr int kHiddenTag = 11;
constexpr int kPlanTag = 12;
constexpr int kTokensTag = 13;
}  // namespace

PipelineStage::PipelineStage(Communicator* pp, int64_t n_layers, const std::vector<double>& weights,
                             WireFormat wire)
    : pp_(pp), stage_(pp->rank()), stages_(pp->size()), wire_(wire) {
  if (weights.empty()) {
    layers_ = stage_layers(n_layers, stages_, stage_);
    return;
  }
  TESSERA_CHECK(int(weights.size()) == stages_,
                weights.size() << " stage weights for " << stages_ << " pipeline stages");
  TESSERA_CHECK(stage_layers_fit(n_layers, weights),
                "the stage weights leave a stage without layers (or are not positive) for "
                    << n_layers << " layers");
  layers_ = weighted_stage_layers(n_layers, weights, stage_);
}

void PipelineStage::receive(Tensor& x) const {
  if (!first()) recv_in(wire_, *pp_, x, stage_ - 1, kHiddenTag);
}

void PipelineStage::send(const Tensor& x) const {
  if (!last()) send_in(wire_, *pp_, x, stage_ + 1, kHiddenTag);
}

int32_t PipelineStage::share_token(int32_t token) const {
  if (stages_ == 1) return token;
  Tensor t = Tensor::from_i32({token}, {1});
  pp_->broadcast(t, stages_ - 1);
  return t.data<int32_t>()[0];
}

void PipelineStage::send_plan(const std::string& plan) const {
  if (!last()) pp_->send_bytes(plan, stage_ + 1, kPlanTag);
}

void PipelineStage::receive_plan(std::string& plan) const {
  TESSERA_ASSERT(!first(), "the first stage makes its plans");
  pp_->recv_bytes(plan, stage_ - 1, kPlanTag);
}

void PipelineStage::send_to_first(const Tensor& t) const {
  TESSERA_ASSERT(last() && !first(), "send_to_first from stage " << stage_ << " of " << stages_);
  pp_->send(t, 0, kTokensTag);
}

void PipelineStage::receive_from_last(Tensor& t) const {
  TESSERA_ASSERT(first() && !last(), "receive_from_last on stage " << stage_ << " of " << stages_);
  pp_->recv(t, stages_ - 1, kTokensTag);
}

void PipelineStage::broadcast_from_first(std::string& bytes) const {
  if (stages_ > 1) pp_->broadcast_bytes(bytes, 0);
}

}  // namespace tessera
