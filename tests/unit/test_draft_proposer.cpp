// The draft proposer against an independent computation: its proposals are the draft model's
// greedy continuation, each token the argmax of the logits of the text so far fed whole to a
// runner of its own (sequence_logits), however the proposer's cache was rolled back, shared
// among sequences or evicted in between.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "kernels/error.h"
#include "runtime/draft_proposer.h"
#include "runtime/single_sequence.h"

namespace tessera {
namespace {

using Tokens = std::vector<int32_t>;

ModelConfig tiny() {
  ModelConfig c;
  c.architecture = "llama";
  c.vocab_size = 48;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  return c;
}

// The draft's greedy continuation of `tokens`, k tokens, each from the whole text fed at once.
Tokens greedy(const LlamaModel& model, Tokens tokens, int64_t k) {
  Tokens out;
  for (int64_t i = 0; i < k; ++i) {
    const std::vector<float> logits = sequence_logits(model, tokens, 1).to_f32_vector();
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    tokens.push_back(next);
  }
  return out;
}

TEST(DraftProposer, ProposesTheDraftsGreedyContinuationAcrossRollbacksAndEvictions) {
  // The reference: a second copy of the same random draft.
  const DraftModel reference = DraftModel::random(tiny(), 5, {});
  // A cache of 6 blocks of 4 rows: two sequences of up to 12 rows each, so a third evicts one.
  DraftProposer p(DraftModel::random(tiny(), 5, {}), DraftOptions{6, 4});
  std::mt19937 g(3);
  std::map<int64_t, Tokens> text;
  for (int64_t seq = 0; seq < 3; ++seq)
    for (int i = 0; i < 3; ++i) text[seq].push_back(int32_t(g() % 48));
  int64_t checked = 0;
  for (int round = 0; round < 12; ++round)
    for (int64_t seq = 0; seq < 3; ++seq) {
      Tokens& t = text[seq];
      const int64_t k = 1 + int64_t(g() % 3);
      if (int64_t(t.size()) + k > 20) continue;
      const Tokens got = p.propose(seq, t, k);
      ASSERT_EQ(got, greedy(*reference.model, t, k)) << "sequence " << seq << ", round " << round;
      checked += int64_t(got.size());
      // What the target would have kept: some proposals, then a token of its own (often not the
      // next proposal), so the draft rolls back to a point inside what it fed.
      const int64_t kept = int64_t(g() % (got.size() + 1));
      t.insert(t.end(), got.begin(), got.begin() + kept);
      t.push_back(int32_t(g() % 48));
      // Now and then another text from some point on (as a request with the same id but another
      // history would be): the draft must drop the rows it holds past where the texts part.
      if (round % 4 == 3) {
        t.resize(1 + g() % t.size());
        t.push_back(int32_t(g() % 48));
        t.push_back(int32_t(g() % 48));
      }
    }
  EXPECT_GT(checked, 40);
  EXPECT_GT(p.steps(), 40);
  p.release(0);
  EXPECT_EQ(p.propose(1, text[1], 2), greedy(*reference.model, text[1], 2));
}

// Several sequences at once: one draft step per proposal for all of them (as many steps as the
// most any gets), each sequence's proposals still the draft's greedy continuation of its text; in
// a pool too small for all, a sequence of the batch is not evicted by another (it gets fewer).
TEST(DraftProposer, ProposesForSeveralSequencesInOneBatch) {
  const DraftModel reference = DraftModel::random(tiny(), 5, {});
  DraftProposer p(DraftModel::random(tiny(), 5, {}), DraftOptions{8, 4});  // 32 rows
  std::mt19937 g(4);
  std::vector<Tokens> text(3);
  for (Tokens& t : text)
    for (int i = 0; i < 3; ++i) t.push_back(int32_t(g() % 48));
  int64_t checked = 0, shortened = 0;
  for (int round = 0; round < 10; ++round) {
    std::vector<ProposalRequest> requests;
    for (int64_t seq = 0; seq < 3; ++seq) {
      const int64_t k = int64_t(g() % 4);
      if (int64_t(text[size_t(seq)].size()) + k <= 20)
        requests.push_back({seq, &text[size_t(seq)], k});
    }
    const int64_t before = p.steps();
    const std::vector<Tokens> got = p.propose_all(requests);
    ASSERT_EQ(got.size(), requests.size());
    size_t most = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const Tokens& t = *requests[i].tokens;
      ASSERT_LE(int64_t(got[i].size()), requests[i].k);
      ASSERT_EQ(got[i], greedy(*reference.model, t, int64_t(got[i].size())))
          << "sequence " << requests[i].seq << ", round " << round;
      checked += int64_t(got[i].size());
      shortened += int64_t(got[i].size()) < requests[i].k;
      most = std::max(most, got[i].size());
    }
    EXPECT_EQ(p.steps() - before, int64_t(most)) << "round " << round;
    for (size_t i = 0; i < got.size(); ++i) {  // some kept, then a token of the target's
      Tokens& t = text[size_t(requests[i].seq)];
      t.insert(t.end(), got[i].begin(), got[i].begin() + int64_t(g() % (got[i].size() + 1)));
      t.push_back(int32_t(g() % 48));
    }
  }
  EXPECT_GT(checked, 30);
  EXPECT_GT(shortened, 0);  // (the pool was short for the batch at times)
}

// Between steps the draft keeps its rows: the next proposal feeds only what it has not seen.
TEST(DraftProposer, FeedsOnlyTheTokensItHasNotSeen) {
  DraftProposer p(DraftModel::random(tiny(), 5, {}), DraftOptions{16, 4});
  Tokens t = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const Tokens first = p.propose(0, t, 3);  // the 10 tokens, then 2 proposals: 12 positions
  EXPECT_EQ(p.positions(), 12);
  EXPECT_EQ(p.steps(), 3);
  // One proposal kept and a correction: the draft holds 10 + 2 rows; rows 0..10 are still the
  // text's, so the correction and its 2 proposals are 3 positions.
  t.push_back(first[0]);
  t.push_back(first[1] == 0 ? 1 : 0);
  p.propose(0, t, 3);
  EXPECT_EQ(p.positions(), 12 + 3);
  // The same text again: its last token fed again (for its logits), then 2 proposals.
  const Tokens third = p.propose(0, t, 3);
  EXPECT_EQ(p.positions(), 15 + 3);
  // All 3 kept and the target's own next one: the 3rd proposal and that token are new.
  t.insert(t.end(), third.begin(), third.end());
  t.push_back(5);
  p.propose(0, t, 1);
  EXPECT_EQ(p.positions(), 18 + 2);
}

TEST(DraftProposer, ProposesFewerWhereItsCacheCannotHoldThem) {
  DraftProposer p(DraftModel::random(tiny(), 5, {}), DraftOptions{2, 4});  // 8 rows
  EXPECT_EQ(p.propose(0, {1, 2, 3, 4, 5, 6}, 5).size(), 3u);  // 6 tokens + 2 fed proposals
  EXPECT_TRUE(p.propose(1, Tokens(9, 7), 2).empty());         // 9 rows: none
  EXPECT_TRUE(p.propose(2, {}, 2).empty());
  EXPECT_TRUE(p.propose(2, {1}, 0).empty());
}

}  // namespace
}  // namespace tessera
