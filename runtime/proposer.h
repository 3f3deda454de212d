// What proposes tokens for speculative decoding: the leader's scheduler asks it, for each decoding
// sequence whose step may check proposals, for up to k tokens likely to follow that sequence's
// tokens so far; the last stage then checks them all in one step (SequenceWork::drafts).
// Implementations: prompt lookup (runtime/ngram_proposer.h) and a draft model
// (runtime/draft_proposer.h). Proposals only cost time: a wrong one is never a token.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera {

class Proposer {
 public:
  virtual ~Proposer() = default;
  // Up to k tokens to follow `tokens` (sequence `seq`'s prompt and output so far); fewer or none
  // where it has no good guess. Called only on the leader, between steps.
  virtual std::vector<int32_t> propose(int64_t seq, const std::vector<int32_t>& tokens,
                                       int64_t k) = 0;
  // Sequence `seq` has finished: whatever was kept for it can go.
  virtual void release(int64_t seq) { (void)seq; }
};

}  // namespace tessera
