// How many proposals each decoding sequence of a step checks, fitted to how the device's linears
// take a step's rows (ops::RowTiling): rows go `tile` at a time, and a last group of at most
// tile / 2 rows goes one row at a time, each at about the cost of a pass over the weights. On the
// CPU's integer kernels (tile 4 for q4_0, q4_1, q8_0) a step of the default model took 7.5-8 ms
// for 1 row, 15.5 for 2, 16-17 for 4 and 23.5 for 5 (--trace timelines, 2026-12-06): a fifth row
// costs what 3 more inside the tile would not.
#pragma once

#include <cstdint>
#include <vector>

namespace tessera {

struct RowTileFit {
  int64_t plain = 0;               // rows of the step that are not proposals (a token per sequence)
  std::vector<int64_t> wanted;     // the proposals sequence i would check
  std::vector<int64_t> available;  // >= wanted[i]: the most it could check at no cost to propose
  int64_t tile = 1;                // ops::RowTiling
  int64_t max_rows = 0;
};

// Counts c[i] <= available[i] for the sequences of `fit`:
// - padded to a whole number of tiles (of at most max_rows rows) where the free proposals reach
//   it: the tile computes those rows anyway; each next one goes to the sequence with the fewest
//   so far (its next proposal is the likeliest to be kept);
// - else, past one tile, trimmed by a last group of at most tile / 2 rows (or all proposals, if
//   fewer), each from the sequence with the most (its last is the least likely to be kept);
// - else as wanted (no proposals, tile 1, more than max_rows, or already whole tiles).
std::vector<int64_t> fit_to_row_tile(const RowTileFit& fit);

}  // namespace tessera
