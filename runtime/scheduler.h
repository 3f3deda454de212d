// The scheduler: which sequences run in the next step, with which tokens, in which KV blocks.
// Pure bookkeeping on the leader (no model, no MPI), so it is tested on its own.
//
// - Continuous batching: sequences join and leave at every step; a step carries one token of
//   every decoding sequence (decode first) and prompt chunks of others, up to a token budget.
// - Chunked prefill: a prompt longer than the budget (or the pipeline's chunk) runs over several
//   steps, so decoding sequences keep going meanwhile.
// - Paged KV: blocks of block_size tokens per sequence (per SP rank with sequence parallelism),
//   allocated as tokens are scheduled; a request is admitted only when the blocks for its whole
//   prompt are free.
// - Prefix caching: a full block is known by the hash of its tokens and every token before it; a
//   new sequence takes the cached blocks of its longest cached prefix instead of computing them
//   (always computing its last prompt token, for the logits); a prompt whose first block is
//   being computed in the current step waits a step to share it. Writing into a block another
//   sequence also holds copies it first (copy-on-write).
// - Preemption by recompute: when a decoding sequence needs a block and none is free, the most
//   recently admitted sequence not in flight gives its blocks back and starts again later from
//   its prompt and the tokens it has produced.
// - Step plans carry a sequence's whole block tables in its first step after admission, and
//   later only the blocks it gains and the entries copy-on-write replaced; a preempted sequence
//   is released like a finished one.
// - Several steps in flight (pipeline parallelism): the running sequences are split into
//   `groups` groups; a sequence waiting for its sampled token is not scheduled again until the
//   token arrives.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "runtime/block_allocator.h"
#include "runtime/proposer.h"
#include "runtime/step_plan.h"

namespace tessera {

// The longest pause of a sequence's proposals after a rejected single one (steps).
inline constexpr int64_t kMaxSpeculationPause = 16;

// The least a prompt is cut to by prompt_chunks: with many short prompts in flight the pipeline is
// already full, and smaller chunks only add steps (measured: 8 chat prompts of ~30 tokens at
// PP=2 decoded 5% slower when cut into chunks of 16; a 361-token prompt is cut as before).
inline constexpr int64_t kMinPromptChunk = 64;

struct SchedulerOptions {
  int64_t num_blocks = 0;          // per SP rank (every rank's pool has this many)
  int64_t block_size = 16;         // tokens per block
  int64_t max_sequences = 64;      // running at once
  int64_t max_step_tokens = 2048;  // tokens in one step
  int64_t prefill_chunk = 0;       // prompt tokens of one sequence per step (0: no limit)
  int prompt_chunks = 1;           // with prefill_chunk 0: a prompt in about this many chunks of
                                   // at least kMinPromptChunk tokens (pipelines: stages work on
                                   // different chunks of one prompt at once)
  int groups = 1;                  // steps in flight at once
  int sp = 1;                      // SP ranks: a prompt is prefilled whole, alone in its step
  bool prefix_caching = true;      // (off when sp > 1)
  bool static_batches = false;     // baseline: admit only when nothing runs (a static batch)
  // Speculative decoding: a decoding sequence's step also carries up to speculative_tokens
  // proposals from `proposer` (runtime/proposer.h; not owned), which the last stage checks
  // (SequenceWork::drafts). Each sequence's k adapts to its recent acceptance
  // (Seq::spec_k: doubled after a step that accepted all it proposed, else the accepted count plus
  // one; a single proposal rejected pauses its proposals for 1, 2, 4 ... 16 steps), and no
  // sequence speculates in a step of more than speculative_max_batch decoding sequences (0: no
  // limit), where the extra rows cost about what they save. In steps of decoding only, the
  // proposals are fitted to the device's row tiles (row_tile, row_tile_max_rows:
  // ops::RowTiling; runtime/row_tile_fit.h): padded from a free proposer, or trimmed. Proposals
  // never take a step past row_tile_max_rows rows (the batch-invariant kernels' limit; 0: none)
  // where it would not be past them without: checking them does not change how its rows are
  // computed.
  int64_t speculative_tokens = 0;
  Proposer* proposer = nullptr;
  int64_t speculative_max_batch = 0;
  int64_t row_tile = 1;
  int64_t row_tile_max_rows = 0;
};

struct SchedulerMetrics {
  int64_t running = 0, waiting = 0;
  int64_t blocks_used = 0, blocks_free = 0, blocks_cached = 0;  // blocks of all SP ranks
  int64_t prompt_tokens = 0;   // prompt tokens of admitted sequences (recomputes excluded)
  int64_t cached_tokens = 0;   // of which came from the prefix cache
  int64_t prefill_tokens = 0;  // tokens computed without sampling after them, and prompt ends
  int64_t decode_tokens = 0;   // single tokens fed back after sampling
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t proposed_tokens = 0;    // speculative decoding: proposals checked
  int64_t accepted_tokens = 0;    // of which were the sampled tokens
  int64_t speculative_steps = 0;  // a sequence's steps that carried proposals
  double acceptance_rate() const {
    return proposed_tokens > 0 ? double(accepted_tokens) / double(proposed_tokens) : 0.0;
  }
  // Tokens a speculating sequence's step produced, on average (1 + accepted proposals).
  double mean_accepted_length() const {
    return speculative_steps > 0 ? 1.0 + double(accepted_tokens) / double(speculative_steps) : 0.0;
  }
  int64_t peak_blocks_used = 0;
  int64_t wasted_slots_at_peak = 0;  // token slots allocated but empty, at the peak
  double prefix_hit_rate() const {
    return prompt_tokens > 0 ? double(cached_tokens) / double(prompt_tokens) : 0.0;
  }
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerOptions& options);
  ~Scheduler();
  const SchedulerOptions& options() const { return options_; }

