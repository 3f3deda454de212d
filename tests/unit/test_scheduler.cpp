// The block allocator and the scheduler under thousands of random operations, against a shadow
// KV cache that records which (token, position) every block slot holds: every step's block
// tables must lead each sequence to exactly its own tokens (prefix sharing and copy-on-write
// included), reference counts must balance, nothing may leak, and every request must finish.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <deque>
#include <map>
#include <random>
#include <set>

#include "kernels/error.h"
#include "parallel/sp_split.h"
#include "runtime/block_allocator.h"
#include "runtime/scheduler.h"

namespace tessera {
namespace {

TEST(BlockAllocator, RandomOperationsKeepEveryBlockInOneState) {
  std::mt19937 g(1);
  BlockAllocator a(24);
  std::multiset<int32_t> held;  // one entry per reference the test holds
  for (int step = 0; step < 20000; ++step) {
    const int op = int(g() % 5);
    if (op == 0 && a.available() > 0) {
      held.insert(a.allocate());
    } else if (op == 1 && !held.empty()) {
      auto it = std::next(held.begin(), long(g() % held.size()));
      a.release(*it);
      held.erase(it);
    } else if (op == 2 && !held.empty()) {
      const int32_t b = *std::next(held.begin(), long(g() % held.size()));
      a.retain(b);
      held.insert(b);
    } else if (op == 3 && !held.empty()) {
      a.publish(*std::next(held.begin(), long(g() % held.size())), g() % 40);
    } else if (op == 4) {
      const uint64_t h = g() % 40;
      const auto want = a.peek(h);
      const auto got = a.lookup(h);
      ASSERT_EQ(want, got);
      if (got) {
        EXPECT_EQ(a.hash_of(*got), h);
        held.insert(*got);
      }
    }
    ASSERT_NO_THROW(a.check_invariants()) << "step " << step;
    for (int32_t b = 0; b < 24; ++b) ASSERT_EQ(a.refs(b), int64_t(held.count(b)));
  }
  for (int32_t b : held) a.release(b);
  a.check_invariants();
  EXPECT_EQ(a.available(), 24);
  EXPECT_EQ(a.in_use(), 0);
}

TEST(BlockAllocator, EvictsLeastRecentlyReleasedCachedBlock) {
  BlockAllocator a(3);
  const int32_t x = a.allocate(), y = a.allocate(), z = a.allocate();
  a.publish(x, 100);
  a.publish(y, 200);
  a.release(y);  // cached first
  a.release(x);  // cached second
  EXPECT_EQ(a.cached(), 2);
  EXPECT_EQ(a.allocate(), y);  // the least recently released goes first, and forgets its hash
  EXPECT_FALSE(a.peek(200));
  EXPECT_EQ(a.lookup(100), x);  // still cached: taken back with its contents
  EXPECT_THROW(a.release(a.refs(z) ? -1 : z), Error);
}

TEST(BlockAllocator, RefusesDoubleFree) {
  BlockAllocator a(2);
  const int32_t b = a.allocate();
  a.release(b);
  EXPECT_THROW(a.release(b), Error);
}

// ---- the scheduler against a shadow KV cache -------------------------------------------------

struct Slot {
  int32_t token = -1;
  int64_t position = -1;
  bool operator==(const Slot& o) const { return token == o.token && position == o.position; }
  int64_t writer = -1, step = -1;  // who wrote it, for failure messages
};

struct Shadow {  // what a sequence has been given and what the test expects of it
  std::vector<int32_t> known;
  int64_t prompt = 0, outputs_wanted = 0, outputs = 0;
  int64_t prefill = 0;  // tokens of its last step at position 0 (SP: where the split was)
  int64_t fed = 0;
  bool awaiting = false;
  std::vector<int32_t> proposals;  // those its step in flight checks
};

// With speculative decoding the sampled tokens follow from the tokens so far (so that a proposer
// can know them): the token after `known`.
int32_t next_token(const std::vector<int32_t>& known) {
  const uint64_t h = uint64_t(known.size()) * 0x9E3779B97F4A7C15ull ^
                     uint64_t(known.back()) * 0xBF58476D1CE4E5B9ull ^
                     uint64_t(known[known.size() / 2]) * 0x94D049BB133111EBull;
  return int32_t((h >> 33) % 50);
}
// Up to k proposals: the tokens that will follow, each wrong about one time in four (by a hash
// of the tokens, so the same tokens get the same proposals), sometimes fewer than k.
std::vector<int32_t> propose_mostly_right(const std::vector<int32_t>& known, int64_t k) {
  std::vector<int32_t> t = known, out;
  const int64_t n = int64_t((next_token(known) * 7 + int64_t(known.size())) % (k + 2));
  for (int64_t i = 0; i < std::min(n, k); ++i) {
    int32_t next = next_token(t);
    t.push_back(next);
    if ((next_token(t) + i) % 4 == 0) next = (next + 1) % 50;  // a wrong guess
    out.push_back(next);
  }
  return out;
}

// A Proposer of a plain function of the tokens.
class FunctionProposer final : public Proposer {
 public:
  using Fn = std::function<std::vector<int32_t>(const std::vector<int32_t>&, int64_t)>;
  explicit FunctionProposer(Fn fn, bool free = false) : fn_(std::move(fn)), free_(free) {}
  std::vector<int32_t> propose(int64_t, const std::vector<int32_t>& tokens, int64_t k) override {
    asked.push_back(k);
    return fn_(tokens, k);
  }
  bool costs_nothing() const override { return free_; }
  void release(int64_t seq) override { released.push_back(seq); }
  std::vector<int64_t> released;
  std::vector<int64_t> asked;  // k of each call

