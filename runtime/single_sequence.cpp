#include "runtime/single_sequence.h"

#include <algorithm>
#include <cstring>

#include "parallel/sp_split.h"

namespace tessera {

SingleSequence::SingleSequence(ModelRunner& runner, int64_t id)
    : runner_(runner), id_(id), blocks_(size_t(runner.model().shard().sp_size), 0) {}

int64_t SingleSequence::rows_held(int sp_rank) const {
  return rows_at(sp_rank, length_);
}

int64_t SingleSequence::rows_at(int sp_rank, int64_t length) const {
  const int sp = int(blocks_.size());
  return sp == 1 ? length : (length == 0 ? 0 : sp_rows_held(prompt_, length, sp, sp_rank));
}

Tensor SingleSequence::feed(const std::vector<int32_t>& tokens, int64_t logits) {
  const int sp = int(blocks_.size());
  const int64_t bs = runner_.pool().block_size(), n = int64_t(tokens.size());
  StepPlan plan;
  plan.id = next_step_++;
  SequenceWork w;
  w.seq = id_;
  w.position = length_;
  w.tokens = tokens;
  w.start = length_ == 0;
  w.logits = logits;
  if (w.start) prompt_ = n;
  for (int r = 0; r < sp; ++r) {
    KvShare k;
    k.rows = rows_held(r);
    const int64_t need = (rows_at(r, length_ + n) + bs - 1) / bs;
    TESSERA_CHECK(need <= runner_.pool().num_blocks(), "the sequence needs "
                                                           << need << " KV blocks; the pool has "
                                                           << runner_.pool().num_blocks());
    // Its blocks are 0, 1, ... in order: the first feed sends them all (blocks_ is 0 then),
    // later ones only those it gains.
    for (int64_t b = blocks_[size_t(r)]; b < need; ++b) k.blocks.push_back(int32_t(b));
    blocks_[size_t(r)] = std::max(blocks_[size_t(r)], need);
    w.kv.push_back(std::move(k));
  }
  length_ += n;
  plan.work.push_back(std::move(w));
  const StepPlan ran = runner_.model().stage().first() ? plan : runner_.receive_plan();
  TESSERA_ASSERT(ran.id == plan.id, "step " << ran.id << " arrived for step " << plan.id);
  const StepOutput out = runner_.execute(ran);
  return out.logits;
}

Tensor SingleSequence::prefill(const std::vector<int32_t>& tokens, int64_t chunk, int64_t logits) {
  const int64_t n = int64_t(tokens.size());
  if (chunk <= 0 || chunk >= n || blocks_.size() > 1) return feed(tokens, logits);
  // Stage s works on chunk i while stage s + 1 works on chunk i - 1.
  const int64_t want = logits < 0 || logits > n ? n : logits;
  std::vector<Tensor> parts;
  for (int64_t b = 0; b < n; b += chunk) {
    const int64_t e = std::min(n, b + chunk);
    const Tensor t = feed(std::vector<int32_t>(tokens.begin() + b, tokens.begin() + e),
                          std::clamp<int64_t>(want - (n - e), 0, e - b));
    if (t.defined() && t.dim(0) > 0) parts.push_back(t);
  }
  if (!runner_.model().stage().last()) return Tensor();
  if (parts.size() == 1) return parts[0];
  int64_t total = 0;
  for (const Tensor& t : parts) total += t.dim(0);
  Tensor out = Tensor::empty({total, runner_.model().shard().vocab.size()}, DType::kF32);
  int64_t row = 0;
  for (const Tensor& t : parts) {
    std::memcpy(out.rows(row, row + t.dim(0)).raw(), t.raw(), t.nbytes());
    row += t.dim(0);
  }
  return out;
}

Tensor sequence_logits(const LlamaModel& model, const std::vector<int32_t>& tokens, int64_t logits,
                       int64_t chunk) {
  RunnerOptions o;
  o.num_blocks = (int64_t(tokens.size()) + o.block_size - 1) / o.block_size;
  ModelRunner runner(model, o);
  const Tensor mine = SingleSequence(runner).prefill(tokens, chunk, logits);
  return model.stage().last() ? gather_vocab_shards(mine, model.tp()) : Tensor();
}

}  // namespace tessera
