#include "runtime/scheduler.h"

#include <algorithm>
#include <unordered_map>

#include "kernels/error.h"
#include "parallel/sp_split.h"
#include "runtime/row_tile_fit.h"

namespace tessera {
namespace {

uint64_t block_hash(uint64_t previous, const int32_t* tokens, int64_t n) {
  uint64_t h = previous ^ 0x9E3779B97F4A7C15ull;
  for (int64_t i = 0; i < n; ++i) {
    h ^= uint64_t(uint32_t(tokens[i]));
    h *= 0x100000001B3ull;  // FNV-1a prime
    h ^= h >> 29;
  }
  return h;
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace

struct Scheduler::Seq {
  int64_t id = 0;
  std::vector<int32_t> known;  // prompt, then every sampled token appended
  int64_t prompt = 0;          // the request's prompt length
  int64_t max_length = 0;
  SamplingParams sampling;
  int64_t fed = 0;       // positions whose K/V are (being) computed
  int64_t prefill = 0;   // tokens known when it was (re)admitted: fed without sampling but the last
  bool running = false;  // admitted: holds blocks
  bool awaiting = false;  // its sampled token has not arrived
  bool starting = false;  // admitted (or forked), no step yet: the next plan sends whole tables
  int64_t drafts = 0;     // proposals its step in flight checks (their K/V are being written)
  int64_t held = 0;       // rows its tables were grown for (past fed after rejected proposals;
                          // those blocks stay its own and are written over as it goes on)
  int64_t held_before = 0;  // held as the plan of its step in flight began (drop_proposals)
  int64_t spec_k = 0;     // proposals its next step may check (adapts; SchedulerOptions)
  int64_t spec_pause = 0;    // steps left without proposals
  int64_t spec_backoff = 0;  // the pause after its next rejected single proposal, halved
  std::vector<std::vector<int32_t>> tables;  // per SP rank
  std::vector<uint64_t> hashes;              // of its leading full blocks (SP rank 0, no SP)
};

Scheduler::Scheduler(const SchedulerOptions& o) : options_(o) {
  TESSERA_CHECK(o.block_size >= 1, "the KV block size must be at least 1, got " << o.block_size);
  TESSERA_CHECK(o.num_blocks >= 1, "the KV cache needs at least one block, got " << o.num_blocks);
  TESSERA_CHECK(o.max_sequences >= 1, "max_sequences must be at least 1");
  TESSERA_CHECK(o.max_step_tokens >= 1, "the step token budget must be at least 1");
  TESSERA_CHECK(o.prefill_chunk >= 0, "the prefill chunk must be >= 0");
  TESSERA_CHECK(o.groups >= 1 && o.sp >= 1, "groups and sp must be at least 1");
  TESSERA_CHECK(o.prompt_chunks >= 1, "prompt_chunks must be at least 1");
  TESSERA_CHECK(o.speculative_tokens >= 0, "speculative_tokens must be >= 0");
  TESSERA_CHECK(o.speculative_max_batch >= 0, "speculative_max_batch must be >= 0");
  if (o.sp > 1) options_.prefix_caching = false;
  for (int r = 0; r < o.sp; ++r) blocks_.emplace_back(o.num_blocks);
}

Scheduler::~Scheduler() = default;

int64_t Scheduler::rows_after(const Seq& s, int rank, int64_t length) const {
  if (options_.sp == 1) return length;
  // With sequence parallelism a prompt is prefilled whole: a sequence holds none or all of it.
  TESSERA_ASSERT(length == 0 || length >= s.prefill,
                 "sequence " << s.id << " is part way through a sequence-parallel prompt");
  return length == 0 ? 0 : sp_rows_held(s.prefill, length, options_.sp, rank);
}

int64_t Scheduler::blocks_for(int64_t prompt, int64_t tokens) const {
  int64_t most = 0;
  for (int r = 0; r < options_.sp; ++r) {
    const int64_t rows =
        options_.sp == 1 ? tokens : sp_rows_held(prompt, std::max(tokens, prompt), options_.sp, r);
    most = std::max(most, ceil_div(rows, options_.block_size));
  }
  return most;
}

bool Scheduler::fits(int64_t prompt, int64_t length) const {
  length = std::max(length, prompt);
  return std::max(blocks_for(prompt, length), blocks_for(length, length)) <= options_.num_blocks;
}

void Scheduler::add(int64_t id, const std::vector<int32_t>& prompt, const SamplingParams& sampling,
                    int64_t max_length) {
  TESSERA_ASSERT(!seqs_.count(id), "sequence " << id << " is already scheduled");
  TESSERA_CHECK(!prompt.empty(), "the prompt is empty");
  const int64_t p = int64_t(prompt.size());
  max_length = std::max(max_length, p);
  // After a preemption everything so far is prefilled as one prompt: both splits must fit.
  TESSERA_CHECK(fits(p, max_length),
                "the request needs "
                    << std::max(blocks_for(p, max_length), blocks_for(max_length, max_length))
                    << " KV blocks of " << options_.block_size << " tokens on a rank ("
                    << max_length << " positions); a rank's cache has " << options_.num_blocks
                    << " (give it more memory, or spread a long sequence over "
                       "ranks with --sp)");
  auto s = std::make_unique<Seq>();
  s->id = id;
  s->known = prompt;
  s->prompt = p;
  s->max_length = max_length;
  s->sampling = sampling;
  s->spec_k = options_.speculative_tokens;
  s->tables.resize(size_t(options_.sp));
  seqs_.emplace(id, std::move(s));
  waiting_.push_back(id);
}

void Scheduler::fork(int64_t id, int64_t new_id, const SamplingParams& sampling) {
  const auto it = seqs_.find(id);
  TESSERA_ASSERT(it != seqs_.end() && it->second->running && !it->second->awaiting,
                 "fork of sequence " << id << ", which is not running between steps");
  TESSERA_ASSERT(!seqs_.count(new_id), "sequence " << new_id << " is already scheduled");
  auto s = std::make_unique<Seq>(*it->second);
  s->id = new_id;
  s->sampling = sampling;
  s->starting = true;  // the ranks learn its tables with its first step
  for (int r = 0; r < options_.sp; ++r)
    for (int32_t b : s->tables[size_t(r)]) blocks_[size_t(r)].retain(b);
  seqs_.emplace(new_id, std::move(s));
  running_.push_back(new_id);
}

bool Scheduler::awaiting(int64_t id) const {
  const auto it = seqs_.find(id);
  return it != seqs_.end() && it->second->awaiting;
}

bool Scheduler::ready(const Seq& s) const {
  return s.running && !s.awaiting && s.fed < int64_t(s.known.size());
}

std::vector<int64_t> Scheduler::blocks_needed(const Seq& s, int64_t length) const {
  std::vector<int64_t> need(size_t(options_.sp));
  for (int r = 0; r < options_.sp; ++r)
    need[size_t(r)] = std::max<int64_t>(0, ceil_div(rows_after(s, r, length), options_.block_size) -
                                               int64_t(s.tables[size_t(r)].size()));
  return need;
}

bool Scheduler::can_allocate(const std::vector<int64_t>& need) const {
  for (int r = 0; r < options_.sp; ++r)
    if (need[size_t(r)] > blocks_[size_t(r)].available()) return false;
  return true;
}

void Scheduler::grow(Seq& s, int64_t length, StepPlan& plan,
                     std::vector<std::vector<TableEntry>>& replaced) {
  const int64_t bs = options_.block_size;
  for (int r = 0; r < options_.sp; ++r) {
    BlockAllocator& a = blocks_[size_t(r)];
    std::vector<int32_t>& table = s.tables[size_t(r)];
    const int64_t from = rows_after(s, r, s.fed), to = rows_after(s, r, length);
    if (to <= from) continue;
    for (int64_t j = from / bs; j <= (to - 1) / bs; ++j) {
      if (j >= int64_t(table.size())) {
        table.push_back(a.allocate());
      } else if (a.refs(table[size_t(j)]) > 1) {  // shared: copy before writing
        const int32_t copy = a.allocate();
        plan.copies.push_back({int32_t(r), table[size_t(j)], copy});
        a.release(table[size_t(j)]);
        table[size_t(j)] = copy;
        replaced[size_t(r)].push_back({int32_t(j), copy});
        if (r == 0 && j < int64_t(s.hashes.size())) s.hashes.resize(size_t(j));
      }
    }
  }
  s.held = std::max(s.held, length);
}

void Scheduler::publish_full_blocks(Seq& s, int64_t length, bool written) {
  if (!options_.prefix_caching) return;
  const int64_t bs = options_.block_size;
  for (int64_t j = int64_t(s.hashes.size()); (j + 1) * bs <= length; ++j) {
    const uint64_t previous = j == 0 ? 0 : s.hashes.back();
    const uint64_t h = block_hash(previous, s.known.data() + j * bs, bs);
    // A block this step writes is shared only from the next step on: it is not yet written
    // when the step's copies (done before it) would copy it. One written already (accepted
    // proposals) is shared now, while the sequence surely holds it.
    if (written)
      blocks_[0].publish(s.tables[0][size_t(j)], h);
    else
      unpublished_.push_back({s.tables[0][size_t(j)], h});
    s.hashes.push_back(h);
  }
}

void Scheduler::admit(Seq& s) {
  s.running = true;
  s.starting = true;
  s.fed = 0;
  s.prefill = int64_t(s.known.size());
  running_.push_back(s.id);
  metrics_.prompt_tokens += int64_t(s.known.size());
  if (!options_.prefix_caching) return;
  const int64_t bs = options_.block_size, n = int64_t(s.known.size());
  uint64_t h = 0;
  for (int64_t j = 0; (j + 1) * bs <= n; ++j) {
    h = block_hash(h, s.known.data() + j * bs, bs);
    const std::optional<int32_t> b = blocks_[0].lookup(h);
    if (!b) break;
    s.tables[0].push_back(*b);
    s.hashes.push_back(h);
  }
  // The last token is always computed: its logits give the next token.
  s.fed = std::min(int64_t(s.tables[0].size()) * bs, n - 1);
  metrics_.cached_tokens += s.fed;
}

void Scheduler::release_blocks(Seq& s) {
  for (int r = 0; r < options_.sp; ++r) {
    for (int32_t b : s.tables[size_t(r)]) blocks_[size_t(r)].release(b);
    s.tables[size_t(r)].clear();
  }
  s.hashes.clear();
  s.held = 0;
}

void Scheduler::preempt(Seq& s) {
  TESSERA_ASSERT(s.running && !s.awaiting, "preempting sequence " << s.id << " in flight");
  release_blocks(s);
  s.running = false;
  s.fed = 0;
  running_.erase(std::find(running_.begin(), running_.end(), s.id));
  waiting_.push_front(s.id);
  release_.push_back(s.id);  // the ranks forget it; it starts again with whole tables
  ++metrics_.preemptions;
}

void Scheduler::add_work(Seq& s, int64_t n, StepPlan& plan, std::vector<int32_t> proposals) {
  std::vector<int64_t> known_to_ranks(size_t(options_.sp));  // table entries the ranks hold
  for (int r = 0; r < options_.sp && !s.starting; ++r)
    known_to_ranks[size_t(r)] = int64_t(s.tables[size_t(r)].size());
  std::vector<std::vector<TableEntry>> replaced(size_t(options_.sp));
  const int64_t drafts = int64_t(proposals.size());
  s.held_before = s.held;
  grow(s, s.fed + n + drafts, plan, replaced);  // (the proposals' rows too)
  SequenceWork w;
  w.seq = s.id;
  w.position = s.fed;
  w.tokens.assign(s.known.begin() + s.fed, s.known.begin() + s.fed + n);
  w.tokens.insert(w.tokens.end(), proposals.begin(), proposals.end());
  for (int r = 0; r < options_.sp; ++r) {
    const std::vector<int32_t>& table = s.tables[size_t(r)];
    KvShare k;
    k.rows = rows_after(s, r, s.fed);
    k.blocks.assign(table.begin() + known_to_ranks[size_t(r)], table.end());
    for (const TableEntry& e : replaced[size_t(r)])  // (with start the whole table goes)
      if (e.index < known_to_ranks[size_t(r)]) k.replaced.push_back(e);
    w.kv.push_back(std::move(k));
  }
  w.start = s.starting;
  if (s.starting) w.context.assign(s.known.begin(), s.known.begin() + s.fed);
  s.starting = false;
  const bool decode = s.fed >= s.prefill;
  s.fed += n;  // (the proposals' rows count once they are accepted: append)
  (decode ? metrics_.decode_tokens : metrics_.prefill_tokens) += n;
  publish_full_blocks(s, s.fed);
  w.sample = s.fed == int64_t(s.known.size());
  TESSERA_ASSERT(w.sample || drafts == 0, "proposals for sequence " << s.id << ", not decoding");
  if (w.sample) {
    w.output_index = int64_t(s.known.size()) - s.prompt;
    w.sampling = s.sampling;
    w.drafts = drafts;
    if (drafts > 0) w.logits = drafts + 1;
    s.drafts = drafts;
    s.awaiting = true;
    if (drafts > 0) {
      metrics_.proposed_tokens += drafts;
      ++metrics_.speculative_steps;
    }
  }
  plan.work.push_back(std::move(w));
}

StepPlan Scheduler::schedule() {
  StepPlan plan;
  const int64_t active = std::min<int64_t>(int64_t(seqs_.size()), options_.max_sequences);
  const int64_t per_step = std::max<int64_t>(1, ceil_div(active, options_.groups));
  const bool sp = options_.sp > 1;
  int64_t budget = options_.max_step_tokens;
  std::vector<int64_t> in_plan;
  auto full = [&] { return int64_t(plan.work.size()) >= per_step || budget < 1; };
  auto scheduled = [&](int64_t id) {
    return std::find(in_plan.begin(), in_plan.end(), id) != in_plan.end();
  };
  // Frees blocks for s by preempting the most recently admitted sequences that are between
  // steps; false if s itself had to go (or nothing could make room).
  auto make_room = [&](Seq& s, int64_t length) {
    while (!can_allocate(blocks_needed(s, length))) {
      Seq* victim = nullptr;
      for (auto it = running_.rbegin(); it != running_.rend() && !victim; ++it) {
        Seq& v = *seqs_.at(*it);
        if (v.id != s.id && !v.awaiting && !scheduled(v.id)) victim = &v;
      }
      if (!victim) {
        preempt(s);
        return false;
      }
      preempt(*victim);
    }
    return true;
  };
  // 1. Decoding sequences: one token each. With speculative decoding also proposals to check,
  // from what the budget leaves after every decoding sequence's token (half of it while prompts
  // wait or are being prefilled), no more than the sequence may store, and only in blocks free
  // without preempting anyone. (Over a copy of the list: preemption changes it.)
  bool speculate = options_.speculative_tokens > 0 && options_.proposer;
  int64_t decoding = 0;  // ready decoding sequences this step takes, for their one token each
  bool prompts = !waiting_.empty();
  bool prefilling = false;  // a running sequence's prompt goes on in this step
  for (int64_t id : running_) {
    const Seq& s = *seqs_.at(id);
    if (ready(s) && s.fed >= s.prefill) ++decoding;
    prefilling |= ready(s) && s.fed < s.prefill;
  }
  prompts |= prefilling;
  // Whether a prompt may join this step's decoding rows (below: a running one's next chunk, or a
  // waiting one admitted where a sequence may start; an SP prompt is always a step of its own).
  const bool prompt_may_join =
      !sp &&
      (prefilling || (!waiting_.empty() && int64_t(running_.size()) < options_.max_sequences));
  decoding = std::min({decoding, per_step, budget});
  if (options_.speculative_max_batch > 0 && decoding > options_.speculative_max_batch)
    speculate = false;
  int64_t spare = budget - decoding;
  if (prompts) spare /= 2;
  // Proposals never take the step's rows past those the batch-invariant kernels take
  // (ops::RowTiling::max_rows): checking them must not change how the step's rows are computed.
  // (Here for the decoding rows; once the prompts have joined, below, for theirs too. A step
  // past them already takes the other kernels, with or without proposals.)
  if (options_.row_tile_max_rows > 0 && decoding <= options_.row_tile_max_rows)
    spare = std::min(spare, options_.row_tile_max_rows - decoding);
  // Every decoding sequence's proposals at once (a draft model runs them as one batch), fitted
  // to the row tiles where no prompt may join the step.
  std::unordered_map<int64_t, std::vector<int32_t>> proposed;
  if (speculate) proposed = propose_for_step(decoding, spare, !prompt_may_join);
  for (int64_t id : std::vector<int64_t>(running_)) {
    if (full()) break;
    Seq& s = *seqs_.at(id);
    if (!ready(s) || s.fed < s.prefill) continue;
    if (!make_room(s, s.fed + 1)) continue;
    std::vector<int32_t> proposals;
    if (speculate && s.spec_pause > 0) --s.spec_pause;
    const auto found = proposed.find(s.id);
    if (found != proposed.end()) {
      proposals = std::move(found->second);
      int64_t k = std::min<int64_t>(int64_t(proposals.size()), spare);
      while (k > 0 && !can_allocate(blocks_needed(s, s.fed + 1 + k))) --k;
      proposals.resize(size_t(k));
    }
    spare -= int64_t(proposals.size());
    budget -= 1 + int64_t(proposals.size());
    add_work(s, 1, plan, std::move(proposals));
    in_plan.push_back(s.id);
  }
  // 2. Admitted prompts still being prefilled, then new ones in arrival order.
  auto prefill_chunk = [&](Seq& s) {
    int64_t n = s.prefill - s.fed;
    if (options_.prefill_chunk > 0)
      n = std::min(n, options_.prefill_chunk);
    else if (options_.prompt_chunks > 1)
      n = std::min(n, std::max(kMinPromptChunk, ceil_div(s.prefill, options_.prompt_chunks)));
    return std::min(n, budget);
  };
  for (int64_t id : std::vector<int64_t>(running_)) {
    if (full() || sp) break;
    Seq& s = *seqs_.at(id);
    if (!ready(s) || s.fed >= s.prefill || scheduled(s.id)) continue;
    const int64_t n = prefill_chunk(s);
    if (!make_room(s, s.fed + n)) continue;
    add_work(s, n, plan);
    in_plan.push_back(s.id);
    budget -= n;
  }
  // 3. New sequences in arrival order while there is room. A static batch (the baseline)
  // admits only into an empty engine, then runs that batch to its end.
  if (options_.static_batches && running_.empty()) batch_open_ = true;
  bool no_room = false;  // for sequences beyond this step's share
  while (!waiting_.empty() && !full() && (!options_.static_batches || batch_open_)) {
    if (sp && !plan.work.empty()) break;  // a sequence-parallel prompt is a step of its own
    Seq& s = *seqs_.at(waiting_.front());
    // A prompt whose first block is being computed in this very step waits one step, so that
    // it shares those blocks instead of computing them again (requests with one system prompt
    // arriving together).
    if (options_.prefix_caching && int64_t(s.known.size()) > options_.block_size &&
        being_computed(block_hash(0, s.known.data(), options_.block_size)))
      break;
    no_room = int64_t(running_.size()) >= options_.max_sequences ||
              !can_allocate(admission_blocks(s));  // first come, first served: no skipping
    if (no_room) break;
    waiting_.pop_front();
    admit(s);
    const int64_t n = sp ? s.prefill : prefill_chunk(s);
    add_work(s, n, plan);
    in_plan.push_back(s.id);
    budget -= n;
    if (sp) break;
  }
  // The batch is complete once it is full, nothing more waits, or the next does not fit; a step
  // that filled its token budget first leaves it open for the next step.
  if (options_.static_batches &&
      (waiting_.empty() || no_room || int64_t(running_.size()) >= options_.max_sequences))
    batch_open_ = false;
  if (options_.row_tile_max_rows > 0) {  // (see above)
    int64_t rows = 0, proposals = 0;
    for (const SequenceWork& w : plan.work) {
      rows += int64_t(w.tokens.size());
      proposals += w.drafts;
    }
    if (rows > options_.row_tile_max_rows && rows - proposals <= options_.row_tile_max_rows)
      drop_proposals(rows - options_.row_tile_max_rows, plan);
  }
  for (const auto& [block, hash] : unpublished_)
    if (blocks_[0].refs(block) > 0) blocks_[0].publish(block, hash);
  unpublished_.clear();
  if (plan.work.empty()) return plan;
  plan.id = next_step_++;
  plan.release.swap(release_);
  ++metrics_.steps;
  track_waste();
  return plan;
}

void Scheduler::drop_proposals(int64_t n, StepPlan& plan) {
  std::vector<SequenceWork*> dropped;
  for (; n > 0; --n) {
    SequenceWork* most = nullptr;
    for (SequenceWork& w : plan.work)
      if (w.drafts > 0 && (most == nullptr || w.drafts > most->drafts)) most = &w;
    TESSERA_ASSERT(most != nullptr, "no proposal left to drop");
    Seq& s = *seqs_.at(most->seq);
    most->tokens.pop_back();
    --most->drafts;
    most->logits = most->drafts > 0 ? most->drafts + 1 : 0;
    s.drafts = most->drafts;
    --metrics_.proposed_tokens;
    if (most->drafts == 0) --metrics_.speculative_steps;
    if (std::find(dropped.begin(), dropped.end(), most) == dropped.end()) dropped.push_back(most);
  }
  // The blocks this step added for rows it no longer writes go back (they are the tail of the
  // table and of what the plan sends; a whole table sent at start keeps them).
  for (SequenceWork* w : dropped) {
    if (w->start) continue;
    Seq& s = *seqs_.at(w->seq);
    const int64_t length = w->position + int64_t(w->tokens.size());
    for (int r = 0; r < options_.sp; ++r) {
      std::vector<int32_t>& table = s.tables[size_t(r)];
      std::vector<int32_t>& sent = w->kv[size_t(r)].blocks;
      const size_t keep = std::max(table.size() - sent.size(),
                                   size_t(ceil_div(rows_after(s, r, length), options_.block_size)));
      while (table.size() > keep) {
        blocks_[size_t(r)].release(table.back());
        table.pop_back();
        sent.pop_back();
      }
    }
    s.held = std::max(s.held_before, length);
  }
}

bool Scheduler::being_computed(uint64_t hash) const {
  for (const auto& [block, h] : unpublished_)
    if (h == hash) return true;
  return false;
}

std::vector<int64_t> Scheduler::admission_blocks(const Seq& s) const {
  // Blocks for the whole prompt, less the cached prefix blocks that other sequences hold (taking
  // an unreferenced cached block uses up an available one like a fresh block does), plus the copy
  // of the last block when the whole prompt is cached and that block is shared.
  const int64_t n = int64_t(s.known.size()), bs = options_.block_size;
  std::vector<int64_t> need(size_t(options_.sp));
  for (int r = 0; r < options_.sp; ++r)
    need[size_t(r)] =
        ceil_div(options_.sp == 1 ? n : sp_prompt_chunk(n, options_.sp, r).size(), bs);
  if (!options_.prefix_caching) return need;
  uint64_t h = 0;
  int64_t matched = 0;
  for (int64_t j = 0; (j + 1) * bs <= n; ++j) {
    h = block_hash(h, s.known.data() + j * bs, bs);
    const std::optional<int32_t> b = blocks_[0].peek(h);
    if (!b) break;
    ++matched;
    if (blocks_[0].refs(*b) > 0) --need[0];
    if ((j + 1) * bs >= n && blocks_[0].refs(*b) > 0) ++need[0];  // copy-on-write of the last
  }
  return need;
}

void Scheduler::append(int64_t id, const std::vector<int32_t>& tokens) {
  Seq& s = *seqs_.at(id);
  TESSERA_ASSERT(s.awaiting, "a token for sequence " << id << ", which awaits none");
  const int64_t accepted = int64_t(tokens.size()) - 1;  // proposals that were the tokens
  TESSERA_ASSERT(accepted >= 0 && accepted <= s.drafts, tokens.size() << " tokens for sequence "
                                                                      << id << ", which checked "
                                                                      << s.drafts << " proposals");
  s.awaiting = false;
  s.known.insert(s.known.end(), tokens.begin(), tokens.end());
  // The accepted proposals' K/V are the sequence's now; the others' rows are written over later.
  s.fed += accepted;
  publish_full_blocks(s, s.fed, true);
  metrics_.accepted_tokens += accepted;
  metrics_.decode_tokens += accepted;
  if (s.drafts > 0) adapt_speculation(s, s.drafts, accepted);
  s.drafts = 0;
}

std::unordered_map<int64_t, std::vector<int32_t>> Scheduler::propose_for_step(
    int64_t decoding, int64_t spare, bool fit_tiles) const {
  // The sequences the decode loop of schedule() will take (the first `decoding` ready ones),
  // with the proposals each would check (its k, within the spare budget and its room) and, from
  // a proposer that costs nothing, could (up to speculative_tokens).
  Proposer& proposer = *options_.proposer;
  const bool free = proposer.costs_nothing();
  std::vector<ProposalRequest> requests;
  RowTileFit fit;
  fit.plain = decoding;
  fit.tile = fit_tiles ? options_.row_tile : 1;
  fit.max_rows = std::min(options_.row_tile_max_rows, decoding + spare);  // (padding too)
  int64_t taken = 0;
  for (int64_t id : running_) {
    if (taken == decoding) break;
    const Seq& s = *seqs_.at(id);
    if (!ready(s) || s.fed < s.prefill) continue;
    ++taken;
    // Within the spare budget, the rows it may store, and the blocks free now (the decode loop
    // checks again as the step's blocks are taken: no proposals are made only to be dropped).
    int64_t room = std::min(spare, s.max_length - int64_t(s.known.size()));
    while (room > 0 && !can_allocate(blocks_needed(s, s.fed + 1 + room))) --room;
    const int64_t wanted = s.spec_pause > 0 ? 0 : std::min(s.spec_k, room);
    spare -= wanted;
    if (wanted <= 0) continue;
    requests.push_back({id, &s.known, free ? std::min(options_.speculative_tokens, room) : wanted});
    fit.wanted.push_back(wanted);
  }
  std::vector<std::vector<int32_t>> proposals;
  if (free) {  // the most each could check, then fitted
    proposals = proposer.propose_all(requests);
    for (size_t i = 0; i < requests.size(); ++i) {
      fit.available.push_back(int64_t(proposals[i].size()));
      fit.wanted[i] = std::min(fit.wanted[i], fit.available[i]);
    }
    const std::vector<int64_t> counts = fit_to_row_tile(fit);
    for (size_t i = 0; i < requests.size(); ++i) proposals[i].resize(size_t(counts[i]));
  } else {  // fitted (trimmed only), then asked for
    fit.available = fit.wanted;
    const std::vector<int64_t> counts = fit_to_row_tile(fit);
    for (size_t i = 0; i < requests.size(); ++i) requests[i].k = counts[i];
    std::erase_if(requests, [](const ProposalRequest& r) { return r.k == 0; });
    proposals = proposer.propose_all(requests);
  }
  TESSERA_ASSERT(proposals.size() == requests.size(), "proposals for every request");
  std::unordered_map<int64_t, std::vector<int32_t>> by_sequence;
  for (size_t i = 0; i < requests.size(); ++i) {
    if (int64_t(proposals[i].size()) > requests[i].k) proposals[i].resize(size_t(requests[i].k));
    if (!proposals[i].empty()) by_sequence[requests[i].seq] = std::move(proposals[i]);
  }
  return by_sequence;
}

void Scheduler::adapt_speculation(Seq& s, int64_t proposed, int64_t accepted) const {
  const int64_t most = options_.speculative_tokens;
  if (accepted == proposed) {
    s.spec_backoff = 0;
    if (proposed >= s.spec_k) s.spec_k = std::min(most, 2 * s.spec_k);
    return;
  }
  if (accepted == 0 && s.spec_k == 1) {  // even one proposal does not pay now: pause (also
                                         // where the step checked more, padded to a row tile)
    s.spec_backoff = std::clamp<int64_t>(2 * s.spec_backoff, 1, kMaxSpeculationPause);
    s.spec_pause = s.spec_backoff;
  }
  s.spec_k = std::max<int64_t>(1, accepted + 1);
}

void Scheduler::count_accepted(int64_t n) {
  metrics_.accepted_tokens += n;
}

void Scheduler::finish(int64_t id) {
  const auto it = seqs_.find(id);
  TESSERA_ASSERT(it != seqs_.end(), "finish of unknown sequence " << id);
  Seq& s = *it->second;
  release_blocks(s);
  if (s.running)
    running_.erase(std::find(running_.begin(), running_.end(), id));
  else
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), id));
  release_.push_back(id);
  seqs_.erase(it);
  if (options_.proposer) options_.proposer->release(id);
}