 private:
  Fn fn_;
  bool free_;
};

// k proposals of token 7 (the tests below decide per sequence how many are kept).
std::vector<int32_t> propose_sevens(const std::vector<int32_t>&, int64_t k) {
  return std::vector<int32_t>(size_t(k), 7);
}

class SchedulerSimulation {
 public:
  SchedulerSimulation(const SchedulerOptions& o, unsigned seed)
      : o_(o),
        s_(o),
        g_(seed),
        kv_(size_t(o.sp), std::vector<Slot>(size_t(o.num_blocks * o.block_size))) {}

  // The positions SP rank r holds for a sequence, in row order.
  std::vector<int64_t> positions_held(const Shadow& q, int r, int64_t length) const {
    std::vector<int64_t> out;
    if (o_.sp == 1) {
      for (int64_t p = 0; p < length; ++p) out.push_back(p);
      return out;
    }
    if (length == 0) return out;
    const Range c = sp_prompt_chunk(q.prefill, o_.sp, r);
    for (int64_t p = c.begin; p < c.end; ++p) out.push_back(p);
    for (int64_t p = q.prefill; p < length; ++p)
      if (p % o_.sp == r) out.push_back(p);
    return out;
  }

  void add(int64_t id, std::vector<int32_t> prompt, int64_t outputs) {
    Shadow q;
    q.known = prompt;
    q.prompt = int64_t(prompt.size());
    q.outputs_wanted = outputs;
    s_.add(id, prompt, {}, q.prompt + outputs);
    shadow_[id] = q;
  }

  // Executes a plan on the shadow cache as every rank would: copies, then each sequence's reads
  // (its rows must hold its own tokens) and writes.
  void execute(const StepPlan& plan) {
    for (int64_t id : plan.release) tables_.erase(id);
    copies_ += int64_t(plan.copies.size());
    for (const BlockCopy& c : plan.copies)
      for (int64_t i = 0; i < o_.block_size; ++i)
        kv_[size_t(c.sp_rank)][size_t(c.dst * o_.block_size + i)] =
            kv_[size_t(c.sp_rank)][size_t(c.src * o_.block_size + i)];
    std::set<int64_t> seen;
    for (const SequenceWork& w : plan.work) {
      ASSERT_TRUE(seen.insert(w.seq).second) << "sequence twice in a step";
      Shadow& q = shadow_.at(w.seq);
      ASSERT_FALSE(q.awaiting) << "sequence " << w.seq << " scheduled while in flight";
      if (w.position == 0) q.prefill = int64_t(w.tokens.size());
      // A sequence continues where it stopped, or starts again (after a preemption, from its
      // cached prefix): either way the rows before `position` must hold its tokens (below).
      if (w.position != q.fed) ++restarts_;
      // Its tokens so far, then the proposals the step checks (written like any other row).
      ASSERT_TRUE(w.drafts == 0 || (w.sample && o_.speculative_tokens > 0));
      ASSERT_LE(w.drafts, o_.speculative_tokens);
      ASSERT_EQ(w.logits, w.drafts > 0 ? w.drafts + 1 : 0);
      std::vector<int32_t> tokens = q.known;
      tokens.insert(tokens.end(), w.tokens.end() - w.drafts, w.tokens.end());
      ASSERT_LE(w.position + int64_t(w.tokens.size()), int64_t(tokens.size()));
      for (size_t i = 0; i < w.tokens.size(); ++i)
        ASSERT_EQ(w.tokens[i], tokens[size_t(w.position) + i]);
      // No proposal stored past the positions it may hold (prompt + outputs here).
      ASSERT_LE(w.position + int64_t(w.tokens.size()), q.prompt + q.outputs_wanted);
      ASSERT_EQ(int64_t(w.kv.size()), int64_t(o_.sp));
      const int64_t end = w.position + int64_t(w.tokens.size());
      // The tables as a rank keeps them: whole in a sequence's first step, then only changes.
      ASSERT_TRUE(w.start || tables_.count(w.seq)) << "sequence " << w.seq << " unknown to ranks";
      std::vector<std::vector<int32_t>>& tables = tables_[w.seq];
      tables.resize(size_t(o_.sp));
      for (int r = 0; r < o_.sp; ++r) {
        const KvShare& share = w.kv[size_t(r)];
        if (!w.start) {
          ASSERT_LE(int64_t(share.blocks.size()), int64_t(w.tokens.size()) / o_.block_size + 1)
              << "a running sequence's plan resends its table";
          appended_ += int64_t(share.blocks.size());
          replaced_ += int64_t(share.replaced.size());
        }
        apply_share(share, w.start, tables[size_t(r)]);
        const std::vector<int32_t>& table = tables[size_t(r)];
        const auto before = positions_held(q, r, w.position);
        const auto after = positions_held(q, r, end);
        ASSERT_EQ(share.rows, int64_t(before.size())) << "rows of sequence " << w.seq;
        ASSERT_GE(int64_t(table.size()) * o_.block_size, int64_t(after.size()));
        for (size_t row = 0; row < after.size(); ++row) {
          Slot& slot = kv_[size_t(r)][size_t(table[row / size_t(o_.block_size)] * o_.block_size +
                                             int64_t(row % size_t(o_.block_size)))];
          const Slot mine{tokens[size_t(after[row])], after[row], w.seq, plan.id};
          if (row < before.size())
            ASSERT_EQ(slot, mine) << "sequence " << w.seq << " reads position " << after[row]
                                  << " (step " << plan.id << ", block "
                                  << table[row / size_t(o_.block_size)]
                                  << ") from a slot holding token " << slot.token << " at "
                                  << slot.position << ", written by sequence " << slot.writer
                                  << " in step " << slot.step;
          else
            slot = mine;
        }
      }
      q.fed = end - w.drafts;
      if (w.sample) {
        ASSERT_EQ(end - w.drafts, int64_t(q.known.size()));
        ASSERT_EQ(w.output_index, int64_t(q.known.size()) - q.prompt);
        q.awaiting = true;
        q.proposals.assign(w.tokens.end() - w.drafts, w.tokens.end());
      }
    }
  }

