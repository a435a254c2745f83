// Sparse tables through the engine: growth on first touch, deterministic
// initialisation, admission, eviction, memory accounting, 16-bit storage and
// concurrent updates.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "absl/synchronization/barrier.h"
#include "common/hash.h"
#include "ps/storage/engine.h"
#include "ps/storage/initializer.h"
#include "tests/ps/storage/test_util.h"

namespace plexus::ps {
namespace {

using testing::Decode;
using testing::NewEngine;
using testing::PullRows;
using testing::PushRows;
using testing::SimpleTable;

TEST(SparseTable, GrowsOnFirstTouchWithDeterministicInit) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("emb", 4);
  c.initializer = {.kind = InitializerConfig::Kind::kUniform,
                   .min = -1,
                   .max = 1,
                   .seed = 11};
  ASSERT_TRUE(*e->CreateTable({c}));
  EXPECT_FALSE(*e->CreateTable({c})) << "identical create is a no-op";

  // A pull without create_missing returns the initial value, creates nothing.
  std::vector<uint64_t> ids = {5, 9};
  SparseRead read{"emb", ids, false};
  auto pulled = e->Pull({}, {}, {&read, 1});
  ASSERT_TRUE(pulled.ok());
  EXPECT_EQ(pulled->sparse[0].missing_positions, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(e->DescribeTable("emb")->rows_in_memory, 0);
  std::vector<float> init5(4);
  InitializeRow(c.initializer, HashName("emb"), 5, init5.data(), 4);
  auto values = Decode(DType::kFloat32, pulled->sparse[0].data);
  EXPECT_EQ(std::vector<float>(values.begin(), values.begin() + 4), init5);

  // The first push creates the row from the same initial value.
  ASSERT_TRUE(PushRows(*e, "emb", {5}, {1, 2, 3, 4}).ok());
  auto row = e->ReadRow("emb", 5);
  ASSERT_TRUE(row.ok());
  for (int j = 0; j < 4; ++j) {
    EXPECT_EQ(row->value[j], init5[j] - 0.5f * static_cast<float>(j + 1));
  }
  EXPECT_EQ(row->version, 1u);
  EXPECT_EQ(row->update_count, 1);
  EXPECT_EQ(e->DescribeTable("emb")->rows_in_memory, 1);

  // Another shard (engine) initialises the same id to the same bits.
  auto other = NewEngine({.table_stripes = 3});
  ASSERT_TRUE(other->CreateTable({c}).ok());
  EXPECT_EQ(PullRows(*other, "emb", {9}),
            std::vector<float>(values.begin() + 4, values.end()));
}

TEST(SparseTable, DuplicateIdsInOnePushAreSummed) {
  auto e = NewEngine();
  ASSERT_TRUE(e->CreateTable({SimpleTable("t", 2)}).ok());
  auto r = PushRows(*e, "t", {3, 3, 4}, {1, 1, 2, 2, 4, 4});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->rows_applied, 2);
  EXPECT_EQ(PullRows(*e, "t", {3, 4}),
            (std::vector<float>{-1.5f, -1.5f, -2, -2}));
  EXPECT_EQ(e->ReadRow("t", 3)->update_count, 1) << "one optimizer step";
}

TEST(SparseTable, AdmissionNeedsMinHitCount) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("t", 1);
  c.admission_min_hit_count = 3;
  ASSERT_TRUE(e->CreateTable({c}).ok());
  for (int i = 0; i < 2; ++i) {
    auto r = PushRows(*e, "t", {7}, {1});
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->rows_not_admitted, 1);
    EXPECT_EQ(r->rows_applied, 0);
  }
  EXPECT_EQ(e->ReadRow("t", 7).status().code(), absl::StatusCode::kNotFound);
  auto r = PushRows(*e, "t", {7}, {1});
  EXPECT_EQ(r->rows_applied, 1);
  EXPECT_EQ(PullRows(*e, "t", {7}), std::vector<float>{-0.5f})
      << "only the admitting push is applied";
  EXPECT_EQ(e->DescribeTable("t")->rows_not_admitted, 2);
}

