// Tensor-parallel layers (Megatron): the collectives live here, not in the model.
//   column-parallel: each rank holds a slice of the output features; no communication.
//   row-parallel:    each rank holds a slice of the input features; one all-reduce of the sum.
//   vocab-parallel embedding: each rank holds a slice of the vocabulary's rows; one all-reduce.
// A linear's input order, where defined, is the column of its input each column of its weight
// reads (i32 on the weight's device, -1: none, a zero): the weight's columns are stored in
// another order than the input's features (GPTQ act-order, io/quantized_checkpoint.h), and the
// input is gathered into that order first (ops::gather_columns).
#pragma once

#include <utility>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/wire_format.h"

namespace tessera {

class ColumnParallelLinear {
 public:
  ColumnParallelLinear() = default;
  // weight: this rank's rows (out / tp, in); bias: its (out / tp) slice or undefined.
  ColumnParallelLinear(Tensor weight, Tensor bias, Tensor input_order = Tensor());
  // y(m, out / tp) = x(m, in) @ weight^T + bias
  void forward(const Tensor& x, Tensor& y) const;
  int64_t out_local() const { return weight_.dim(0); }
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }
  const Tensor& input_order() const { return input_order_; }

 private:
  Tensor weight_;       // (out / tp, in)
  Tensor bias_;         // (out / tp) or undefined
  Tensor input_order_;  // (in) i32 or undefined
};

// Several column-parallel layers of one input (q, k and v; gate and up) as one op
// (ops::linear_group): ys[i] = layers[i] applied to x.
void column_parallel_forward(
    const Tensor& x, const std::vector<std::pair<const ColumnParallelLinear*, Tensor*>>& layers);

class RowParallelLinear {
 public:
  RowParallelLinear() = default;
  // weight: this rank's columns (out, in / tp); wire: how the partial sums cross ranks;
  // input_order: undefined, or (columns of weight) the column of x_local each reads.
  RowParallelLinear(Tensor weight, Communicator* tp, WireFormat wire = WireFormat::kF32,
                    Tensor input_order = Tensor());
  // y(m, out) = sum over TP ranks of x_local(m, in / tp) @ weight^T (summed in f32)
  void forward(const Tensor& x_local, Tensor& y) const;
  const Tensor& weight() const { return weight_; }

 private:
  Tensor weight_;       // (out, in / tp), or (out, its input order's length)
  Tensor input_order_;  // undefined, or i32 of the weight's columns
  Communicator* tp_ = nullptr;
  WireFormat wire_ = WireFormat::kF32;
};

class VocabParallelEmbedding {
 public:
  VocabParallelEmbedding() = default;
  // table: rows [vocab_begin, vocab_begin + table.dim(0)) of the (vocab, hidden) embedding.
  VocabParallelEmbedding(Tensor table, int64_t vocab_begin, int64_t vocab_size, Communicator* tp);
  // out(n, hidden) = embedding rows of ids (each id looked up on the rank that holds it).
  void forward(const std::vector<int32_t>& ids, Tensor& out) const;
  const Tensor& table() const { return table_; }
  int64_t vocab_begin() const { return vocab_begin_; }

 private:
  Tensor table_;  // (vocab / tp, hidden)
  int64_t vocab_begin_ = 0;
  int64_t vocab_size_ = 0;
  Communicator* tp_ = nullptr;
};

// The whole rows (m, vocab) f32 on the host from every TP rank's vocabulary shard of them, local
// (m, vocab / tp) f32 on the host (an all-gather when tp > 1; vocab-parallel heads, shards in rank
// order). Collective over tp.
Tensor gather_vocab_shards(const Tensor& local, Communicator& tp);

}  // namespace tessera