  // The tokens of a step come back: each sampled sequence continues or finishes.
  void complete(const StepPlan& plan) {
    for (const SequenceWork& w : plan.work) {
      if (!w.sample || !shadow_.count(w.seq)) continue;
      Shadow& q = shadow_.at(w.seq);
      q.awaiting = false;
      if (o_.speculative_tokens == 0) {
        if (++q.outputs >= q.outputs_wanted) {
          s_.finish(w.seq);
          shadow_.erase(w.seq);
          ++finished_;
        } else {
          const int32_t token = int32_t((w.seq * 31 + q.outputs * 7) % 50);
          q.known.push_back(token);
          s_.append(w.seq, token);
        }
        continue;
      }
      // The sampled tokens: each proposal while it is the token, then the token after them.
      std::vector<int32_t> tokens, t = q.known;
      for (size_t i = 0; i <= q.proposals.size(); ++i) {
        tokens.push_back(next_token(t));
        t.push_back(tokens.back());
        if (i == q.proposals.size() || q.proposals[i] != tokens.back()) break;
      }
      proposed_ += int64_t(q.proposals.size());
      q.outputs += int64_t(tokens.size());
      if (q.outputs >= q.outputs_wanted) {  // (those past its end are not its)
        s_.finish(w.seq);
        shadow_.erase(w.seq);
        ++finished_;
        continue;
      }
      q.known.insert(q.known.end(), tokens.begin(), tokens.end());
      q.fed += int64_t(tokens.size()) - 1;      // the accepted proposals' rows are its own
      accepted_ += int64_t(tokens.size()) - 1;  // (the scheduler counts those it is given)
      s_.append(w.seq, tokens);
    }
  }

