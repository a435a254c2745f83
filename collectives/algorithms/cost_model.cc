#include "collectives/algorithms/cost_model.h"

#include <algorithm>
#include <cmath>

#include "collectives/patterns/tree.h"

namespace plexus::collectives {

double AllReduceCostUs(Algorithm algorithm, const CostModel& m, int n,
                       size_t bytes, size_t pipeline_bytes) {
  if (n <= 1) return 0;
  const double s = static_cast<double>(bytes);
  switch (algorithm) {
    case Algorithm::kRing:
      return 2.0 * (n - 1) * (m.alpha_us + s / n * m.beta_us_per_byte) +
             (n - 1) * s / n * m.gamma_us_per_byte;
    case Algorithm::kTree: {
      const double d = patterns::BinaryTreeDepth(n);
      const double k =
          std::max(1.0, std::ceil(s / static_cast<double>(std::max<size_t>(
                                          1, pipeline_bytes))));
      const double piece = s / k;
      return (d + k - 1) * (m.alpha_us + piece * (m.beta_us_per_byte +
                                                  2 * m.gamma_us_per_byte)) +
             (d + k - 1) * (m.alpha_us + 2 * piece * m.beta_us_per_byte);
    }
    case Algorithm::kRecursiveDoubling: {
      int p = 1, rounds = 0;
      while (p * 2 <= n) {
        p *= 2;
        ++rounds;
      }
      if (p != n) rounds += 2;
      return rounds *
             (m.alpha_us + s * (m.beta_us_per_byte + m.gamma_us_per_byte));
    }
    case Algorithm::kAuto:
      break;
  }
  return 0;
}

Algorithm ChooseAllReduce(const CostModel& model, int n, size_t bytes,
                          size_t pipeline_bytes) {
  Algorithm best = Algorithm::kRing;
  double best_cost = AllReduceCostUs(best, model, n, bytes, pipeline_bytes);
  for (Algorithm a : {Algorithm::kRecursiveDoubling, Algorithm::kTree}) {
    const double c = AllReduceCostUs(a, model, n, bytes, pipeline_bytes);
    if (c < best_cost) {
      best = a;
      best_cost = c;
    }
  }
  return best;
}

}  // namespace plexus::collectives