TEST(SparseTable, TtlEvictsRowsUntouchedForTSteps) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("t", 1);
  c.ttl_steps = 5;
  ASSERT_TRUE(e->CreateTable({c}).ok());
  ASSERT_TRUE(
      PushRows(*e, "t", {1}, {1}, {.step_id = 1, .exactly_once = false}).ok());
  ASSERT_TRUE(
      PushRows(*e, "t", {2}, {1}, {.step_id = 4, .exactly_once = false}).ok());
  ASSERT_TRUE(
      PushRows(*e, "t", {3}, {1}, {.step_id = 8, .exactly_once = false}).ok());
  // Newest step 8: rows last touched before step 3 are gone.
  EXPECT_EQ(e->ReadRow("t", 1).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(e->ReadRow("t", 2).ok());
  EXPECT_EQ(e->DescribeTable("t")->rows_evicted, 1);
  ASSERT_TRUE(
      PushRows(*e, "t", {3}, {1}, {.step_id = 10, .exactly_once = false}).ok());
  EXPECT_EQ(e->ReadRow("t", 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(e->DescribeTable("t")->rows_in_memory, 1);
}

TEST(SparseTable, CapacityEvictsLeastRecentlyTouched) {
  auto e = NewEngine({.table_stripes = 4});
  TableConfig c = SimpleTable("t", 1);
  c.capacity_rows = 3;
  c.eviction_policy = EvictionPolicy::kLru;
  ASSERT_TRUE(e->CreateTable({c}).ok());
  for (uint64_t id = 1; id <= 3; ++id) {
    ASSERT_TRUE(
        PushRows(*e, "t", {id}, {1}, {.step_id = id, .exactly_once = false})
            .ok());
  }
  // Touch 1 again (a pull touches too), then add 4: 2 is the LRU victim.
  std::vector<uint64_t> one = {1};
  SparseRead r{"t", one, false};
  ASSERT_TRUE(e->Pull({.step_id = 4}, {}, {&r, 1}).ok());
  ASSERT_TRUE(
      PushRows(*e, "t", {4}, {1}, {.step_id = 5, .exactly_once = false}).ok());
  EXPECT_TRUE(e->ReadRow("t", 1).ok());
  EXPECT_EQ(e->ReadRow("t", 2).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(e->ReadRow("t", 3).ok());
  EXPECT_TRUE(e->ReadRow("t", 4).ok());
  EXPECT_EQ(e->DescribeTable("t")->rows_in_memory, 3);
}

TEST(SparseTable, CapacityLfuEvictsLeastHit) {
  auto e = NewEngine({.table_stripes = 2});
  TableConfig c = SimpleTable("t", 1);
  c.capacity_rows = 2;
  c.eviction_policy = EvictionPolicy::kLfu;
  ASSERT_TRUE(e->CreateTable({c}).ok());
  ASSERT_TRUE(PushRows(*e, "t", {1}, {1}).ok());
  ASSERT_TRUE(PushRows(*e, "t", {1}, {1}).ok());
  ASSERT_TRUE(PushRows(*e, "t", {2}, {1}).ok());
  ASSERT_TRUE(PushRows(*e, "t", {2}, {1}).ok());
  ASSERT_TRUE(PushRows(*e, "t", {3}, {1}).ok());  // hit once: the victim
  EXPECT_EQ(e->ReadRow("t", 3).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(e->ReadRow("t", 1).ok());
  EXPECT_TRUE(e->ReadRow("t", 2).ok());
}

TEST(SparseTable, ReportsMemoryPerTable) {
  auto e = NewEngine();
  TableConfig c32 = SimpleTable("f32", 64);
  c32.optimizer = {.kind = OptimizerConfig::Kind::kAdam,
                   .learning_rate = 0.01,
                   .epsilon = 1e-8,
                   .beta1 = 0.9,
                   .beta2 = 0.999};
  TableConfig c16 = c32;
  c16.name = "f16";
  c16.storage_dtype = DType::kFloat16;
  ASSERT_TRUE(e->CreateTable({c32}).ok());
  ASSERT_TRUE(e->CreateTable({c16}).ok());
  const int64_t empty = e->DescribeTable("f32")->memory_bytes;
  std::vector<uint64_t> ids(100);
  for (int i = 0; i < 100; ++i) ids[i] = i;
  std::vector<float> g(100 * 64, 0.1f);
  ASSERT_TRUE(PushRows(*e, "f32", ids, g).ok());
  ASSERT_TRUE(PushRows(*e, "f16", ids, g).ok());
  auto i32 = *e->DescribeTable("f32");
  auto i16 = *e->DescribeTable("f16");
  EXPECT_EQ(i32.rows_in_memory, 100);
  // value + two slots of 64 fp32 each: at least 768 bytes a row.
  EXPECT_GE(i32.memory_bytes - empty, 100 * 3 * 64 * 4);
  EXPECT_EQ(i32.memory_bytes - i16.memory_bytes, 100 * 64 * 2);
  auto tables = e->ListTables();
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_EQ(tables[0].config.name, "f16");
}

TEST(SparseTable, SixteenBitStorageRoundsValues) {
  for (DType storage : {DType::kFloat16, DType::kBFloat16}) {
    auto e = NewEngine();
    TableConfig c = SimpleTable("t", 3, 1.0);
    c.storage_dtype = storage;
    c.initializer = {.kind = InitializerConfig::Kind::kConstant, .value = 1};
    ASSERT_TRUE(e->CreateTable({c}).ok());
    ASSERT_TRUE(PushRows(*e, "t", {1}, {0.1f, 0.2f, -0.3f}).ok());
    std::vector<uint64_t> ids = {1};
    SparseRead r{"t", ids, false};
    auto res = e->Pull({}, {}, {&r, 1});
    ASSERT_TRUE(res.ok());
    EXPECT_EQ(res->sparse[0].dtype, storage);
    EXPECT_EQ(res->sparse[0].data.size(), 6u);
    auto v = Decode(storage, res->sparse[0].data);
    const float expected[3] = {0.9f, 0.8f, 1.3f};
    for (int j = 0; j < 3; ++j) {
      const uint16_t bits = storage == DType::kFloat16
                                ? FloatToHalf(expected[j])
                                : FloatToBFloat16(expected[j]);
      const float want = storage == DType::kFloat16 ? HalfToFloat(bits)
                                                    : BFloat16ToFloat(bits);
      EXPECT_EQ(v[j], want);
    }
    // Pulled as fp32 on request; a missing row reads as it will be stored.
    std::vector<uint64_t> two = {1, 2};
    SparseRead r2{"t", two, false};
    c.initializer = {.kind = InitializerConfig::Kind::kConstant, .value = 0.1};
    ASSERT_TRUE(e->DeleteTable("t").ok());
    ASSERT_TRUE(e->CreateTable({c}).ok());
    ASSERT_TRUE(PushRows(*e, "t", {1}, {0, 0, 0}).ok());
    auto f = e->Pull({.value_dtype = DType::kFloat32}, {}, {&r2, 1});
    ASSERT_TRUE(f.ok());
    EXPECT_EQ(f->sparse[0].data.size(), 24u);
    auto fv = Decode(DType::kFloat32, f->sparse[0].data);
    EXPECT_EQ(f->sparse[0].missing_positions, std::vector<uint32_t>{1});
    EXPECT_EQ(fv[0], fv[3]) << "created and missing rows read alike";
    EXPECT_NE(fv[0], 0.1f) << "0.1 is not representable in 16 bits";
  }
}

// Many threads push and pull overlapping ids: every update lands (SGD with
// exactly representable steps makes the final value exact) and each row's
// update count equals the pushes it received.
TEST(SparseTable, ConcurrentPushesAndPullsLoseNothing) {
  auto e = NewEngine({.table_stripes = 8});
  ASSERT_TRUE(e->CreateTable({SimpleTable("t", 8, 0.25)}).ok());
  constexpr int kThreads = 8, kPushes = 300, kIds = 32;
  absl::Barrier* start = new absl::Barrier(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      if (start->Block()) delete start;
      for (int i = 0; i < kPushes; ++i) {
        std::vector<uint64_t> ids = {static_cast<uint64_t>((t + i) % kIds),
                                     static_cast<uint64_t>((t * 7 + i) % kIds)};
        if (ids[0] == ids[1]) ids.pop_back();
        std::vector<float> g(ids.size() * 8, 1.0f);
        ASSERT_TRUE(PushRows(*e, "t", ids, g).ok());
        if (i % 10 == 0) PullRows(*e, "t", ids);
      }
    });
  }
  for (auto& th : threads) th.join();
  // Recount what each id received.
  std::vector<int> expected(kIds, 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPushes; ++i) {
      const int a = (t + i) % kIds, b = (t * 7 + i) % kIds;
      ++expected[a];
      if (a != b) ++expected[b];
    }
  }
  for (int id = 0; id < kIds; ++id) {
    auto row = e->ReadRow("t", id);
    ASSERT_TRUE(row.ok());
    EXPECT_EQ(row->update_count, expected[id]);
    EXPECT_EQ(row->value[0], -0.25f * expected[id]);
  }
}

TEST(SparseTable, AcceptsSixteenBitGradients) {
  auto e = NewEngine();
  ASSERT_TRUE(e->CreateTable({SimpleTable("t", 2, 1.0)}).ok());
  for (DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    std::vector<float> g = {0.5f, -2.0f};
    testing::OwnedTensor t{dtype, {1, 2}, std::string(4, '\0')};
    FromFloat(dtype, g.data(), 2, t.bytes.data());
    std::vector<uint64_t> ids = {dtype == DType::kFloat16 ? 1u : 2u};
    SparseGradient sg{"t", ids, t.view()};
    ASSERT_TRUE(e->Push({}, {}, {&sg, 1}).ok());
  }
  EXPECT_EQ(PullRows(*e, "t", {1, 2}),
            (std::vector<float>{-0.5f, 2.0f, -0.5f, 2.0f}));
}

TEST(SparseTable, RunEvictionAndMemoryShrink) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("t", 16);
  c.ttl_steps = 2;
  ASSERT_TRUE(e->CreateTable({c}).ok());
  std::vector<uint64_t> ids(50);
  for (int i = 0; i < 50; ++i) ids[i] = i;
  ASSERT_TRUE(PushRows(*e, "t", ids, std::vector<float>(50 * 16, 1.0f),
                       {.step_id = 1, .exactly_once = false})
                  .ok());
  const int64_t full = e->DescribeTable("t")->memory_bytes;
  // A pull at step 9 moves the engine's newest step; eviction then drops all.
  SparseRead r{"t", {}, false};
  ASSERT_TRUE(e->Pull({.step_id = 9}, {}, {&r, 1}).ok());
  EXPECT_EQ(e->RunEviction(), 50);
  EXPECT_EQ(e->DescribeTable("t")->rows_in_memory, 0);
  EXPECT_LT(e->DescribeTable("t")->memory_bytes, full);
}