  void run(int requests) {
    std::vector<std::vector<int32_t>> system_prompts;
    for (int i = 0; i < 3; ++i) {
      std::vector<int32_t> p;
      for (int t = 0; t < 1 + int(g_() % 40); ++t) p.push_back(int32_t(g_() % 50));
      system_prompts.push_back(p);
    }
    const int64_t max_tokens = o_.num_blocks * o_.block_size;
    int added = 0;
    std::deque<StepPlan> in_flight;
    for (int iteration = 0; iteration < 200000; ++iteration) {
      if (added < requests && g_() % 3 == 0) {  // requests arrive while others run
        std::vector<int32_t> prompt;
        if (o_.prefix_caching && g_() % 2) prompt = system_prompts[g_() % 3];
        if (prompt.empty() || g_() % 4)  // some prompts are exactly a shared one
          for (int t = 0; t < 1 + int(g_() % 30); ++t) prompt.push_back(int32_t(g_() % 50));
        const int64_t outputs = 1 + int64_t(g_() % 20);
        if (s_.blocks_for(int64_t(prompt.size()), int64_t(prompt.size()) + outputs) * 2 >
                o_.num_blocks ||
            int64_t(prompt.size()) + outputs > max_tokens) {
          EXPECT_THROW(add(added + 1000, std::vector<int32_t>(size_t(max_tokens) + 1, 1), 1),
                       Error);
          continue;
        }
        add(added++, prompt, outputs);
      }
      const StepPlan plan = int(in_flight.size()) < o_.groups ? s_.schedule() : StepPlan{};
      ASSERT_NO_THROW(s_.check_invariants()) << "after a step";
      if (o_.row_tile_max_rows > 0) {  // proposals never take a step past the invariant rows
        int64_t rows = 0, proposals = 0;
        bool prompt = false;
        for (const SequenceWork& w : plan.work) {
          rows += int64_t(w.tokens.size());
          proposals += w.drafts;
          prompt |= !w.sample || int64_t(w.tokens.size()) > 1 + w.drafts;
        }
        if (rows - proposals <= o_.row_tile_max_rows) {
          ASSERT_LE(rows, o_.row_tile_max_rows) << proposals << " proposals";
        }
        // (proposals cut back for a prompt that joined: Scheduler::drop_proposals)
        limited_steps_ += prompt && proposals > 0 && rows == o_.row_tile_max_rows;
      }
      if (!plan.work.empty()) {
        execute(plan);
        if (::testing::Test::HasFatalFailure()) return;
        in_flight.push_back(plan);
      } else if (!in_flight.empty()) {
        complete(in_flight.front());
        in_flight.pop_front();
        ASSERT_NO_THROW(s_.check_invariants()) << "after tokens arrived";
      } else if (added == requests && s_.idle()) {
        break;
      } else {
        ASSERT_LT(added, requests) << "the scheduler has work but schedules nothing";
      }
    }
    EXPECT_EQ(finished_, requests);
    EXPECT_TRUE(s_.idle());
    const SchedulerMetrics m = s_.metrics();
    EXPECT_EQ(m.blocks_used, 0) << "blocks leaked";
    EXPECT_EQ(m.blocks_free + m.blocks_cached, o_.num_blocks * o_.sp);
  }

