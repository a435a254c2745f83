// Large pulls and pushes (sparse and dense) split over the engine's threads
// (EngineOptions::parallel_threads) give exactly what one thread gives.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "ps/storage/engine.h"
#include "tests/ps/storage/test_util.h"

namespace plexus::ps {
namespace {

using testing::NewEngine;
using testing::PushRows;

TableConfig AdagradTable() {
  TableConfig c = testing::SimpleTable("emb", 8);
  c.optimizer = {.kind = OptimizerConfig::Kind::kAdagrad,
                 .learning_rate = 0.1,
                 .initial_accumulator_value = 0.1,
                 .epsilon = 1e-7};
  c.initializer = {.kind = InitializerConfig::Kind::kUniform,
                   .min = -0.5,
                   .max = 0.5,
                   .seed = 7};
  // Rows are created on their second push: some pushes are not admitted.
  c.admission_min_hit_count = 2;
  return c;
}

TEST(ParallelEngine, LargeBatchesMatchOneThread) {
  auto serial = NewEngine({.parallel_threads = 0});
  auto parallel = NewEngine({.parallel_threads = 3});
  for (Engine* e : {serial.get(), parallel.get()}) {
    ASSERT_TRUE(e->CreateTable({AdagradTable()}).ok());
  }
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<uint64_t> pick(0, 19999);
  for (int round = 0; round < 6; ++round) {
    // Distinct ids (a push's ids are distinct), thousands per call so the
    // parallel engine splits them.
    std::vector<uint64_t> ids;
    std::vector<bool> seen(20000, false);
    while (ids.size() < 6000) {
      const uint64_t id = pick(rng);
      if (!seen[id]) ids.push_back(id);
      seen[id] = true;
    }
    std::vector<float> grads(ids.size() * 8);
    for (float& g : grads) g = static_cast<float>(pick(rng)) / 20000 - 0.5f;
    auto a = PushRows(*serial, "emb", ids, grads);
    auto b = PushRows(*parallel, "emb", ids, grads);
    ASSERT_TRUE(a.ok()) << a.status();
    ASSERT_TRUE(b.ok()) << b.status();
    EXPECT_EQ(a->rows_applied, b->rows_applied) << "round " << round;
    EXPECT_EQ(a->rows_not_admitted, b->rows_not_admitted) << "round " << round;
    EXPECT_GT(a->rows_not_admitted, 0) << "round " << round;

    // Pull without creating: present rows and missing ones (initializer
    // values, listed) both.
    std::vector<uint64_t> pull(5000);
    for (uint64_t& id : pull) id = pick(rng);
    SparseRead r{"emb", pull, false};
    auto pa = serial->Pull({}, {}, {&r, 1});
    auto pb = parallel->Pull({}, {}, {&r, 1});
    ASSERT_TRUE(pa.ok()) << pa.status();
    ASSERT_TRUE(pb.ok()) << pb.status();
    EXPECT_EQ(pa->sparse[0].data, pb->sparse[0].data) << "round " << round;
    EXPECT_EQ(pa->sparse[0].missing_positions, pb->sparse[0].missing_positions)
        << "round " << round;
    EXPECT_FALSE(pa->sparse[0].missing_positions.empty());
  }
}

TEST(ParallelEngine, LargeDensePushesMatchOneThread) {
  auto serial = NewEngine({.parallel_threads = 0});
  auto parallel = NewEngine({.parallel_threads = 3});
  VariableConfig c = testing::SimpleVariable("w", {4000, 300});
  c.optimizer = {.kind = OptimizerConfig::Kind::kAdam,
                 .learning_rate = 0.01,
                 .epsilon = 1e-8,
                 .beta1 = 0.9,
                 .beta2 = 0.999};
  c.initializer = {.kind = InitializerConfig::Kind::kNormal,
                   .mean = 0,
                   .stddev = 0.1,
                   .seed = 5};
  for (Engine* e : {serial.get(), parallel.get()}) {
    ASSERT_TRUE(e->CreateVariable({.config = c}).ok());
  }
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0, 1);
  // Whole-variable pushes (split over the threads) and slices of a few rows
  // (that start and end inside stripes).
  for (RowRange rows : {RowRange{0, 4000}, RowRange{3, 3997}, RowRange{0, 4000},
                        RowRange{500, 501}, RowRange{0, 4000}}) {
    std::vector<float> g(static_cast<size_t>(rows.size() * 300));
    for (float& x : g) x = normal(rng);
    auto t = testing::F32({rows.size(), 300}, g);
    DenseGradient dg{"w", rows, t.view()};
    for (Engine* e : {serial.get(), parallel.get()}) {
      auto r = e->Push({.exactly_once = false}, {&dg, 1}, {});
      ASSERT_TRUE(r.ok()) << r.status();
      EXPECT_EQ(r->rows_applied, rows.size());
    }
  }
  DenseRead read{"w", {}};
  auto a = serial->Pull({}, {&read, 1}, {});
  auto b = parallel->Pull({}, {&read, 1}, {});
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->dense[0].data, b->dense[0].data);
}

TEST(ParallelEngine, RefusesANegativeThreadCount) {
  auto engine = CreateEngine({.parallel_threads = -2});
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace plexus::ps
