#include "runtime/ngram_proposer.h"

#include <algorithm>

#include "kernels/error.h"

namespace tessera {

std::vector<int32_t> propose_ngram(const std::vector<int32_t>& tokens, int64_t k,
                                   const NgramOptions& options) {
  TESSERA_CHECK(
      options.min_n >= 1 && options.max_n >= options.min_n,
      "n-gram lookup needs 1 <= min_n <= max_n, got " << options.min_n << " and " << options.max_n);
  const int64_t length = int64_t(tokens.size());
  if (k <= 0) return {};
  for (int64_t n = std::min(options.max_n, length - 1); n >= options.min_n; --n) {
    const int32_t* suffix = tokens.data() + (length - n);
    // Occurrences ending at `end` (exclusive) < length, latest first.
    for (int64_t end = length - 1; end >= n; --end) {
      if (!std::equal(suffix, suffix + n, tokens.data() + (end - n))) continue;
      const int64_t take = std::min(k, length - end);
      return std::vector<int32_t>(tokens.begin() + end, tokens.begin() + end + take);
    }
  }
  return {};
}

NgramProposer::NgramProposer(const NgramOptions& options) : options_(options) {
  propose_ngram({}, 0, options_);  // (checks the options)
}

std::vector<int32_t> NgramProposer::propose(int64_t, const std::vector<int32_t>& tokens,
                                            int64_t k) {
  return propose_ngram(tokens, k, options_);
}

}  // namespace tessera