  SchedulerOptions o_;
  Scheduler s_;
  std::mt19937 g_;
  std::vector<std::vector<Slot>> kv_;  // per SP rank: slot -> what it holds
  std::map<int64_t, Shadow> shadow_;
  int finished_ = 0;
  int64_t copies_ = 0, restarts_ = 0;
  int64_t appended_ = 0, replaced_ = 0;  // blocks running sequences' plans appended, replaced
  int64_t proposed_ = 0, accepted_ = 0;  // speculative decoding's proposals, and those accepted
  int64_t limited_steps_ = 0;  // steps with a prompt and proposals at row_tile_max_rows rows
  std::map<int64_t, std::vector<std::vector<int32_t>>> tables_;  // as the ranks hold them
};

TEST(Scheduler, RandomWorkloadsAgainstAShadowCache) {
  std::mt19937 g(2024);
  int64_t preemptions = 0, cached = 0, copies = 0, appended = 0, proposed = 0, accepted = 0;
  int64_t limited = 0;
  for (int trial = 0; trial < 300; ++trial) {
    SchedulerOptions o;
    o.block_size = std::vector<int64_t>{1, 2, 4, 16}[g() % 4];
    o.num_blocks = (40 + int64_t(g() % 120)) / o.block_size + 8;
    o.max_sequences = 1 + int64_t(g() % 12);
    o.max_step_tokens = 1 + int64_t(g() % 64);
    o.prefill_chunk = g() % 2 ? 0 : 1 + int64_t(g() % 16);
    o.prompt_chunks = g() % 3 ? 1 : 2 + int(g() % 4);
    o.groups = 1 + int(g() % 3);
    o.sp = g() % 4 == 0 ? 2 + int(g() % 2) : 1;
    o.prefix_caching = g() % 3 != 0;
    o.static_batches = g() % 5 == 0;
    FunctionProposer proposer(propose_mostly_right, g() % 2 == 0);
    if (g() % 3 == 0) {  // speculative decoding
      o.speculative_tokens = 1 + int64_t(g() % 5);
      o.proposer = &proposer;
      o.row_tile = std::vector<int64_t>{1, 4, 8}[g() % 3];
      o.row_tile_max_rows = std::vector<int64_t>{64, 16, 8}[g() % 3];
    }
    SCOPED_TRACE("trial " + std::to_string(trial) + ": block " + std::to_string(o.block_size) +
                 ", blocks " + std::to_string(o.num_blocks) + ", sp " + std::to_string(o.sp) +
                 ", groups " + std::to_string(o.groups));
    SchedulerSimulation sim(o, unsigned(trial));
    sim.run(40);
    if (HasFatalFailure()) return;
    const SchedulerMetrics m = sim.s_.metrics();
    preemptions += m.preemptions;
    cached += m.cached_tokens;
    copies += sim.copies_;
    appended += sim.appended_;
    proposed += sim.proposed_;
    accepted += sim.accepted_;
    limited += sim.limited_steps_;
    EXPECT_EQ(m.proposed_tokens, sim.proposed_);  // the scheduler counts what the test saw
    EXPECT_EQ(m.accepted_tokens, sim.accepted_);
  }
  // The workloads did exercise what they are for.
  EXPECT_GT(proposed, 1000);
  EXPECT_GT(accepted, 500);
  EXPECT_LT(accepted, proposed);
  EXPECT_GT(limited, 0);
  EXPECT_GT(preemptions, 0);
  EXPECT_GT(cached, 0);
  EXPECT_GT(copies, 0);
  EXPECT_GT(appended, 0);  // tables grown by their new blocks only
}

// Two sequences forked from one share its blocks; the first to write into the shared partial
// block copies it, and neither sees the other's token.
TEST(Scheduler, ForkedSequencesCopyTheSharedBlockOnWrite) {
  SchedulerOptions o;
  o.block_size = 4;
  o.num_blocks = 8;
  SchedulerSimulation sim(o, 1);
  sim.add(0, {1, 2, 3, 4, 5, 6}, 5);  // 6 tokens: one full block and half of another
  StepPlan p = sim.s_.schedule();
  sim.execute(p);
  sim.complete(p);  // the first output token arrives: 7 known, 6 fed
  sim.s_.fork(0, 1, {});
  sim.shadow_[1] = sim.shadow_[0];
  EXPECT_EQ(sim.s_.metrics().blocks_used, 2);  // shared, not copied yet
  p = sim.s_.schedule();
  ASSERT_EQ(p.work.size(), 2u);
  // The first to write position 6 copies the shared block; the other then holds it alone.
  EXPECT_EQ(p.copies.size(), 1u);
  sim.execute(p);
  EXPECT_EQ(sim.replaced_, 1) << "the running sequence's plan replaces the copied entry";
  sim.s_.check_invariants();
  sim.complete(p);
  // Different tokens from here on (the shadow gives each sequence its own), same prefix blocks.
  while (!sim.s_.idle()) {
    p = sim.s_.schedule();
    ASSERT_FALSE(p.work.empty());
    sim.execute(p);
    if (HasFatalFailure()) return;
    sim.complete(p);
    sim.s_.check_invariants();
  }
  EXPECT_EQ(sim.s_.metrics().blocks_used, 0);
}

// N requests that share a long system prompt compute its blocks once.
TEST(Scheduler, SharedSystemPromptIsComputedOnce) {
  SchedulerOptions o;
  o.block_size = 16;
  o.num_blocks = 64;
  SchedulerSimulation sim(o, 1);
  std::vector<int32_t> system;
  for (int i = 0; i < 100; ++i) system.push_back(i % 50);
  for (int r = 0; r < 8; ++r) {  // all at once: the later ones wait a step to share
    std::vector<int32_t> prompt = system;
    prompt.push_back(r);
    sim.add(r, prompt, 3);
  }
  while (!sim.s_.idle()) {
    const StepPlan p = sim.s_.schedule();
    ASSERT_FALSE(p.work.empty());
    sim.execute(p);
    if (HasFatalFailure()) return;
    sim.complete(p);
  }
  const SchedulerMetrics m = sim.s_.metrics();
  EXPECT_EQ(m.prompt_tokens, 8 * 101);
  EXPECT_EQ(m.cached_tokens, 7 * 96);  // 6 full blocks of the system prompt, from the 2nd on
  EXPECT_EQ(m.prefill_tokens, 101 + 7 * 5);
}

// The baseline of tessera bench: a static batch admits only into an empty engine and runs to
// its end; continuous batching lets the next request in as soon as one finishes.
TEST(Scheduler, StaticBatchesAdmitOnlyIntoAnEmptyEngine) {
  for (const bool static_batches : {true, false}) {
    SCOPED_TRACE(static_batches ? "static" : "continuous");
    SchedulerOptions o;
    o.block_size = 4;
    o.num_blocks = 256;
    o.max_sequences = 4;
    o.static_batches = static_batches;
    SchedulerSimulation sim(o, 1);
    for (int r = 0; r < 10; ++r)  // outputs of 2..29 tokens: batches end at different times
      sim.add(r, std::vector<int32_t>(size_t(3 + r), int32_t(r)), 2 + (r * 7) % 28);
    std::map<int64_t, std::pair<int64_t, int64_t>> steps;  // sequence -> first and last step
    while (!sim.s_.idle()) {
      const StepPlan p = sim.s_.schedule();
      ASSERT_FALSE(p.work.empty());
      for (const SequenceWork& w : p.work) {
        auto [it, fresh] = steps.try_emplace(w.seq, p.id, p.id);
        it->second.second = p.id;
      }
      sim.execute(p);
      if (HasFatalFailure()) return;
      sim.complete(p);
    }
    // Sequence r is in batch r / 4 (first come, first served); a batch starts after every
    // sequence of the one before it has left.
    bool overlapped = false;
    for (int64_t r = 4; r < 10; ++r)
      for (int64_t e = (r / 4 - 1) * 4; e < (r / 4) * 4; ++e)
        overlapped |= steps.at(r).first <= steps.at(e).second;
    EXPECT_EQ(overlapped, !static_batches);
  }
}

// Plans carry a sequence's block table once: with 64 sequences of 4096 tokens decoding, a step's
// plan is a few kilobytes instead of every table again (the figures print; the README cites
// them). "Whole tables" is the same plan with each table sent whole, as plans were before.
// Proposals never take a decoding sequence's token or a prompt's share of the budget: with 4
// sequences decoding and a budget of 6, every step carries all 4, and 2 proposals at most (1
// while a prompt waits); and none is made where its blocks would mean a preemption.
TEST(Scheduler, ProposalsTakeOnlyWhatTheBudgetAndTheFreeBlocksLeave) {
  SchedulerOptions o;
  o.block_size = 4;
  o.num_blocks = 64;
  o.max_step_tokens = 6;
  o.speculative_tokens = 4;
  FunctionProposer always_wrong([](const std::vector<int32_t>&, int64_t k) {
    return std::vector<int32_t>(size_t(k), 7);  // always k (all wrong: the tokens are 1)
  });
  o.proposer = &always_wrong;
  Scheduler s(o);
  for (int64_t id = 0; id < 4; ++id) s.add(id, {1, 2, 3}, {}, 40);
  std::set<int64_t> decoding_ones;  // sampled at least once: decoding from then on
  int64_t full_steps = 0;
  for (int step = 0; step < 14; ++step) {
    const bool prompt_waits = step == 8;
    if (prompt_waits) s.add(9, std::vector<int32_t>(20, 5), {}, 30);
    const StepPlan p = s.schedule();
    ASSERT_FALSE(p.work.empty());
    int64_t drafts = 0, decoding = 0;
    for (const SequenceWork& w : p.work) {
      drafts += w.drafts;
      decoding += decoding_ones.count(w.seq);
    }
    EXPECT_LE(p.tokens(), o.max_step_tokens);
    if (decoding_ones.size() == 4) {
      ++full_steps;
      EXPECT_EQ(decoding, 4) << "step " << step << ": a decoding sequence was left out";
      EXPECT_LE(drafts, prompt_waits ? 1 : 2) << "step " << step;
    }
    for (const SequenceWork& w : p.work)
      if (w.sample) {
        s.append(w.seq, 1);  // (no proposal accepted)
        if (w.seq < 4) decoding_ones.insert(w.seq);
      }
    ASSERT_NO_THROW(s.check_invariants());
  }
  EXPECT_GT(full_steps, 8);
  EXPECT_GT(s.metrics().proposed_tokens, 0);
  EXPECT_EQ(s.metrics().accepted_tokens, 0);
  // Two sequences fill both blocks: one proposal still fits the first's block, a second would
  // need another block, hence a preemption: none is made.
  SchedulerOptions tight = o;
  tight.num_blocks = 2;
  tight.max_step_tokens = 64;
  Scheduler t(tight);
  t.add(0, {1, 2}, {}, 8);
  t.add(1, {1, 2}, {}, 8);
  int64_t drafts = 0;
  for (int step = 0; step < 3; ++step) {  // prefill; rows 2 and 3; row 3 alone
    const StepPlan p = t.schedule();
    for (const SequenceWork& w : p.work) {
      EXPECT_LE(w.position + int64_t(w.tokens.size()), 4) << "a row in a block not free";
      drafts += w.drafts;
      if (w.sample) t.append(w.seq, 1);
    }
  }
  EXPECT_EQ(drafts, 2);  // one per sequence, in step 1
  EXPECT_EQ(t.metrics().preemptions, 0);
}

TEST(Scheduler, DecodePlansCarryNewBlocksNotWholeTables) {
  SchedulerOptions o;
  o.block_size = 16;
  o.num_blocks = 64 * (4096 / 16 + 8);
  o.max_sequences = 64;
  o.max_step_tokens = 4096;
  Scheduler s(o);
  std::map<int64_t, std::vector<int32_t>> tables;  // as the ranks hold them
  for (int64_t id = 0; id < 64; ++id) s.add(id, std::vector<int32_t>(4095, int32_t(id)), {}, 4200);
  std::vector<int64_t> incremental, whole;
  while (incremental.size() < 20) {
    const StepPlan p = s.schedule();
    ASSERT_FALSE(p.work.empty());
    StepPlan resent = p;  // every table whole
    bool decode = true;
    for (SequenceWork& w : resent.work) {
      std::vector<int32_t>& t = tables[w.seq];
      apply_share(w.kv[0], w.start, t);
      decode &= w.tokens.size() == 1;
      w.kv[0].blocks = t;
      w.kv[0].replaced.clear();
    }
    if (decode && p.work.size() == 64) {
      incremental.push_back(int64_t(p.encode().size()));
      whole.push_back(int64_t(resent.encode().size()));
    }
    for (const SequenceWork& w : p.work)
      if (w.sample) s.append(w.seq, 1);
  }
  std::sort(incremental.begin(), incremental.end());
  std::sort(whole.begin(), whole.end());
  std::printf(
      "plan bytes per decode step, 64 sequences of 4096 tokens (median of %zu): %lld "
      "(whole tables: %lld)\n",
      incremental.size(), (long long)incremental[incremental.size() / 2],
      (long long)whole[whole.size() / 2]);
  EXPECT_LT(incremental.back() * 8, whole.front());  // (the rest: ids, positions, sampling)
}

// Each sequence's k follows its own acceptance: the accepted count plus one after a miss, doubled
// while it accepts all, and while even a single proposal fails, paused for 1, 2, 4 ... steps; no
// sequence speculates in a step of more than speculative_max_batch decoding sequences.
TEST(Scheduler, SpeculationAdaptsToEachSequencesAcceptanceAndStopsInLargeBatches) {
  SchedulerOptions o;
  o.block_size = 4;
  o.num_blocks = 512;
  o.max_step_tokens = 64;
  o.speculative_tokens = 4;
  o.speculative_max_batch = 3;
  FunctionProposer sevens(propose_sevens);
  o.proposer = &sevens;
  Scheduler s(o);
  // Sequence 0 accepts everything; 1 nothing; 2 one proposal in its first speculative step,
  // everything after.
  for (int64_t id = 0; id < 3; ++id) s.add(id, {1, 2, 3}, {}, 400);
  std::map<int64_t, std::vector<int64_t>> drafts;  // per sequence, per decode step
  auto step = [&] {
    const StepPlan p = s.schedule();
    int64_t decoding = 0;
    for (const SequenceWork& w : p.work) {
      if (!w.sample) continue;
      if (w.tokens.size() == 1 + size_t(w.drafts)) ++decoding;
      drafts[w.seq].push_back(w.drafts);
      const size_t seen = drafts[w.seq].size();
      int64_t accepted = w.drafts;
      if (w.seq == 1) accepted = 0;
      if (w.seq == 2 && seen == 2) accepted = std::min<int64_t>(1, w.drafts);
      std::vector<int32_t> tokens(size_t(accepted), 7);
      tokens.push_back(accepted < w.drafts ? 8 : 7);
      s.append(w.seq, tokens);
    }
    s.check_invariants();
    return decoding;
  };
  step();  // the prompts (their first token sampled: no proposals)
  for (int i = 0; i < 12; ++i) step();
  for (auto& [seq, d] : drafts) d.erase(d.begin());  // the prompts' steps
  EXPECT_EQ(drafts[0], std::vector<int64_t>(12, 4));
  EXPECT_EQ(drafts[1], (std::vector<int64_t>{4, 1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1}));
  EXPECT_EQ(drafts[2], (std::vector<int64_t>{4, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4}));
  // A fourth decoding sequence: steps of 4 carry no proposals; once one finishes, 3 do again.
  s.add(3, {1, 2, 3}, {}, 400);
  step();  // its prompt
  drafts.clear();
  EXPECT_EQ(step(), 4);
  EXPECT_EQ(step(), 4);
  for (const auto& [seq, d] : drafts) EXPECT_EQ(d, (std::vector<int64_t>{0, 0})) << seq;
  s.finish(0);
  EXPECT_EQ(sevens.released, std::vector<int64_t>{0});
  drafts.clear();
  EXPECT_EQ(step(), 3);
  EXPECT_EQ(drafts[2], std::vector<int64_t>{4});
  EXPECT_EQ(drafts[3], std::vector<int64_t>{4});
}

// Options for the row-tile tests: blocks of 4 (512 of them), up to k proposals per sequence from
// `proposer`, row tiles of `tile` in steps of up to max_rows rows.
SchedulerOptions tiled_speculation(int64_t k, int64_t tile, int64_t max_rows, Proposer* proposer) {
  SchedulerOptions o;
  o.block_size = 4;
  o.num_blocks = 512;
  o.speculative_tokens = k;
  o.row_tile = tile;
  o.row_tile_max_rows = max_rows;
  o.proposer = proposer;
  return o;
}

// Proposals fitted to row tiles of 4 (the CPU's integer kernels on q4_0): a lone sequence checks 3
// of its 4 (4 rows, not a fifth row that costs a pass over the weights); two check 3 each; from a
// proposer that costs nothing, a sequence whose k fell to 1 after a miss checks 3 (a step of 2
// rows costs what 4 do), one that costs steps is asked for its k only; a miss at k 1 pauses the
// sequence, padded or not; and a step that prefills a prompt is left alone.
TEST(Scheduler, ProposalsFillWholeRowTiles) {
  for (bool free : {false, true}) {
    SCOPED_TRACE(free ? "a free proposer" : "a proposer that costs steps");
    FunctionProposer sevens(propose_sevens, free);
    Scheduler s(tiled_speculation(4, 4, 64, &sevens));
    std::map<int64_t, int64_t> reject;  // sequence: reject all its proposals at its next step
    auto step = [&] {
      const StepPlan p = s.schedule();
      std::map<int64_t, int64_t> drafts;
      for (const SequenceWork& w : p.work) {
        if (!w.sample) continue;
        drafts[w.seq] = w.drafts;
        const int64_t accepted = reject[w.seq] ? 0 : w.drafts;
        reject[w.seq] = 0;
        std::vector<int32_t> tokens(size_t(accepted), 7);
        tokens.push_back(accepted < w.drafts ? 8 : 7);
        s.append(w.seq, tokens);
      }
      s.check_invariants();
      return drafts;
    };
    s.add(0, {1, 2, 3}, {}, 400);
    step();  // the prompt
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, 3}}));
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, 3}}));
    reject[0] = 1;
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, 3}}));  // all rejected: k 1
    sevens.asked.clear();
    // k 1: 2 rows; from a free proposer 4 (it was asked for up to 4).
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, free ? 3 : 1}}));
    EXPECT_EQ(sevens.asked, std::vector<int64_t>{free ? 4 : 1});
    reject[0] = 1;  // at k 2: k 1 again, no pause
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, free ? 3 : 2}}));
    reject[0] = 1;  // at k 1 (padded or not): paused for a step
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, free ? 3 : 1}}));
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, 0}}));
    s.add(1, {1, 2, 3}, {}, 400);  // a prompt in the step: as wanted
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, 1}, {1, 0}}));
    // k 2 and 4: 8 rows, whole tiles already.
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, 2}, {1, 4}}));
    // k 4 and 4: 10 rows, 2 more than two tiles, trimmed to 8.
    EXPECT_EQ(step(), (std::map<int64_t, int64_t>{{0, 3}, {1, 3}}));
  }
}

