// IdIndex: the first-seen position of each id of one request, for the
// de-duplication of sparse ids (the PS client groups a call's ids by shard;
// a shard sums a push's repeated ids). An open-addressing table sized once
// for the request (no rehash, no per-id allocation; Fibonacci hashing spreads
// strided ids), a few times cheaper than a general hash map for the
// thousands of ids of one call, where the map showed in the profiles.
//
// Thread safety: one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace plexus {

class IdIndex {
 public:
  // Room for up to `max_ids` distinct ids.
  explicit IdIndex(size_t max_ids) {
    while ((size_t{1} << bits_) < 2 * max_ids) ++bits_;
    keys_.resize(size_t{1} << bits_);
    values_.assign(size_t{1} << bits_, kFree);
  }

  // The value stored with `id`, and false; or, for an id not seen before,
  // stores `value` (not kFree) with it and returns it and true.
  // REQUIRES: at most max_ids distinct ids in all.
  std::pair<uint32_t, bool> Insert(uint64_t id, uint32_t value) {
    const size_t mask = keys_.size() - 1;
    size_t h = (id * 0x9E3779B97F4A7C15ull) >> (64 - bits_);
    while (values_[h] != kFree) {
      if (keys_[h] == id) return {values_[h], false};
      h = (h + 1) & mask;
    }
    keys_[h] = id;
    values_[h] = value;
    return {value, true};
  }

  static constexpr uint32_t kFree = ~uint32_t{0};

 private:
  int bits_ = 4;
  std::vector<uint64_t> keys_;
  std::vector<uint32_t> values_;
};

}  // namespace plexus
