// How sequence parallelism spreads a sequence's positions over the SP group, in one place for
// the model (which rows a rank computes and keeps) and the scheduler (which rank needs KV
// blocks for them). A prompt prefilled in one step is split into contiguous chunks, one per SP
// rank; each later (decode) position p is kept by SP rank p % sp.
#pragma once

#include <algorithm>
#include <cstdint>

#include "parallel/sharding.h"

namespace tessera {

// SP rank `rank`'s chunk of a prompt of n tokens.
constexpr Range sp_prompt_chunk(int64_t n, int sp, int rank) {
  const int64_t per = (n + sp - 1) / sp;
  const int64_t begin = std::min(n, rank * per);
  return {begin, std::min(n, begin + per)};
}

// The SP rank whose chunk holds the prompt's last token.
constexpr int sp_last_token_owner(int64_t n, int sp) {
  const int64_t per = (n + sp - 1) / sp;
  return per == 0 ? 0 : int((n - 1) / per);
}

// Rows SP rank `rank` holds for positions [0, length) of a sequence whose first `prompt`
// positions were prefilled in one step (length >= prompt).
constexpr int64_t sp_rows_held(int64_t prompt, int64_t length, int sp, int rank) {
  // decode positions p in [0, x) with p % sp == rank
  auto upto = [&](int64_t x) { return x <= rank ? int64_t(0) : (x - rank + sp - 1) / sp; };
  return sp_prompt_chunk(prompt, sp, rank).size() + upto(length) - upto(prompt);
}

}  // namespace tessera
