#include "runtime/row_tile_fit.h"

#include <algorithm>
#include <numeric>

#include "kernels/error.h"

namespace tessera {

std::vector<int64_t> fit_to_row_tile(const RowTileFit& fit) {
  std::vector<int64_t> c = fit.wanted;
  TESSERA_ASSERT(fit.available.size() == c.size(), "a free count for every sequence");
  for (size_t i = 0; i < c.size(); ++i)
    TESSERA_ASSERT(0 <= c[i] && c[i] <= fit.available[i],
                   "sequence " << i << " wants " << c[i] << " of " << fit.available[i]);
  const int64_t tile = fit.tile, proposals = std::accumulate(c.begin(), c.end(), int64_t(0));
  const int64_t rows = fit.plain + proposals;
  if (tile <= 1 || proposals == 0 || rows > fit.max_rows || rows % tile == 0) return c;
  const int64_t whole = (rows + tile - 1) / tile * tile;
  int64_t free = 0;
  for (size_t i = 0; i < c.size(); ++i) free += fit.available[i] - c[i];
  if (whole <= fit.max_rows && free >= whole - rows) {
    for (int64_t n = rows; n < whole; ++n) {
      size_t best = c.size();
      for (size_t i = 0; i < c.size(); ++i)
        if (c[i] < fit.available[i] && (best == c.size() || c[i] < c[best])) best = i;
      ++c[best];
    }
    return c;
  }
  const int64_t last = rows % tile;
  if (rows < tile || 2 * last > tile) return c;
  for (int64_t n = std::min(last, proposals); n > 0; --n) --*std::max_element(c.begin(), c.end());
  return c;
}

}  // namespace tessera
