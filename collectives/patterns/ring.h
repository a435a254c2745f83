// Ring schedule math: how N elements split into per-rank chunks, which chunk a
// rank sends and receives at each step of a ring reduce-scatter / all-gather,
// and how a chunk splits into pipelined sub-chunks. Pure functions, no I/O.
//
// Conventions (used by algorithms/ring.cc):
//   - The ring is rank r -> (r + 1) mod n; r receives from (r - 1) mod n.
//   - Reduce-scatter: after n - 1 steps rank r holds chunk r fully reduced.
//     At step s (0 <= s < n - 1) rank r sends chunk (r - s - 1) mod n and
//     receives chunk (r - s - 2) mod n, which it reduces into its own copy.
//   - All-gather: rank r starts with chunk r. At step s it sends chunk
//     (r - s) mod n and receives chunk (r - s - 1) mod n.
//   In both phases the chunk sent at step s + 1 is the one received at step s,
//   and the first all-gather send is the last reduce-scatter receive, so the
//   two phases chain into one pipeline of 2(n - 1) steps.
//
// Thread safety: all functions are pure.
#pragma once

#include <cstddef>
#include <vector>

namespace plexus::collectives::patterns {

// A half-open element range [begin, end).
struct Range {
  size_t begin = 0;
  size_t end = 0;
  size_t size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

// Splits `count` elements into `n` contiguous chunks that differ in size by at
// most one (the first count % n chunks are one larger). REQUIRES: n >= 1.
Range BalancedChunk(size_t count, int n, int index);
std::vector<Range> BalancedChunks(size_t count, int n);

// `n` equal chunks of `per_rank` elements each (reduce-scatter / all-gather
// with a fixed per-rank count).
std::vector<Range> EqualChunks(size_t per_rank, int n);

// Which chunks rank `rank` sends and receives at step `step` of a phase.
struct RingStep {
  int send_chunk;
  int recv_chunk;
};
// REQUIRES: n >= 2, 0 <= step < n - 1, 0 <= rank < n.
RingStep ReduceScatterStep(int rank, int n, int step);
RingStep AllGatherStep(int rank, int n, int step);

inline int RingNext(int rank, int n) { return (rank + 1) % n; }
inline int RingPrev(int rank, int n) { return (rank + n - 1) % n; }

// Splits `range` into sub-chunks of at most `max_elems` elements (at least one
// sub-chunk, possibly empty when the range is empty); the number of
// sub-chunks is capped at `max_subs` by growing them. REQUIRES: max_elems >= 1,
// max_subs >= 1.
std::vector<Range> SubChunks(Range range, size_t max_elems,
                             size_t max_subs = 65535);

}  // namespace plexus::collectives::patterns