  // Blocks a sequence of `tokens` positions needs on the SP rank holding the most of them.
  int64_t blocks_for(int64_t prompt, int64_t tokens) const;
  // Whether a sequence with this prompt can hold `length` positions on every rank (also when a
  // preemption makes all of them one prompt).
  bool fits(int64_t prompt, int64_t length) const;
  // Queues a sequence. max_length: prompt + output tokens it may reach (for the check that it
  // can ever fit the cache; throws invalid input naming the numbers when it cannot).
  void add(int64_t id, const std::vector<int32_t>& prompt, const SamplingParams& sampling,
           int64_t max_length);
  // Another sequence with the same tokens and blocks so far (parallel sampling): its blocks are
  // shared, and copied when written. `id` must be waiting for its sampled token or decoding.
  void fork(int64_t id, int64_t new_id, const SamplingParams& sampling);
  // The next step; empty (no work) when nothing can run now.
  StepPlan schedule();
  // The tokens sampled for sequence id arrived (one, or with proposals the accepted ones and the
  // token after them): it continues with them.
  void append(int64_t id, const std::vector<int32_t>& tokens);
  void append(int64_t id, int32_t token) { append(id, std::vector<int32_t>{token}); }
  // The sequence is done (its token arrived and ended it, or it was cancelled while not in
  // flight): its blocks go back now; every rank forgets it with the next step.
  void finish(int64_t id);
  // n proposals of a sequence that its last step ended were the sampled tokens (for the
  // metrics: append() counts the others).
  void count_accepted(int64_t n);
  bool has(int64_t id) const { return seqs_.count(id) != 0; }
  bool idle() const { return seqs_.empty(); }
  bool awaiting(int64_t id) const;
  SchedulerMetrics metrics() const;
  // Throws naming the first inconsistency: every block's reference count equals the number of
  // block tables holding it, running/waiting lists match the sequences, allocator invariants.
  void check_invariants() const;

 private:
  struct Seq;
  bool ready(const Seq& s) const;
  int64_t rows_after(const Seq& s, int rank, int64_t length) const;
  // Blocks needed on each SP rank for s to hold positions up to `length`.
  std::vector<int64_t> blocks_needed(const Seq& s, int64_t length) const;
  bool can_allocate(const std::vector<int64_t>& need) const;
  // Makes s's tables cover `length` positions and copies blocks shared with others that the new
  // rows would write (adding the copies to `plan`, and the entries they replace to `replaced`,
  // per SP rank).
  void grow(Seq& s, int64_t length, StepPlan& plan, std::vector<std::vector<TableEntry>>& replaced);
  void admit(Seq& s);  // prefix-cache lookup; s becomes running
  void preempt(Seq& s);
  void release_blocks(Seq& s);
  // Publishes s's full blocks up to `length` rows to the prefix cache: at the end of the next
  // schedule() (their rows are written by the step being planned), or now when `written`.
  void publish_full_blocks(Seq& s, int64_t length, bool written = false);
  // n of s's tokens from s.fed, then `proposals` (decoding only) into the plan.
  void add_work(Seq& s, int64_t n, StepPlan& plan, std::vector<int32_t> proposals = {});
  void track_waste();
  // The proposals of the step's `decoding` decoding sequences (by sequence; none for those
  // without), from one call of the proposer, within `spare` rows in all, fitted to the row tiles
  // (runtime/row_tile_fit.h) where fit_tiles (a step without prompts).
  std::unordered_map<int64_t, std::vector<int32_t>> propose_for_step(int64_t decoding,
                                                                     int64_t spare,
                                                                     bool fit_tiles) const;
  // Takes n proposals off the plan's decoding sequences, one at a time from one with the most, as
  // though they had never been made (the blocks the step added for their rows go back).
  void drop_proposals(int64_t n, StepPlan& plan);
  // After a step of s checked `proposed` proposals and `accepted` were the tokens: s's next k.
  void adapt_speculation(Seq& s, int64_t proposed, int64_t accepted) const;
  std::vector<int64_t> admission_blocks(const Seq& s) const;
  bool being_computed(uint64_t hash) const;  // a full block of this step has this hash

  SchedulerOptions options_;
  std::vector<BlockAllocator> blocks_;  // per SP rank
  std::map<int64_t, std::unique_ptr<Seq>> seqs_;
  std::deque<int64_t> waiting_;
  std::vector<int64_t> running_;                           // in admission order
  std::vector<int64_t> release_;                           // finished since the last step
  std::vector<std::pair<int32_t, uint64_t>> unpublished_;  // full blocks of this step
  int64_t next_step_ = 1;
  bool batch_open_ = false;  // static batches: admitting the next batch
  SchedulerMetrics metrics_;
};

}  // namespace tessera
