// The versioned shard map (plexus.v1.ShardMap) and the routing built on it.
// The coordinator makes maps, PS shards check that requests belong to them,
// and the worker's PS client routes with them; all three use this code so
// they can never disagree.
//
// Sparse rows: shard_of(table, id) = virtual_shard_to_shard[HashRow(
//   HashName(table), id) % num_virtual_shards] (common/hash.h).
// Dense variables: contiguous row slices along axis 0 (DenseVariablePlacement).
//
// Thread safety: ShardRouter is immutable after construction; share it freely.
#pragma once

#include <bit>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "plexus/v1/common.pb.h"

namespace plexus {

// Builds version `version` of a map over `addresses` (shard i at
// addresses[i]). num_virtual_shards 0 picks 64 per shard; virtual shard v
// goes to shard v % num_shards. INVALID_ARGUMENT for no shards.
absl::StatusOr<v1::ShardMap> MakeShardMap(
    uint64_t version, const std::vector<std::string>& addresses,
    uint32_t num_virtual_shards = 0);

// Places a dense variable of `total_rows` rows: one contiguous slice per
// shard, as even as possible (shards beyond total_rows get none). A variable
// already placed keeps its placement if total_rows matches, else
// ALREADY_EXISTS.
absl::Status PlaceDenseVariable(const std::string& name, int64_t total_rows,
                                v1::ShardMap* map);

// Checks a map's invariants (see common.proto). INVALID_ARGUMENT naming the
// broken one.
absl::Status ValidateShardMap(const v1::ShardMap& map);

// One piece of a dense row range that lives on one shard.
struct DensePiece {
  uint32_t shard = 0;
  int64_t row_begin = 0;  // whole-variable coordinates
  int64_t row_end = 0;
};

class ShardRouter {
 public:
  // REQUIRES: ValidateShardMap(map).ok().
  explicit ShardRouter(v1::ShardMap map);

  const v1::ShardMap& map() const { return map_; }
  uint64_t version() const { return map_.version(); }
  uint32_t num_shards() const { return map_.num_shards(); }

  // The shard holding row `id` of the table whose HashName is `table_hash`
  // (0 without hashing when there is one shard).
  uint32_t ShardOfRow(uint64_t table_hash, uint64_t id) const {
    return one_shard_ ? 0 : HashedShardOfRow(table_hash, id);
  }

  // Splits rows [row_begin, row_end) of a dense variable by shard, in row
  // order. NOT_FOUND for an unplaced variable; INVALID_ARGUMENT for a range
  // outside [0, total_rows).
  absl::StatusOr<std::vector<DensePiece>> SplitDense(
      const std::string& variable, int64_t row_begin, int64_t row_end) const;

  // Total rows of a placed variable; NOT_FOUND if unplaced.
  absl::StatusOr<int64_t> DenseRows(const std::string& variable) const;

 private:
  uint32_t HashedShardOfRow(uint64_t table_hash, uint64_t id) const;

  v1::ShardMap map_;
  absl::flat_hash_map<std::string, int> dense_index_;  // name -> map_ index
  const bool one_shard_ = map_.num_shards() == 1;
  // num_virtual_shards - 1 where it is a power of two (the default, 64 per
  // shard, for 1, 2, 4, ... shards): hash & mask is hash % count, without a
  // division. 0 otherwise.
  const uint64_t virtual_mask_ = std::has_single_bit(map_.num_virtual_shards())
                                     ? uint64_t{map_.num_virtual_shards()} - 1
                                     : 0;
};

}  // namespace plexus
