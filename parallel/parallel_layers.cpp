#include "parallel/parallel_layers.h"

#include <algorithm>
#include <cstring>

#include "kernels/ops.h"
#include "parallel/wire_format.h"

namespace tessera {

namespace {

// x, or x's columns in `order` where it is defined.
Tensor in_order(const Tensor& x, const Tensor& order) {
  if (!order.defined()) return x;
  Tensor gathered = Tensor::empty({x.dim(0), order.dim(0)}, x.dtype(), x.device());
  ops::gather_columns(x, order, gathered);
  return gathered;
}

}  // namespace

ColumnParallelLinear::ColumnParallelLinear(Tensor weight, Tensor bias, Tensor input_order)
    : weight_(std::move(weight)), bias_(std::move(bias)), input_order_(std::move(input_order)) {}

void ColumnParallelLinear::forward(const Tensor& x, Tensor& y) const {
  ops::linear(in_order(x, input_order_), weight_, bias_.defined() ? &bias_ : nullptr, y);
}

void column_parallel_forward(
    const Tensor& x, const std::vector<std::pair<const ColumnParallelLinear*, Tensor*>>& layers) {
  for (const auto& [layer, y] : layers)
    if (layer->input_order().defined()) {  // (each its own input: one at a time)
      for (const auto& [each, out] : layers) each->forward(x, *out);
      return;
    }
  std::vector<ops::LinearPart> parts;
  for (const auto& [layer, y] : layers)
    parts.push_back({&layer->weight(), layer->bias().defined() ? &layer->bias() : nullptr, y});
  ops::linear_group(x, parts);
}

RowParallelLinear::RowParallelLinear(Tensor weight, Communicator* tp, WireFormat wire,
                                     Tensor input_order)
    : weight_(std::move(weight)), input_order_(std::move(input_order)), tp_(tp), wire_(wire) {}

void RowParallelLinear::forward(const Tensor& x_local, Tensor& y) const {
  ops::linear(in_order(x_local, input_order_), weight_, nullptr, y);
  all_reduce_sum(*tp_, y, wire_);
}

VocabParallelEmbedding::VocabParallelEmbedding(Tensor table, int64_t vocab_begin,
                                               int64_t vocab_size, Communicator* tp)
    : table_(std::move(table)), vocab_begin_(vocab_begin), vocab_size_(vocab_size), tp_(tp) {}

void VocabParallelEmbedding::forward(const std::vector<int32_t>& ids, Tensor& out) const {
  const int64_t d = table_.dim(1), rows = table_.dim(0);
  TESSERA_ASSERT(out.numel() == int64_t(ids.size()) * d, "embedding output shape");
  for (const int32_t id : ids)
    TESSERA_CHECK(id >= 0 && id < vocab_size_,
                  "token id " << id << " is outside the vocabulary (size " << vocab_size_ << ")");
  if (vocab_begin_ == 0 && rows == vocab_size_) {  // the whole table (no TP)
    ops::embedding(table_, ids, out);
    return;
  }
  // The rows this rank holds are gathered, the others are zero: exactly one rank writes each row,
  // and the all-reduce sums them.
  std::vector<int32_t> local;
  std::vector<int64_t> where;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int64_t id = ids[i] - vocab_begin_;
    if (id >= 0 && id < rows) {
      local.push_back(int32_t(id));
      where.push_back(int64_t(i));
    }
  }
  ops::fill(out, 0.0f);
  if (!local.empty()) {
    Tensor got = Tensor::empty({int64_t(local.size()), d}, out.dtype(), out.device());
    ops::embedding(table_, local, got);
    for (size_t k = 0; k < local.size(); ++k) {
      Tensor row = out.rows(where[k], where[k] + 1);
      ops::copy(got.rows(int64_t(k), int64_t(k) + 1), row);
    }
  }
  all_reduce_sum(*tp_, out, WireFormat::kF32);  // (a lookup: exact)
}

Tensor gather_vocab_shards(const Tensor& local, Communicator& tp) {
  if (tp.size() == 1) return local;
  const int64_t m = local.dim(0), part = local.dim(1), n = tp.size();
  Tensor stacked = Tensor::empty({n, m, part}, DType::kF32);  // rank-major
  tp.all_gather(local, stacked);
  Tensor full = Tensor::empty({m, n * part}, DType::kF32);
  const float* src = stacked.data<float>();
  float* dst = full.data<float>();
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(dst + i * n * part + r * part, src + (r * m + i) * part, size_t(part) * 4);
  return full;
}

}  // namespace tessera