// Proposals never take a step's rows past those the batch-invariant kernels take
// (row_tile_max_rows): three sequences that would check 11 each (36 rows) check 13 in all, 16
// rows, and a step already at the limit checks none; with no limit (a GPU's tiling) all 11 each.
TEST(Scheduler, ProposalsStayWithinTheBatchInvariantRows) {
  for (int64_t max_rows : {16, 3, 0}) {
    SCOPED_TRACE("row_tile_max_rows " + std::to_string(max_rows));
    FunctionProposer sevens(propose_sevens, true);
    Scheduler s(tiled_speculation(11, max_rows > 0 ? 4 : 1, max_rows, &sevens));
    for (int64_t id = 0; id < 3; ++id) s.add(id, {1, 2, 3}, {}, 400);
    StepPlan p = s.schedule();  // the prompts
    for (const SequenceWork& w : p.work) s.append(w.seq, {7});
    for (int step = 0; step < 3; ++step) {
      p = s.schedule();
      int64_t rows = 0, proposals = 0;
      for (const SequenceWork& w : p.work) {
        rows += int64_t(w.tokens.size());
        proposals += w.drafts;
        s.append(w.seq, std::vector<int32_t>(size_t(w.drafts + 1), 7));
      }
      s.check_invariants();
      EXPECT_EQ(proposals, max_rows == 16 ? 13 : max_rows == 3 ? 0 : 33);
      EXPECT_EQ(rows, 3 + proposals);
    }
  }
}

