// Dense variable slices through the engine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <thread>
#include <vector>

#include "common/hash.h"
#include "ps/storage/engine.h"
#include "ps/storage/initializer.h"
#include "tests/ps/storage/test_util.h"

namespace plexus::ps {
namespace {

using testing::Decode;
using testing::F32;
using testing::NewEngine;
using testing::PullDense;
using testing::SimpleVariable;

absl::StatusOr<PushResult> PushDense(Engine& e, const std::string& name,
                                     RowRange rows, int64_t width,
                                     const std::vector<float>& g,
                                     PushOptions o = {.exactly_once = false}) {
  auto t = F32({rows.size(), width}, g);
  DenseGradient dg{name, rows, t.view()};
  return e.Push(o, {&dg, 1}, {});
}

TEST(DenseVariable, SliceHoldsItsRowsAndAppliesPushes) {
  auto e = NewEngine({.variable_stripes = 3});
  VariableConfig c = SimpleVariable("w", {30, 2});
  c.initializer = {.kind = InitializerConfig::Kind::kConstant, .value = 1};
  ASSERT_TRUE(*e->CreateVariable({.config = c, .rows = {10, 20}}));
  EXPECT_FALSE(*e->CreateVariable({.config = c, .rows = {10, 20}}));
  EXPECT_EQ(e->CreateVariable({.config = c, .rows = {0, 10}}).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto info = e->DescribeVariable("w");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->rows, (RowRange{10, 20}));
  EXPECT_EQ(info->memory_bytes, 10 * 2 * 4 + 10 * 8);

  // Rows 12..16 cross stripe boundaries (4 rows per stripe).
  std::vector<float> g(4 * 2, 2.0f);
  ASSERT_TRUE(PushDense(*e, "w", {12, 16}, 2, g).ok());
  auto v = PullDense(*e, "w");
  ASSERT_EQ(v.size(), 20u);
  for (int r = 0; r < 10; ++r) {
    const float want = (r >= 2 && r < 6) ? 0.0f : 1.0f;
    EXPECT_EQ(v[2 * r], want) << r;
    EXPECT_EQ(v[2 * r + 1], want) << r;
  }
  // A sub-range read.
  DenseRead read{"w", {15, 17}};
  auto part = e->Pull({}, {&read, 1}, {});
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(part->dense[0].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(Decode(DType::kFloat32, part->dense[0].data),
            (std::vector<float>{0, 0, 1, 1}));
}

TEST(DenseVariable, RowInitialisationDependsOnGlobalRowOnly) {
  VariableConfig c = SimpleVariable("w", {8, 3});
  c.initializer = {
      .kind = InitializerConfig::Kind::kNormal, .stddev = 1, .seed = 5};
  auto whole = NewEngine();
  auto shard = NewEngine();
  ASSERT_TRUE(whole->CreateVariable({.config = c}).ok());
  ASSERT_TRUE(shard->CreateVariable({.config = c, .rows = {4, 8}}).ok());
  auto a = PullDense(*whole, "w");
  auto b = PullDense(*shard, "w");
  EXPECT_EQ(std::vector<float>(a.begin() + 12, a.end()), b);
}

TEST(DenseVariable, InitialValueAndSixteenBitStorage) {
  auto e = NewEngine();
  VariableConfig c = SimpleVariable("w", {2, 2}, 1.0);
  c.storage_dtype = DType::kBFloat16;
  auto init = F32({2, 2}, {1, 2, 3, 4});
  ASSERT_TRUE(
      e->CreateVariable({.config = c, .initial_value = init.view()}).ok());
  ASSERT_TRUE(PushDense(*e, "w", {0, 2}, 2, {0.5f, 0.5f, 0.5f, 0.5f}).ok());
  EXPECT_EQ(PullDense(*e, "w"), (std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f}));
  EXPECT_EQ(e->DescribeVariable("w")->memory_bytes, 4 * 2 + 2 * 8);
}

TEST(DenseVariable, AdamOnDenseMatchesSparseRow) {
  // The same optimizer over the same gradients gives the same values dense
  // and sparse (one code path for the math).
  OptimizerConfig adam{.kind = OptimizerConfig::Kind::kAdam,
                       .learning_rate = 0.01,
                       .epsilon = 1e-8,
                       .beta1 = 0.9,
                       .beta2 = 0.999};
  auto e = NewEngine();
  VariableConfig vc = SimpleVariable("w", {1, 4});
  vc.optimizer = adam;
  TableConfig tc = testing::SimpleTable("t", 4);
  tc.optimizer = adam;
  ASSERT_TRUE(e->CreateVariable({.config = vc}).ok());
  ASSERT_TRUE(e->CreateTable({tc}).ok());
  for (int s = 1; s <= 5; ++s) {
    std::vector<float> g = {0.1f * s, -0.2f, 0.3f, 0.05f * s};
    ASSERT_TRUE(PushDense(*e, "w", {0, 1}, 4, g).ok());
    ASSERT_TRUE(testing::PushRows(*e, "t", {0}, g).ok());
  }
  EXPECT_EQ(PullDense(*e, "w"), testing::PullRows(*e, "t", {0}));
}

TEST(DenseVariable, ConcurrentPushesToOverlappingRanges) {
  auto e = NewEngine({.variable_stripes = 4});
  ASSERT_TRUE(
      e->CreateVariable({.config = SimpleVariable("w", {64, 4}, 0.25)}).ok());
  constexpr int kThreads = 6, kPushes = 200;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPushes; ++i) {
        const int64_t a = (t * 5 + i) % 48;
        std::vector<float> g(16 * 4, 1.0f);
        ASSERT_TRUE(PushDense(*e, "w", {a, a + 16}, 4, g).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<int> hits(64, 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPushes; ++i) {
      const int a = (t * 5 + i) % 48;
      for (int r = a; r < a + 16; ++r) ++hits[r];
    }
  }
  auto v = PullDense(*e, "w");
  for (int r = 0; r < 64; ++r) EXPECT_EQ(v[4 * r], -0.25f * hits[r]) << r;
}

}  // namespace
}  // namespace plexus::ps

namespace plexus::ps {
namespace {

TEST(DenseVariable, ReadVariableReturnsValuesSlotsAndCounts) {
  auto e = testing::NewEngine({.variable_stripes = 2});
  VariableConfig c = testing::SimpleVariable("w", {6, 1});
  c.storage_dtype = DType::kFloat16;
  c.optimizer = {.kind = OptimizerConfig::Kind::kAdagrad,
                 .learning_rate = 1,
                 .initial_accumulator_value = 0.25,
                 .epsilon = 0};
  ASSERT_TRUE(e->CreateVariable({.config = c, .rows = {2, 6}}).ok());
  auto g = testing::F32({2, 1}, {1, 1});
  DenseGradient dg{"w", {3, 5}, g.view()};
  ASSERT_TRUE(e->Push({}, {&dg, 1}, {}).ok());
  auto snap = e->ReadVariable("w");
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->rows, (RowRange{2, 6}));
  EXPECT_EQ(snap->update_count, (std::vector<int64_t>{0, 1, 1, 0}));
  ASSERT_EQ(snap->slots.size(), 1u);
  EXPECT_EQ(snap->slots[0], (std::vector<float>{0.25f, 1.25f, 1.25f, 0.25f}));
  EXPECT_EQ(snap->values[0], 0.0f);
  EXPECT_EQ(snap->values[1], HalfToFloat(FloatToHalf(-1 / std::sqrt(1.25f))));
  EXPECT_EQ(e->ReadVariable("nope").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace plexus::ps
