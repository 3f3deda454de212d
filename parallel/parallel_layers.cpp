#include "parallel/parallel_layers.h"

#include <algorithm>
#include <cstring>

#include "kernels/ops.h"

namespace tessera {

ColumnParallelLinear::ColumnParallelLinear(Tensor weight, Tensor bias)
    : weight_(std::move(weight)), bias_(std::move(bias)) {}

void ColumnParallelLinear::forward(const Tensor& x, Tensor& y) const {
  ops::linear(x, weight_, bias_.defined() ? &bias_ : nullptr, y);
}

RowParallelLinear::RowParallelLinear(Tensor weight, Communicator* tp)
    : weight_(std::move(weight)), tp_(tp) {}

void RowParallelLinear::forward(const Tensor& x_local, Tensor& y) const {
  ops::linear(x_local, weight_, nullptr, y);
  if (tp_->size() > 1) tp_->all_reduce(y, ReduceOp::kSum);
}

VocabParallelEmbedding::VocabParallelEmbedding(Tensor table, int64_t vocab_begin,
                                               int64_t vocab_size, Communicator* tp)
    : table_(std::move(table)), vocab_begin_(vocab_begin), vocab_size_(vocab_size), tp_(tp) {}

void VocabParallelEmbedding::forward(const std::vector<int32_t>& ids, Tensor& out) const {
  const int64_t d = table_.dim(1), rows = table_.dim(0);
  TESSERA_ASSERT(out.numel() == int64_t(ids.size()) * d, "embedding output shape");
  const float* t = table_.data<float>();
  float* o = out.data<float>();
  for (size_t i = 0; i < ids.size(); ++i) {
    TESSERA_CHECK(ids[i] >= 0 && ids[i] < vocab_size_, "token id " << ids[i]
                                                                   << " is outside the vocabulary (size "
                                                                   << vocab_size_ << ")");
    const int64_t local = ids[i] - vocab_begin_;
    if (local >= 0 && local < rows)
      std::copy_n(t + local * d, d, o + int64_t(i) * d);
    else
      std::fill_n(o + int64_t(i) * d, d, 0.0f);
  }
  if (tp_->size() > 1) tp_->all_reduce(out, ReduceOp::kSum);  // exactly one rank wrote each row
}

}  // namespace tessera
