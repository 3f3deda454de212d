#include "runtime/model_runner.h"

#include <chrono>
#include <deque>

#include "parallel/sp_split.h"
#include "runtime/decode_graphs.h"

namespace tessera {
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

ModelRunner::ModelRunner(const LlamaModel& model, const RunnerOptions& options)
    : model_(model), options_(options) {
  TESSERA_CHECK(options.num_blocks >= 1, "the KV cache needs at least one block");
  TESSERA_CHECK(options.block_size >= 1, "the KV block size must be at least 1");
  rank_.sp_rank = model.shard().sp_rank;
  rank_.sp_size = model.shard().sp_size;
  rank_.block_size = options.block_size;
  pool_ = KvPool(model.kv_shape(options.block_size, options.kv_dtype), options.num_blocks,
                 model.kv_scales());
  if (options.graph_batch > 0)  // (used where they can be: DecodeGraphs::fits)
    graphs_ = std::make_unique<DecodeGraphs>(model, options.graph_batch, options.graph_keys);
}

ModelRunner::~ModelRunner() = default;

StepPlan ModelRunner::receive_plan() const {
  std::string bytes;
  model_.stage().receive_plan(bytes);
  return StepPlan::decode(bytes);
}

StepInputs ModelRunner::inputs_of(const StepPlan& plan) {
  for (const int64_t id : plan.release) sequences_.erase(id);
  for (const BlockCopy& c : plan.copies)
    if (c.sp_rank == rank_.sp_rank) pool_.copy_block(c.src, c.dst);
  const bool last = model_.stage().last();
  StepInputs in;
  for (const SequenceWork& w : plan.work) {
    TESSERA_ASSERT(
        w.start || sequences_.count(w.seq),
        "step " << plan.id << " continues sequence " << w.seq << ", which this rank does not hold");
    Sequence& s = sequences_[w.seq];
    const KvShare& share = w.kv.at(size_t(rank_.sp_rank));
    apply_share(share, w.start, s.blocks);
    if (last) {  // the ids the repetition penalty looks at
      if (w.start) s.history = w.context;
      s.history.insert(s.history.end(), w.tokens.begin(), w.tokens.end());
    }
    add_sequence(in, rank_, w.seq, w.position, w.tokens, share.rows, s.blocks, w.logits, w.sample);
  }
  return in;
}

Tensor ModelRunner::logits_of(const Tensor& x, const StepInputs& in) const {
  const int64_t vocab = model_.shard().vocab.size();
  if (in.logits == 0) return Tensor::empty({0, vocab}, DType::kF32, model_.device());
  if (in.sp_prompt()) {  // the SP rank with the prompt's last token computes, the others receive
    const int owner = sp_last_token_owner(in.sequences[0].tokens, rank_.sp_size);
    Tensor logits = Tensor::empty({in.logits, vocab}, DType::kF32);
    if (rank_.sp_rank == owner) ops::convert(model_.head(x.rows(in.rows - 1, in.rows)), logits);
    model_.sp()->broadcast(logits, owner);
    return logits;
  }
  Tensor wanted = Tensor::empty({in.logits, x.dim(1)}, x.dtype(), x.device());
  int64_t at = 0;
  for (const SequenceRows& s : in.sequences) {
    Tensor to = wanted.rows(at, at + s.logits);
    ops::copy(x.rows(s.last_row() - s.logits, s.last_row()), to);
    at += s.logits;
  }
  const Tensor logits = model_.head(wanted);
  if (logits.dtype() == DType::kF32) return logits;
  Tensor out = Tensor::empty(logits.shape(), DType::kF32, logits.device());
  ops::convert(logits, out);
  return out;
}

Tensor ModelRunner::run_eagerly(StepInputs& in, const Tensor& hidden) {
  in.upload(pool_, model_.shard().heads.q.size(), model_.dtype());
  Tensor x = hidden;  // (received for this step in the model's dtype: the residual stream itself)
  if (model_.stage().first()) {
    x = Tensor::empty({in.rows, model_.config().hidden_size}, model_.dtype(), model_.device());
    model_.embed(in.tokens, x);
  }
  model_.forward(x, in, pool_);
  return model_.stage().last() ? logits_of(x, in) : x;
}

StepOutput ModelRunner::finish_last_stage(const StepPlan& plan, const StepInputs& in,
                                          const Tensor& logits) {
  StepOutput out;
  std::vector<RowSampling> rows;
  std::vector<int64_t> sampled_rows;  // of `logits`: each sampled sequence's last (drafts + 1)
  // The ids before each row a speculating sequence samples: its history without the proposals
  // after that row (the repetition penalty sees what decoding one token at a time would).
  std::deque<std::vector<int32_t>> histories;
  bool asked = false;
  int64_t at = 0;
  for (size_t i = 0; i < plan.work.size(); ++i) {
    const SequenceWork& w = plan.work[i];
    at += in.sequences[i].logits;
    asked |= w.logits != 0 && w.drafts == 0;
    if (!w.sample) continue;
    const std::vector<int32_t>& history = sequences_.at(w.seq).history;
    TESSERA_ASSERT(in.sequences[i].logits > w.drafts,
                   "sequence " << w.seq << " checks " << w.drafts << " proposals with "
                               << in.sequences[i].logits << " rows of logits");
    for (int64_t j = 0; j <= w.drafts; ++j) {
      const std::vector<int32_t>* before = &history;
      if (j < w.drafts) {
        histories.emplace_back(history.begin(), history.end() - (w.drafts - j));
        before = &histories.back();
      }
      rows.push_back({w.sampling, w.output_index + j, before});
      sampled_rows.push_back(at - 1 - w.drafts + j);
    }
  }
  if (asked) out.logits = logits.to(Device::cpu());
  if (rows.empty()) return out;
  Tensor to_sample = logits;  // its rows are the sampled rows unless logits were asked for
  if (int64_t(sampled_rows.size()) != logits.dim(0)) {
    to_sample = Tensor::empty({int64_t(rows.size()), logits.dim(1)}, DType::kF32, logits.device());
    for (size_t j = 0; j < sampled_rows.size(); ++j) {
      Tensor row = to_sample.rows(int64_t(j), int64_t(j) + 1);
      ops::copy(logits.rows(sampled_rows[j], sampled_rows[j] + 1), row);
    }
  }
  const SampledTokens all = sample_with_logprobs(model_, to_sample, rows);
  // Each sequence keeps its tokens up to the first that is not the proposal after it (which it
  // keeps too: what decoding would have sampled there); its history drops the proposals after.
  size_t row = 0;
  for (const SequenceWork& w : plan.work) {
    if (!w.sample) continue;
    const int32_t* proposals = w.tokens.data() + (int64_t(w.tokens.size()) - w.drafts);
    int64_t keep = 1;
    while (keep <= w.drafts && all.tokens[row + size_t(keep) - 1] == proposals[keep - 1]) ++keep;
    for (int64_t j = 0; j < keep; ++j) {
      out.sampled.tokens.push_back(all.tokens[row + size_t(j)]);
      out.sampled.logprobs.push_back(all.logprobs[row + size_t(j)]);
    }
    out.sampled.counts.push_back(int32_t(keep));
    std::vector<int32_t>& history = sequences_.at(w.seq).history;
    history.resize(history.size() - size_t(w.drafts - (keep - 1)));
    row += size_t(w.drafts + 1);
  }
  return out;
}

void ModelRunner::send_sampled(const StepPlan& plan, const SampledTokens& sampled) const {
  const ModelShard& shard = model_.shard();
  if (model_.stage().first() || shard.tp_rank != 0 || shard.sp_rank != 0 || sampled.tokens.empty())
    return;
  // Per sampled sequence: its count, then drafts + 1 records (those past the count unused).
  std::vector<int32_t> message = {int32_t(plan.id & 0x7fffffff)};
  size_t token = 0, seq = 0;
  for (const SequenceWork& w : plan.work)
    if (w.sample) {
      const int32_t count = sampled.counts[seq++];
      message.push_back(count);
      for (int64_t j = 0; j <= w.drafts; ++j) {
        const bool real = j < count;
        append_sampled(message, real ? sampled.tokens[token] : 0,
                       real ? sampled.logprobs[token] : TokenLogprobs{}, w.sampling.logprobs);
        token += real;
      }
    }
  model_.stage().send_to_first(Tensor::from_i32(message, {int64_t(message.size())}));
}

StepOutput ModelRunner::execute(const StepPlan& plan) {
  const PipelineStage& stage = model_.stage();
  if (plan.stop) {
    if (!stage.last()) stage.send_plan(plan.encode());
    return {};
  }
  StepInputs in = inputs_of(plan);
  // Stage outputs stay on the model's device: hidden states go GPU to GPU (NCCL, or MPI through
  // host memory) in the model's dtype, and the last stage samples where its logits are.
  Tensor hidden;
  if (!stage.first()) {
    hidden = Tensor::empty({in.rows, model_.config().hidden_size}, model_.dtype(), model_.device());
    stage.receive(hidden);
  }
  const double begin = now_seconds();
  Tensor out;
  if (graphs_ && graphs_->fits(in)) out = graphs_->run(in, hidden, pool_);
  if (!out.defined()) out = run_eagerly(in, hidden);
  StepOutput done;
  if (stage.last()) done = finish_last_stage(plan, in, out);
  done.compute_begin = begin;
  done.compute_end = now_seconds();
  if (stage.last()) {
    send_sampled(plan, done.sampled);
  } else {
    stage.send_plan(plan.encode());
    stage.send(out);
  }
  return done;
}

SampledTokens ModelRunner::receive_sampled(const StepPlan& plan) const {
  int64_t words = 1;
  for (const SequenceWork& w : plan.work)
    if (w.sample) words += 1 + (w.drafts + 1) * sampled_words(w.sampling.logprobs);
  Tensor t = Tensor::empty({words}, DType::kI32);
  model_.stage().receive_from_last(t);
  TESSERA_ASSERT(t.data<int32_t>()[0] == int32_t(plan.id & 0x7fffffff),
                 "tokens of step " << t.data<int32_t>()[0] << " arrived for step " << plan.id);
  const std::vector<int32_t> message(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  SampledTokens sampled;
  size_t at = 1;
  for (const SequenceWork& w : plan.work)
    if (w.sample) {
      const int32_t count = message[at++];
      TESSERA_ASSERT(count >= 1 && count <= w.drafts + 1, "step "
                                                              << plan.id << " returned " << count
                                                              << " tokens for sequence " << w.seq);
      sampled.counts.push_back(count);
      for (int64_t j = 0; j <= w.drafts; ++j) {
        TokenLogprobs lp;
        const int32_t token = read_sampled(message, at, w.sampling.logprobs, lp);
        if (j >= count) continue;
        sampled.tokens.push_back(token);
        sampled.logprobs.push_back(std::move(lp));
      }
    }
  return sampled;
}

int64_t ModelRunner::graph_replays() const {
  return graphs_ ? graphs_->replays() : 0;
}

int64_t ModelRunner::graphs_captured() const {
  return graphs_ ? graphs_->captured() : 0;
}

double ModelRunner::time_graph_replays(int64_t bucket, int times) const {
  TESSERA_CHECK(graphs_, "this runner replays no decode graphs");
  return graphs_->time_replays(bucket, times);
}

}  // namespace tessera
