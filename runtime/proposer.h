// What proposes tokens for speculative decoding: the leader's scheduler asks it, for each decoding
// sequence whose step may check proposals, for up to k tokens likely to follow that sequence's
// tokens so far; the last stage then checks them all in one step (SequenceWork::drafts).
// Implementations: prompt lookup (runtime/ngram_proposer.h) and a draft model
// (runtime/draft_proposer.h). Proposals only cost time: a wrong one is never a token.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera {

struct ProposalRequest {
  int64_t seq = 0;
  const std::vector<int32_t>* tokens = nullptr;  // its prompt and output so far
  int64_t k = 0;                                 // the most tokens to propose
};

class Proposer {
 public:
  virtual ~Proposer() = default;
  // Up to k tokens to follow `tokens` (sequence `seq`'s prompt and output so far); fewer or none
  // where it has no good guess. Called only on the leader, between steps.
  virtual std::vector<int32_t> propose(int64_t seq, const std::vector<int32_t>& tokens,
                                       int64_t k) = 0;
  // propose() for each of several sequences (one step's), in order; a draft model runs them as
  // one batch. By default each in turn.
  virtual std::vector<std::vector<int32_t>> propose_all(
      const std::vector<ProposalRequest>& requests) {
    std::vector<std::vector<int32_t>> out;
    for (const ProposalRequest& r : requests) out.push_back(propose(r.seq, *r.tokens, r.k));
    return out;
  }
  // Whether proposing more tokens costs nothing worth counting (a lookup, no model): the
  // scheduler then asks for up to the most a step may check, and uses more than a sequence's k
  // where the step's rows can take them at no cost (runtime/row_tile_fit.h).
  virtual bool costs_nothing() const { return false; }
  // Sequence `seq` has finished: whatever was kept for it can go.
  virtual void release(int64_t seq) { (void)seq; }
};

}  // namespace tessera
