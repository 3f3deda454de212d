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
      if (id != seq && !other.blocks.empty() && other.used < clock_ && other.used < oldest) {
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

std::vector<int32_t> DraftProposer::feed(const std::vector<Feed>& feeds) {
  StepPlan plan;
  plan.id = next_step_++;
  for (const Feed& f : feeds) {
    const std::vector<int32_t>& text = *f.text;
    SequenceWork w;
    w.seq = f.seq;
    w.position = f.from;
    w.tokens.assign(text.begin() + f.from, text.end());
    // Every step sends the whole table (start): the runner's copy then never holds rows of a
    // rolled-back draft, and its token history is the sequence's (context).
    w.start = true;
    w.context.assign(text.begin(), text.begin() + f.from);
    w.logits = 1;
    KvShare share;
    share.rows = f.from;
    share.blocks = f.s->blocks;
    w.kv.push_back(std::move(share));
    plan.work.push_back(std::move(w));
    positions_ += int64_t(text.size()) - f.from;
    f.s->fed = text;
  }
  const StepOutput out = runner_->execute(plan);
  ++steps_;
  TESSERA_ASSERT(out.logits.dim(0) == int64_t(feeds.size()), "a row of logits per sequence");
  const int64_t n = std::min(draft_.vocab, out.logits.dim(1));
  std::vector<int32_t> argmax;
  for (size_t i = 0; i < feeds.size(); ++i) {
    const float* row = out.logits.data<float>() + i * out.logits.dim(1);
    argmax.push_back(int32_t(std::max_element(row, row + n) - row));
  }
  return argmax;
}

std::vector<int32_t> DraftProposer::propose(int64_t seq, const std::vector<int32_t>& tokens,
                                            int64_t k) {
  return propose_all({{seq, &tokens, k}}).at(0);
}

std::vector<std::vector<int32_t>> DraftProposer::propose_all(
    const std::vector<ProposalRequest>& requests) {
  std::vector<std::vector<int32_t>> proposals(requests.size());
  ++clock_;
  for (const ProposalRequest& r : requests)
    if (r.k > 0 && !r.tokens->empty()) {
      uint64_t& used = sequences_[r.seq].used;
      TESSERA_ASSERT(used != clock_, "sequence " << r.seq << " is asked for proposals twice");
      used = clock_;
    }
  // Each sequence's text (its tokens, then its proposals as they come) and its first feed: rows
  // up to the last token the draft and the sequence share are kept; the sequence's last token is
  // fed again at least (its logits give the first proposal).
  const int64_t window = draft_.model->config().context_window(0);
  std::vector<std::vector<int32_t>> texts(requests.size());
  std::vector<int64_t> wants(requests.size(), 0);
  std::vector<Feed> feeds;
  std::vector<size_t> fed_requests;  // the request of each feed
  for (size_t i = 0; i < requests.size(); ++i) {
    const ProposalRequest& r = requests[i];
    const std::vector<int32_t>& tokens = *r.tokens;
    if (r.k <= 0 || tokens.empty()) continue;
    Sequence& s = sequences_[r.seq];
    const auto [mine, theirs] =
        std::mismatch(s.fed.begin(), s.fed.end(), tokens.begin(), tokens.end());
    const int64_t from = std::min<int64_t>(mine - s.fed.begin(), int64_t(tokens.size()) - 1);
    int64_t k = std::min(r.k, window - int64_t(tokens.size()));
    // The last proposal is never fed: the draft holds tokens and k - 1 proposals at most.
    while (k > 0 && !reserve(r.seq, s, int64_t(tokens.size()) + k - 1)) --k;
    if (k <= 0) {
      drop(r.seq);
      continue;
    }
    wants[i] = k;
    texts[i] = tokens;
    feeds.push_back({r.seq, &s, &texts[i], from});
    fed_requests.push_back(i);
  }
  // One step per proposal, each sequence in it while it wants more.
  while (!feeds.empty()) {
    const std::vector<int32_t> next = feed(feeds);
    std::vector<Feed> more;
    std::vector<size_t> more_requests;
    for (size_t f = 0; f < feeds.size(); ++f) {
      const size_t i = fed_requests[f];
      proposals[i].push_back(next[f]);
      if (int64_t(proposals[i].size()) == wants[i]) continue;
      texts[i].push_back(next[f]);
      more.push_back({feeds[f].seq, feeds[f].s, &texts[i], int64_t(texts[i].size()) - 1});
      more_requests.push_back(i);
    }
    feeds = std::move(more);
    fed_requests = std::move(more_requests);
  }
  return proposals;
}

}  // namespace tessera
