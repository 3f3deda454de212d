#include "runtime/decode_graphs.h"

#include <chrono>

#include "kernels/backend.h"

namespace tessera {
namespace {

int64_t bucket_of(int64_t sequences) {
  int64_t b = 1;
  while (b < sequences) b *= 2;
  return b;
}

// `in` with idle rows up to `rows`: position 0, nothing stored, no keys.
StepInputs padded(const StepInputs& in, int64_t rows) {
  static const int32_t idle_table[1] = {0};
  StepInputs p = in;
  p.positions.resize(size_t(rows), 0);
  p.slots.resize(size_t(rows), -1);
  for (int64_t r = in.rows; r < rows; ++r) p.attention.push_back({r, 1, idle_table, 0, 0});
  p.rows = rows;
  return p;
}

}  // namespace

struct DecodeGraphs::Graph {
  Tensor x;                         // (bucket, hidden): the residual stream, the step's input
  Tensor out;                       // the last stage's logits (bucket, vocab / tp); else x is it
  const void* pool_keys = nullptr;  // the pool whose blocks the captured kernels read and write
  StepInputs inputs;                // padded to the bucket; rewritten every step
  std::unique_ptr<DeviceGraph> graph;
  std::vector<std::shared_ptr<Storage>> kept;  // the memory the captured kernels use
};

DecodeGraphs::DecodeGraphs(const LlamaModel& model, int64_t max_batch, int64_t max_keys)
    : model_(model), max_batch_(max_batch), max_keys_(max_keys) {
  TESSERA_CHECK(max_batch >= 1 && max_keys >= 1, "decode graphs need a batch and keys >= 1");
}

DecodeGraphs::~DecodeGraphs() = default;

bool DecodeGraphs::fits(const StepInputs& in) const {
  if (model_.device().is_cpu() || model_.shard().sp_size > 1) return false;
  // (a compressed all-reduce encodes on the host: not capturable)
  if (model_.wire() != WireFormat::kF32 && model_.shard().tp_size > 1) return false;
  if (!model_.tp().graph_capturable() || int64_t(in.sequences.size()) > max_batch_) return false;
  for (const SequenceRows& s : in.sequences)
    if (s.tokens != 1 || s.rows != 1 || s.logits > 1 || s.cached_rows + 1 > max_keys_) return false;
  return failed_.count(bucket_of(int64_t(in.sequences.size()))) == 0;
}

Tensor DecodeGraphs::run(const StepInputs& in, const Tensor& hidden, KvPool& pool) {
  const int64_t n = in.rows, bucket = bucket_of(n);
  std::unique_ptr<Graph>& slot = graphs_[bucket];
  if (slot && slot->pool_keys != pool.keys(0).raw()) slot.reset();  // captured for another pool
  if (!slot) {
    slot = std::make_unique<Graph>();
    slot->x = Tensor::empty({bucket, model_.config().hidden_size}, model_.dtype(), model_.device());
    slot->pool_keys = pool.keys(0).raw();
    slot->inputs = padded(in, bucket);
    slot->inputs.upload(pool, model_.shard().heads.q.size(), model_.dtype(), max_keys_);
  } else {
    slot->inputs.refill(padded(in, bucket));
  }
  Graph& g = *slot;
  // The step's input into the graph's buffer (outside the graph: the embedding reads token ids
  // from the host, and a stage's input arrives from outside).
  Tensor x_rows = g.x.rows(0, n);
  if (model_.stage().first())
    model_.embed(in.tokens, x_rows);
  else
    ops::convert(hidden, x_rows);
  if (!g.graph) {
    KeepAllocations keep;
    try {
      g.graph = capture_graph(model_.device(), [&] {
        model_.forward(g.x, g.inputs, pool);
        if (model_.stage().last()) g.out = model_.head(g.x);
      });
    } catch (const std::exception&) {
      g.graph.reset();  // (no memory left for its buffers, say)
    }
    if (!g.graph) {
      // Nothing captured ran, so every rank still issues the same collectives in the same order.
      graphs_.erase(bucket);
      failed_.insert(bucket);
      return Tensor();
    }
    g.kept = keep.take();
  }
  Communicator& tp = model_.tp();
  tp.check_healthy();  // a TP collective that failed before is not replayed
  g.graph->replay();
  tp.watch_queued_work("a decode step's CUDA graph (its TP collectives)");
  ++replays_;
  g.inputs.forget_tables();  // (kept for the next step, which rewrites them)
  // The outputs are copied out of the graph's buffers (the next replay overwrites them).
  if (!model_.stage().last()) return g.x.rows(0, n).clone();
  Tensor logits =
      Tensor::empty({in.logits, model_.shard().vocab.size()}, DType::kF32, model_.device());
  int64_t at = 0;
  for (const SequenceRows& s : in.sequences)
    if (s.logits > 0) {
      Tensor to = logits.rows(at, at + 1);
      ops::convert(g.out.rows(s.first_row, s.first_row + 1), to);
      ++at;
    }
  return logits;
}

double DecodeGraphs::time_replays(int64_t bucket, int times) const {
  const auto it = graphs_.find(bucket);
  TESSERA_CHECK(it != graphs_.end() && it->second && it->second->graph,
                "no decode graph for " << bucket << " sequences");
  synchronize(model_.device());
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < times; ++i) it->second->graph->replay();
  synchronize(model_.device());
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / times;
}

}  // namespace tessera
