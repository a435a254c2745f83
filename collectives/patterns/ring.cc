#include "collectives/patterns/ring.h"

#include <algorithm>

#include "glog/logging.h"

namespace plexus::collectives::patterns {

Range BalancedChunk(size_t count, int n, int index) {
  CHECK_GE(n, 1);
  CHECK(index >= 0 && index < n);
  const size_t base = count / n;
  const size_t extra = count % n;
  const size_t i = static_cast<size_t>(index);
  const size_t begin = i * base + std::min(i, extra);
  return Range{begin, begin + base + (i < extra ? 1 : 0)};
}

std::vector<Range> BalancedChunks(size_t count, int n) {
  std::vector<Range> out;
  for (int i = 0; i < n; ++i) out.push_back(BalancedChunk(count, n, i));
  return out;
}

std::vector<Range> EqualChunks(size_t per_rank, int n) {
  std::vector<Range> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(Range{i * per_rank, (i + 1) * per_rank});
  }
  return out;
}

namespace {
int Mod(int a, int n) { return ((a % n) + n) % n; }
}  // namespace

RingStep ReduceScatterStep(int rank, int n, int step) {
  CHECK_GE(n, 2);
  CHECK(step >= 0 && step < n - 1);
  return RingStep{Mod(rank - step - 1, n), Mod(rank - step - 2, n)};
}

RingStep AllGatherStep(int rank, int n, int step) {
  CHECK_GE(n, 2);
  CHECK(step >= 0 && step < n - 1);
  return RingStep{Mod(rank - step, n), Mod(rank - step - 1, n)};
}

std::vector<Range> SubChunks(Range range, size_t max_elems, size_t max_subs) {
  CHECK_GE(max_elems, 1u);
  CHECK_GE(max_subs, 1u);
  const size_t size = range.size();
  size_t subs = std::max<size_t>(1, (size + max_elems - 1) / max_elems);
  subs = std::min(subs, max_subs);
  std::vector<Range> out;
  for (size_t i = 0; i < subs; ++i) {
    Range r = BalancedChunk(size, static_cast<int>(subs), static_cast<int>(i));
    out.push_back(Range{range.begin + r.begin, range.begin + r.end});
  }
  return out;
}

}  // namespace plexus::collectives::patterns
