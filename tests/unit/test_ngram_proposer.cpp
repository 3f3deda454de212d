// Prompt lookup: hand-made cases, and on random texts over small vocabularies (many repeats) the
// specification checked directly: the proposal follows an occurrence of the suffix, the longest
// suffix that recurs was used, and no later occurrence of it exists.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "kernels/error.h"
#include "runtime/ngram_proposer.h"

namespace tessera {
namespace {

using Tokens = std::vector<int32_t>;

TEST(NgramProposer, CopiesWhatFollowedTheLatestOccurrenceOfTheLongestSuffix) {
  // "a b c d ... a b" proposes "c d" (the 2-gram "a b" occurred at the start).
  EXPECT_EQ(propose_ngram({1, 2, 3, 4, 9, 1, 2}, 2), (Tokens{3, 4}));
  // The latest occurrence wins: "1 2" followed by 5 later than by 3.
  EXPECT_EQ(propose_ngram({1, 2, 3, 7, 1, 2, 5, 8, 1, 2}, 3), (Tokens{5, 8, 1}));
  // The longest suffix wins over a later shorter one: "7 1 2" occurred once, followed by 3.
  EXPECT_EQ(propose_ngram({7, 1, 2, 3, 9, 1, 2, 4, 7, 1, 2}, 1), (Tokens{3}));
  // What follows may run into the suffix: a repeating pattern continues.
  EXPECT_EQ(propose_ngram({5, 6, 5, 6, 5, 6}, 5), (Tokens{5, 6}));
  // Fewer than k tokens after the occurrence: as many as there are.
  EXPECT_EQ(propose_ngram({1, 2, 3, 1, 2}, 10), (Tokens{3, 1, 2}));
  // No recurring suffix of min_n tokens or more; k of 0; too short a text.
  EXPECT_TRUE(propose_ngram({1, 2, 3, 4, 5, 3}, 4).empty());
  EXPECT_EQ(propose_ngram({1, 2, 3, 4, 5, 3}, 4, {1, 4}), (Tokens{4, 5, 3}));
  EXPECT_TRUE(propose_ngram({1, 2, 1, 2}, 0).empty());
  EXPECT_TRUE(propose_ngram({}, 3).empty());
  EXPECT_TRUE(propose_ngram({4}, 3).empty());
  EXPECT_THROW(propose_ngram({1, 2}, 1, {0, 2}), Error);
  EXPECT_THROW(propose_ngram({1, 2}, 1, {3, 2}), Error);
}

// Whether tokens[end - n, end) equals the last n tokens.
bool occurs(const Tokens& t, int64_t n, int64_t end) {
  const int64_t len = int64_t(t.size());
  return end >= n && end < len && std::equal(t.end() - n, t.end(), t.begin() + (end - n));
}

TEST(NgramProposer, MeetsItsSpecificationOnRandomTexts) {
  std::mt19937 rng(12);
  int64_t proposed = 0, empty = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int vocab = 2 + trial % 6;
    Tokens t(size_t(1 + rng() % 40));
    for (int32_t& x : t) x = int32_t(rng() % unsigned(vocab));
    const NgramOptions o{1 + trial % 2, 2 + trial % 4};
    const int64_t k = 1 + trial % 7, len = int64_t(t.size());
    const Tokens got = propose_ngram(t, k, o);
    // The longest n (<= max_n, < len) whose suffix recurs, and its latest occurrence.
    int64_t want_n = 0, want_end = -1;
    for (int64_t n = std::min(o.max_n, len - 1); n >= o.min_n && want_n == 0; --n)
      for (int64_t end = len - 1; end >= n; --end)
        if (occurs(t, n, end)) {
          want_n = n, want_end = end;
          break;
        }
    if (want_n == 0) {
      ASSERT_TRUE(got.empty()) << "trial " << trial;
      ++empty;
      continue;
    }
    const Tokens want(t.begin() + want_end, t.begin() + std::min(len, want_end + k));
    ASSERT_EQ(got, want) << "trial " << trial << ": suffix of " << want_n << " at " << want_end;
    ++proposed;
  }
  EXPECT_GT(proposed, 1000);  // both outcomes were exercised
  EXPECT_GT(empty, 100);
}

}  // namespace
}  // namespace tessera
