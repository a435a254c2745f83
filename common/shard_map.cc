#include "common/shard_map.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace plexus {

absl::StatusOr<v1::ShardMap> MakeShardMap(
    uint64_t version, const std::vector<std::string>& addresses,
    uint32_t num_virtual_shards) {
  if (addresses.empty()) {
    return absl::InvalidArgumentError("a shard map needs at least one shard");
  }
  if (version == 0) {
    return absl::InvalidArgumentError("shard map version 0 means 'no map'");
  }
  uint32_t n = static_cast<uint32_t>(addresses.size());
  if (num_virtual_shards == 0) num_virtual_shards = 64 * n;
  if (num_virtual_shards < n) {
    return absl::InvalidArgumentError(
        absl::StrCat("num_virtual_shards (", num_virtual_shards,
                     ") must be >= the number of shards (", n, ")"));
  }
  v1::ShardMap map;
  map.set_version(version);
  map.set_num_shards(n);
  map.set_num_virtual_shards(num_virtual_shards);
  for (uint32_t v = 0; v < num_virtual_shards; ++v) {
    map.add_virtual_shard_to_shard(v % n);
  }
  for (uint32_t i = 0; i < n; ++i) {
    v1::ShardEndpoint* e = map.add_shards();
    e->set_shard_index(i);
    e->set_address(addresses[i]);
    e->set_state(v1::SHARD_STATE_SERVING);
  }
  return map;
}

absl::Status PlaceDenseVariable(const std::string& name, int64_t total_rows,
                                v1::ShardMap* map) {
  if (total_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("variable ", name, ": negative row count ", total_rows));
  }
  for (const auto& p : map->dense_variables()) {
    if (p.variable() != name) continue;
    if (p.total_rows() == total_rows) return absl::OkStatus();
    return absl::AlreadyExistsError(
        absl::StrCat("variable ", name, " is placed with ", p.total_rows(),
                     " rows, not ", total_rows));
  }
  v1::DenseVariablePlacement* p = map->add_dense_variables();
  p->set_variable(name);
  p->set_total_rows(total_rows);
  int64_t n = map->num_shards();
  // Slices start at a shard derived from the name, so that many small
  // variables do not all land on shard 0.
  int64_t first = static_cast<int64_t>(HashName(name) % n);
  int64_t slices = std::max<int64_t>(1, std::min(n, total_rows));
  int64_t begin = 0;
  for (int64_t i = 0; i < slices; ++i) {
    int64_t rows = total_rows / slices + (i < total_rows % slices ? 1 : 0);
    v1::DenseSlicePlacement* s = p->add_slices();
    s->mutable_rows()->set_row_begin(begin);
    s->mutable_rows()->set_row_end(begin + rows);
    s->set_shard_index(static_cast<uint32_t>((first + i) % n));
    begin += rows;
  }
  return absl::OkStatus();
}

absl::Status ValidateShardMap(const v1::ShardMap& map) {
  auto bad = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("shard map: ", parts...));
  };
  if (map.version() == 0) return bad("version 0");
  if (map.num_shards() == 0) return bad("no shards");
  if (map.shards_size() != static_cast<int>(map.num_shards())) {
    return bad(map.shards_size(), " endpoints for ", map.num_shards(),
               " shards");
  }
  for (int i = 0; i < map.shards_size(); ++i) {
    if (map.shards(i).shard_index() != static_cast<uint32_t>(i)) {
      return bad("endpoint ", i, " has shard_index ",
                 map.shards(i).shard_index());
    }
  }
  if (map.num_virtual_shards() == 0 ||
      map.virtual_shard_to_shard_size() !=
          static_cast<int>(map.num_virtual_shards())) {
    return bad(map.virtual_shard_to_shard_size(), " virtual shard entries for ",
               map.num_virtual_shards(), " virtual shards");
  }
  for (uint32_t s : map.virtual_shard_to_shard()) {
    if (s >= map.num_shards()) return bad("virtual shard points at shard ", s);
  }
  for (const auto& p : map.dense_variables()) {
    int64_t next = 0;
    for (const auto& s : p.slices()) {
      if (s.rows().row_begin() != next || s.rows().row_end() < next ||
          s.shard_index() >= map.num_shards()) {
        return bad("variable ", p.variable(), " has a bad slice list");
      }
      next = s.rows().row_end();
    }
    if (next != p.total_rows()) {
      return bad("variable ", p.variable(), " slices cover ", next, " of ",
                 p.total_rows(), " rows");
    }
  }
  return absl::OkStatus();
}

ShardRouter::ShardRouter(v1::ShardMap map) : map_(std::move(map)) {
  for (int i = 0; i < map_.dense_variables_size(); ++i) {
    dense_index_[map_.dense_variables(i).variable()] = i;
  }
}

uint32_t ShardRouter::HashedShardOfRow(uint64_t table_hash, uint64_t id) const {
  const uint64_t h = HashRow(table_hash, id);
  const uint64_t v =
      virtual_mask_ != 0 ? h & virtual_mask_ : h % map_.num_virtual_shards();
  return map_.virtual_shard_to_shard(static_cast<int>(v));
}

absl::StatusOr<int64_t> ShardRouter::DenseRows(
    const std::string& variable) const {
  auto it = dense_index_.find(variable);
  if (it == dense_index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("variable ", variable,
                     " is not placed in shard map version ", map_.version()));
  }
  return map_.dense_variables(it->second).total_rows();
}

absl::StatusOr<std::vector<DensePiece>> ShardRouter::SplitDense(
    const std::string& variable, int64_t row_begin, int64_t row_end) const {
  auto it = dense_index_.find(variable);
  if (it == dense_index_.end()) {
    return absl::NotFoundError(
        absl::StrCat("variable ", variable,
                     " is not placed in shard map version ", map_.version()));
  }
  const v1::DenseVariablePlacement& p = map_.dense_variables(it->second);
  if (row_begin < 0 || row_end < row_begin || row_end > p.total_rows()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows [", row_begin, ", ", row_end, ") of variable ",
                     variable, " are outside [0, ", p.total_rows(), ")"));
  }
  std::vector<DensePiece> pieces;
  for (const auto& s : p.slices()) {
    int64_t b = std::max(row_begin, s.rows().row_begin());
    int64_t e = std::min(row_end, s.rows().row_end());
    if (b < e) pieces.push_back({s.shard_index(), b, e});
  }
  return pieces;
}

}  // namespace plexus