void Scheduler::track_waste() {
  int64_t used = 0;
  for (const BlockAllocator& a : blocks_) used += a.in_use();
  if (used <= metrics_.peak_blocks_used) return;
  metrics_.peak_blocks_used = used;
  // Slots holding a token (or about to, in this step) in every block in use; a block shared by
  // several sequences counts once, with the most rows any of them has in it.
  const int64_t bs = options_.block_size;
  std::vector<std::unordered_map<int32_t, int64_t>> filled(size_t(options_.sp));
  for (const auto& [id, s] : seqs_) {
    if (!s->running) continue;
    for (int r = 0; r < options_.sp; ++r) {
      const int64_t rows = rows_after(*s, r, s->fed);
      const auto& table = s->tables[size_t(r)];
      for (size_t j = 0; j < table.size(); ++j) {
        int64_t& f = filled[size_t(r)][table[j]];
        f = std::max(f, std::clamp<int64_t>(rows - int64_t(j) * bs, 0, bs));
      }
    }
  }
  int64_t stored = 0;
  for (const auto& m : filled)
    for (const auto& [b, f] : m) stored += f;
  metrics_.wasted_slots_at_peak = used * bs - stored;
}

SchedulerMetrics Scheduler::metrics() const {
  SchedulerMetrics m = metrics_;
  m.running = int64_t(running_.size());
  m.waiting = int64_t(waiting_.size());
  m.blocks_used = m.blocks_free = m.blocks_cached = 0;
  for (const BlockAllocator& a : blocks_) {
    m.blocks_used += a.in_use();
    m.blocks_free += a.available() - a.cached();
    m.blocks_cached += a.cached();
  }
  return m;
}

