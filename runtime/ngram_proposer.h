// Prompt lookup (n-gram speculation, as vLLM's `ngram` method and llama.cpp's lookup decoding):
// the next tokens of a sequence are proposed by finding the last few tokens earlier in its own
// text (prompt and output so far) and copying what followed them there. No model is run, so it
// pays where the output repeats its input: rewriting, summarising, editing code given in the
// prompt. The target model checks every proposal, so a bad one costs a step's extra rows, never
// a wrong token.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/proposer.h"

namespace tessera {

struct NgramOptions {
  int64_t min_n = 2;  // the shortest suffix looked up (shorter ones match by chance too often)
  int64_t max_n = 4;  // the longest; longer matches are tried first
};

// Up to k tokens that followed the latest earlier occurrence of the longest suffix of `tokens`
// (from max_n down to min_n tokens) found elsewhere in `tokens`; empty when no suffix recurs.
// An occurrence is earlier when it ends before the last token; what followed it may run into the
// suffix itself (a repeating pattern proposes its continuation).
std::vector<int32_t> propose_ngram(const std::vector<int32_t>& tokens, int64_t k,
                                   const NgramOptions& options = {});

// propose_ngram as a Proposer (it keeps nothing per sequence).
class NgramProposer final : public Proposer {
 public:
  explicit NgramProposer(const NgramOptions& options = {});
  std::vector<int32_t> propose(int64_t seq, const std::vector<int32_t>& tokens, int64_t k) override;
  bool costs_nothing() const override { return true; }

 private:
  NgramOptions options_;
};

}  // namespace tessera