TEST(SparseTable, DeleteTableFreesTheName) {
  auto e = NewEngine();
  ASSERT_TRUE(e->CreateTable({SimpleTable("t", 2)}).ok());
  ASSERT_TRUE(PushRows(*e, "t", {1}, {1, 1}).ok());
  ASSERT_TRUE(e->DeleteTable("t").ok());
  EXPECT_EQ(e->DescribeTable("t").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(*e->CreateTable({SimpleTable("t", 4)}));
  EXPECT_EQ(e->DescribeTable("t")->rows_in_memory, 0);
}

TEST(SparseTable, PullCreateMissingCreatesRows) {
  auto e = NewEngine();
  ASSERT_TRUE(e->CreateTable({SimpleTable("t", 2)}).ok());
  std::vector<uint64_t> ids = {1, 2, 1};
  SparseRead r{"t", ids, true};
  auto res = e->Pull({.step_id = 3}, {}, {&r, 1});
  ASSERT_TRUE(res.ok());
  EXPECT_TRUE(res->sparse[0].missing_positions.empty());
  EXPECT_EQ(res->sparse[0].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(e->DescribeTable("t")->rows_in_memory, 2);
  EXPECT_EQ(e->ReadRow("t", 1)->hit_count, 2u);
  EXPECT_EQ(e->ReadRow("t", 1)->last_step, 3u);
}

}  // namespace
}  // namespace plexus::ps