// The same where a prompt joins the step after the proposals were made: a decoding sequence with
// 11 proposals and a prompt of 10 tokens (22 rows; 11 without the proposals) keep 5 of them, 16
// rows; beside a prompt of 30 tokens the step is past 16 rows anyway, and all 11 stay.
TEST(Scheduler, ProposalsMakeNoRoomForAPromptPastTheBatchInvariantRows) {
  for (int64_t prompt : {10, 30}) {
    SCOPED_TRACE("a prompt of " + std::to_string(prompt));
    FunctionProposer sevens(propose_sevens, true);
    Scheduler s(tiled_speculation(11, 4, 16, &sevens));
    s.add(0, {1, 2, 3}, {}, 400);
    StepPlan p = s.schedule();
    s.append(0, {7});
    s.add(1, std::vector<int32_t>(size_t(prompt), 5), {}, 400);
    p = s.schedule();
    ASSERT_EQ(p.work.size(), 2u);
    EXPECT_EQ(p.work[0].drafts, prompt == 10 ? 5 : 11);
    EXPECT_EQ(p.work[0].tokens.size(), size_t(1 + p.work[0].drafts));
    EXPECT_EQ(p.work[0].logits, p.work[0].drafts + 1);
    EXPECT_EQ(p.work[1].tokens.size(), size_t(prompt));
    EXPECT_EQ(s.metrics().proposed_tokens, p.work[0].drafts);
    // (blocks for the rows it checks: those of dropped proposals went back)
    EXPECT_EQ(p.work[0].kv[0].blocks.size(), size_t(prompt == 10 ? 2 : 3));
    s.append(0, std::vector<int32_t>(size_t(p.work[0].drafts + 1), 7));
    s.append(1, {7});
    s.check_invariants();
  }
}

}  // namespace
}  // namespace tessera
