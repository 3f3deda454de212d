#include "parallel/pipeline.h"

namespace tessera {

namespace {
constexpr int kHiddenTag = 11;
}

PipelineStage::PipelineStage(Communicator* pp, int64_t n_layers)
    : pp_(pp), stage_(pp->rank()), stages_(pp->size()),
      layers_(stage_layers(n_layers, pp->size(), pp->rank())) {}

void PipelineStage::receive(Tensor& x) const {
  if (!first()) pp_->recv(x, stage_ - 1, kHiddenTag);
}

void PipelineStage::send(const Tensor& x) const {
  if (!last()) pp_->send(x, stage_ + 1, kHiddenTag);
}

int32_t PipelineStage::share_token(int32_t token) const {
  if (stages_ == 1) return token;
  Tensor t = Tensor::from_i32({token}, {1});
  pp_->broadcast(t, stages_ - 1);
  return t.data<int32_t>()[0];
}

}  // namespace tessera
