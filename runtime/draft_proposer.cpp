#include "runtime/draft_proposer.h"

#include <algorithm>

#include "io/model_store.h"

namespace tessera {
namespace {

LoadOptions one_rank(LoadOptions options) {
  options.stage_weights.clear();
  options.wire = WireFormat::kF32;
  return options;
}

}  // namespace

void check_draft_tokenizer(const std::string& path, const TokenizerData& mine,
                           const TokenizerData& target) {
  TESSERA_CHECK(mine.tokens.size() == target.tokens.size(),
                "the draft model " << path << " has a tokenizer of " << mine.tokens.size()
                                   << " tokens; the target's has " << target.tokens.size()
                                   << ": a draft model needs the target's tokenizer");
  for (size_t id = 0; id < mine.tokens.size(); ++id)
    TESSERA_CHECK(mine.tokens[id] == target.tokens[id],
                  "the draft model " << path << "'s token " << id << " is '" << mine.tokens[id]
                                     << "', the target's '" << target.tokens[id]
                                     << "': a draft model needs the target's tokenizer");
}

DraftModel DraftModel::load(const std::string& path, const TokenizerData& target,
                            const LoadOptions& options) {
  ModelReader reader(path);
  const TokenizerData mine = reader.read_tokenizer();
  check_draft_tokenizer(path, mine, target);
  DraftModel d;
  d.tp = make_local_communicator();
  d.pp = make_local_communicator();
  d.model = std::make_unique<LlamaModel>(
      LlamaModel::load(reader, d.tp.get(), d.pp.get(), nullptr, one_rank(options)));
  d.vocab = std::min<int64_t>(int64_t(mine.tokens.size()), d.model->config().vocab_size);
  return d;
}

DraftModel DraftModel::random(const ModelConfig& config, uint64_t seed,
                              const LoadOptions& options) {
  DraftModel d;
  d.tp = make_local_communicator();
  d.pp = make_local_communicator();
  d.model = std::make_unique<LlamaModel>(
      LlamaModel::random(config, seed, d.tp.get(), d.pp.get(), nullptr, one_rank(options)));
  d.vocab = config.vocab_size;
  return d;
}

DraftProposer::DraftProposer(DraftModel draft, const DraftOptions& options)
    : draft_(std::move(draft)), options_(options) {
  TESSERA_CHECK(draft_.model, "the draft proposer needs a model");
  TESSERA_CHECK(options_.num_blocks >= 1 && options_.block_size >= 1,
                "the draft model's KV cache needs blocks, got "
                    << options_.num_blocks << " of " << options_.block_size << " tokens");
  RunnerOptions r;
  r.num_blocks = options_.num_blocks;
  r.block_size = options_.block_size;
  r.kv_dtype = options_.kv_dtype;
  runner_ = std::make_unique<ModelRunner>(*draft_.model, r);
  for (int64_t b = options_.num_blocks - 1; b >= 0; --b) free_.push_back(int32_t(b));
}

DraftProposer::~DraftProposer() = default;

void DraftProposer::drop(int64_t seq) {
  const auto it = sequences_.find(seq);
  if (it == sequences_.end()) return;
  free_.insert(free_.end(), it->second.blocks.begin(), it->second.blocks.end());
  sequences_.erase(it);
  runner_->forget(seq);
}

void DraftProposer::release(int64_t seq) {
  drop(seq);
}

bool DraftProposer::reserve(int64_t seq, Sequence& s, int64_t rows) {
  const int64_t bs = options_.block_size;
  const int64_t need = (rows + bs - 1) / bs - int64_t(s.blocks.size());
  while (need > int64_t(free_.size())) {
    int64_t victim = -1;
    uint64_t oldest = UINT64_MAX;
    for (const auto& [id, other] : sequences_)
      if (id != seq && !other.blocks.empty() && other.used < oldest) {
        oldest = other.used;
        victim = id;
      }
    if (victim < 0) return false;
    drop(victim);
  }
  for (int64_t i = 0; i < need; ++i) {
    s.blocks.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

int32_t DraftProposer::feed(int64_t seq, Sequence& s, const std::vector<int32_t>& tokens,
                            int64_t from) {
  StepPlan plan;
  plan.id = next_step_++;
  SequenceWork w;
  w.seq = seq;
  w.position = from;
  w.tokens.assign(tokens.begin() + from, tokens.end());
  // Every step sends the whole table (start): the runner's copy then never holds rows of a
  // rolled-back draft, and its token history is the sequence's (context).
  w.start = true;
  w.context.assign(tokens.begin(), tokens.begin() + from);
  w.logits = 1;
  KvShare share;
  share.rows = from;
  share.blocks = s.blocks;
  w.kv.push_back(std::move(share));
  plan.work.push_back(std::move(w));
  const StepOutput out = runner_->execute(plan);
  ++steps_;
  positions_ += int64_t(tokens.size()) - from;
  s.fed = tokens;
  const float* logits = out.logits.data<float>();
  const int64_t n = std::min(draft_.vocab, out.logits.dim(1));
  return int32_t(std::max_element(logits, logits + n) - logits);
}

std::vector<int32_t> DraftProposer::propose(int64_t seq, const std::vector<int32_t>& tokens,
                                            int64_t k) {
  if (k <= 0 || tokens.empty()) return {};
  Sequence& s = sequences_[seq];
  s.used = ++clock_;
  // Rows up to the last token the draft and the sequence share are kept; the sequence's last
  // token is fed again at least (its logits give the first proposal).
  const auto [mine, theirs] =
      std::mismatch(s.fed.begin(), s.fed.end(), tokens.begin(), tokens.end());
  int64_t from = std::min<int64_t>(mine - s.fed.begin(), int64_t(tokens.size()) - 1);
  const int64_t window = draft_.model->config().context_window(0);
  k = std::min(k, window - int64_t(tokens.size()));
  // The last proposal is never fed: the draft holds tokens and k - 1 proposals at most.
  while (k > 0 && !reserve(seq, s, int64_t(tokens.size()) + k - 1)) --k;
  if (k <= 0) {
    drop(seq);
    return {};
  }
  std::vector<int32_t> proposals;
  std::vector<int32_t> text = tokens;
  proposals.push_back(feed(seq, s, text, from));
  while (int64_t(proposals.size()) < k) {
    from = int64_t(text.size());
    text.push_back(proposals.back());
    proposals.push_back(feed(seq, s, text, from));
  }
  return proposals;
}

}  // namespace tessera