void Scheduler::check_invariants() const {
  std::vector<std::vector<int64_t>> refs(size_t(options_.sp));
  for (int r = 0; r < options_.sp; ++r) {
    blocks_[size_t(r)].check_invariants();
    refs[size_t(r)].assign(size_t(options_.num_blocks), 0);
  }
  int64_t running = 0, waiting = 0;
  for (const auto& [id, s] : seqs_) {
    TESSERA_ASSERT(s->fed <= int64_t(s->known.size()), "sequence " << id << " fed past its tokens");
    if (s->running) {
      ++running;
      TESSERA_ASSERT(std::count(running_.begin(), running_.end(), id) == 1,
                     "running sequence " << id << " is not listed once as running");
      for (int r = 0; r < options_.sp; ++r) {
        const auto& table = s->tables[size_t(r)];
        const int64_t rows = rows_after(*s, r, std::max(s->fed, s->held));
        TESSERA_ASSERT(int64_t(table.size()) == ceil_div(rows, options_.block_size),
                       "sequence " << id << " holds " << table.size() << " blocks on SP rank " << r
                                   << " for " << rows << " rows");
        for (int32_t b : table) ++refs[size_t(r)][size_t(b)];
      }
    } else {
      ++waiting;
      TESSERA_ASSERT(!s->awaiting && s->fed == 0, "waiting sequence " << id << " is in flight");
      TESSERA_ASSERT(std::count(waiting_.begin(), waiting_.end(), id) == 1,
                     "waiting sequence " << id << " is not listed once as waiting");
      for (int r = 0; r < options_.sp; ++r)
        TESSERA_ASSERT(s->tables[size_t(r)].empty(), "waiting sequence " << id << " holds blocks");
    }
  }
  TESSERA_ASSERT(running == int64_t(running_.size()) && waiting == int64_t(waiting_.size()),
                 "the running and waiting lists hold unknown sequences");
  for (int r = 0; r < options_.sp; ++r)
    for (int64_t b = 0; b < options_.num_blocks; ++b)
      TESSERA_ASSERT(blocks_[size_t(r)].refs(int32_t(b)) == refs[size_t(r)][size_t(b)],
                     "block " << b << " on SP rank " << r << " has "
                              << blocks_[size_t(r)].refs(int32_t(b)) << " references but "
                              << refs[size_t(r)][size_t(b)] << " block tables hold it");
}

}  // namespace tessera
