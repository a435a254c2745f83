#include "common/shard_map.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/hash.h"

namespace plexus {
namespace {

TEST(ShardMap, DefaultMapSpreadsVirtualShardsOverEveryShard) {
  auto map = MakeShardMap(1, {"a:1", "b:2", "c:3"});
  ASSERT_TRUE(map.ok()) << map.status();
  EXPECT_TRUE(ValidateShardMap(*map).ok());
  EXPECT_EQ(map->num_virtual_shards(), 192u);
  ShardRouter r(*map);
  int counts[3] = {0};
  uint64_t t = HashName("emb");
  for (uint64_t id = 0; id < 30000; ++id) ++counts[r.ShardOfRow(t, id)];
  for (int c : counts) {
    EXPECT_GT(c, 9000);
    EXPECT_LT(c, 11000);
  }
}

// Placement is virtual_shard_to_shard[HashRow(table, id) % virtual shards]
// (common.proto) whatever shortcut the router takes: one shard, a power of
// two of virtual shards (a mask), or neither (a division). Rows must never
// move between releases: checkpoints and live shards depend on it.
TEST(ShardMap, RowsGoWhereTheMapDefinitionPutsThem) {
  const uint64_t t = HashName("emb");
  for (int shards : {1, 2, 3, 4}) {
    for (uint32_t virtual_shards : {0u, 6u, 64u, 100u}) {
      if (virtual_shards != 0 && virtual_shards < static_cast<uint32_t>(shards))
        continue;
      std::vector<std::string> addresses;
      for (int i = 0; i < shards; ++i)
        addresses.push_back("h:" + std::to_string(i + 1));
      auto map = MakeShardMap(1, addresses, virtual_shards);
      ASSERT_TRUE(map.ok()) << map.status();
      ShardRouter r(*map);
      for (uint64_t id : {uint64_t{0}, uint64_t{1}, uint64_t{12345},
                          ~uint64_t{0}, uint64_t{1} << 40}) {
        for (uint64_t k = 0; k < 200; ++k) {
          const uint64_t row = id + k * 7919;
          EXPECT_EQ(r.ShardOfRow(t, row),
                    map->virtual_shard_to_shard(static_cast<int>(
                        HashRow(t, row) % map->num_virtual_shards())))
              << shards << " shards, " << map->num_virtual_shards()
              << " virtual, row " << row;
        }
      }
    }
  }
}

TEST(ShardMap, BadArgumentsAreRefused) {
  EXPECT_EQ(MakeShardMap(1, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeShardMap(0, {"a:1"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeShardMap(1, {"a:1", "b:1"}, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ShardMap, DensePlacementCoversEveryRowOnce) {
  for (int shards : {1, 2, 3, 5}) {
    std::vector<std::string> addrs;
    for (int i = 0; i < shards; ++i) addrs.push_back("h:" + std::to_string(i));
    auto map = MakeShardMap(7, addrs);
    ASSERT_TRUE(map.ok());
    for (int64_t rows : {0, 1, 2, 7, 1000}) {
      std::string name = "v" + std::to_string(rows);
      ASSERT_TRUE(PlaceDenseVariable(name, rows, &*map).ok());
    }
    ASSERT_TRUE(ValidateShardMap(*map).ok()) << ValidateShardMap(*map);
    ShardRouter r(*map);
    auto pieces = r.SplitDense("v1000", 0, 1000);
    ASSERT_TRUE(pieces.ok());
    EXPECT_EQ(static_cast<int>(pieces->size()), shards);
    int64_t next = 0;
    for (const auto& p : *pieces) {
      EXPECT_EQ(p.row_begin, next);
      next = p.row_end;
      EXPECT_LE(p.row_end - p.row_begin, 1000 / shards + 1);
    }
    EXPECT_EQ(next, 1000);
    auto sub = r.SplitDense("v1000", 10, 11);
    ASSERT_TRUE(sub.ok());
    ASSERT_EQ(sub->size(), 1u);
    EXPECT_EQ(sub->front().row_begin, 10);
    EXPECT_TRUE(r.SplitDense("v0", 0, 0)->empty());
  }
}

TEST(ShardMap, DensePlacementIsIdempotentAndChecksRows) {
  auto map = MakeShardMap(1, {"a:1", "b:2"});
  ASSERT_TRUE(PlaceDenseVariable("w", 10, &*map).ok());
  ASSERT_TRUE(PlaceDenseVariable("w", 10, &*map).ok());
  EXPECT_EQ(map->dense_variables_size(), 1);
  EXPECT_EQ(PlaceDenseVariable("w", 11, &*map).code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(PlaceDenseVariable("x", -1, &*map).code(),
            absl::StatusCode::kInvalidArgument);
  ShardRouter r(*map);
  EXPECT_EQ(r.SplitDense("w", 5, 11).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.SplitDense("nope", 0, 1).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(*r.DenseRows("w"), 10);
}

TEST(ShardMap, ValidationCatchesBrokenMaps) {
  auto map = MakeShardMap(1, {"a:1", "b:2"});
  v1::ShardMap m = *map;
  m.set_virtual_shard_to_shard(3, 9);
  EXPECT_EQ(ValidateShardMap(m).code(), absl::StatusCode::kInvalidArgument);
  m = *map;
  m.mutable_shards(1)->set_shard_index(5);
  EXPECT_EQ(ValidateShardMap(m).code(), absl::StatusCode::kInvalidArgument);
  m = *map;
  ASSERT_TRUE(PlaceDenseVariable("w", 10, &m).ok());
  m.mutable_dense_variables(0)->set_total_rows(11);
  EXPECT_EQ(ValidateShardMap(m).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace plexus
