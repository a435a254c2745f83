// Algorithm selection for all-reduce by an alpha-beta-gamma cost model (see
// CostModel in options.h). Every rank must select with the same constants and
// so reach the same choice; the communicator makes sure of that.
//
// Estimated times for n ranks and S bytes, P = pipeline piece size:
//   ring:     2(n-1) (alpha + S/n beta) + (n-1) S/n gamma
//   tree:     k = ceil(S/P) pieces of S/k, depth d = floor(log2 n):
//             (d + k - 1) (alpha + S/k (beta + 2 gamma))      reduce up
//           + (d + k - 1) (alpha + 2 S/k beta)                broadcast down
//   doubling: (log2 p + 2 [n != p]) (alpha + S (beta + gamma))
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>

#include "plexus/collectives/options.h"

namespace plexus::collectives {

// Estimated microseconds of an all-reduce of `bytes` over `n` ranks.
double AllReduceCostUs(Algorithm algorithm, const CostModel& model, int n,
                       size_t bytes, size_t pipeline_bytes);
// The cheapest of ring, tree and recursive doubling.
Algorithm ChooseAllReduce(const CostModel& model, int n, size_t bytes,
                          size_t pipeline_bytes);

}  // namespace plexus::collectives