namespace plexus::ps {
namespace {

TEST(SparseTable, ForEachRowVisitsEveryRowWithItsSlots) {
  auto e = testing::NewEngine({.table_stripes = 5});
  TableConfig c = testing::SimpleTable("t", 2);
  c.optimizer = {.kind = OptimizerConfig::Kind::kMomentum,
                 .learning_rate = 1,
                 .momentum = 0.5};
  ASSERT_TRUE(e->CreateTable({c}).ok());
  std::vector<uint64_t> ids = {3, 10, 99, 1000};
  ASSERT_TRUE(
      testing::PushRows(*e, "t", ids, std::vector<float>(8, 2.0f)).ok());
  std::vector<uint64_t> seen;
  ASSERT_TRUE(e->ForEachRow("t", [&](uint64_t id, const RowSnapshot& row) {
                 seen.push_back(id);
                 EXPECT_EQ(row.value, (std::vector<float>{-2, -2}));
                 ASSERT_EQ(row.slots.size(), 1u);
                 EXPECT_EQ(row.slots[0], (std::vector<float>{2, 2}));
               }).ok());
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, ids);
  EXPECT_EQ(e->ForEachRow("nope", [](uint64_t, const RowSnapshot&) {}).code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace plexus::ps

namespace plexus::ps {
namespace {

// Pushes, pulls and capacity eviction from several threads: the table stays
// within its capacity and every surviving row is consistent.
TEST(SparseTable, ConcurrentEvictionKeepsCapacity) {
  auto e = testing::NewEngine({.table_stripes = 4});
  TableConfig c = testing::SimpleTable("t", 4, 0.25);
  c.capacity_rows = 64;
  c.eviction_policy = EvictionPolicy::kLru;
  c.ttl_steps = 50;
  ASSERT_TRUE(e->CreateTable({c}).ok());
  constexpr int kThreads = 4, kSteps = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int s = 1; s <= kSteps; ++s) {
        std::vector<uint64_t> ids = {static_cast<uint64_t>(t * 1000 + s % 97),
                                     static_cast<uint64_t>(500 + s % 13)};
        ASSERT_TRUE(testing::PushRows(*e, "t", ids, std::vector<float>(8, 1),
                                      {.step_id = static_cast<uint64_t>(s),
                                       .exactly_once = false})
                        .ok());
        if (s % 7 == 0) testing::PullRows(*e, "t", ids);
      }
    });
  }
  for (auto& th : threads) th.join();
  e->RunEviction();
  auto info = e->DescribeTable("t");
  EXPECT_LE(info->rows_in_memory, 64);
  EXPECT_GT(info->rows_evicted, 0);
  int64_t visited = 0;
  ASSERT_TRUE(e->ForEachRow("t", [&](uint64_t, const RowSnapshot& row) {
                 ++visited;
                 EXPECT_EQ(row.value[0], -0.25f * row.update_count);
               }).ok());
  EXPECT_EQ(visited, info->rows_in_memory);
}

}  // namespace
}  // namespace plexus::ps
