// Consistency modes with concurrent clients: async, sync (aggregate N closure
// contributions, apply once, pulls of step t+1 wait for step t) and bounded
// staleness. Waits are bounded by deadlines; nothing sleeps to synchronise.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/synchronization/barrier.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "ps/storage/engine.h"
#include "tests/ps/storage/test_util.h"

namespace plexus::ps {
namespace {

using testing::NewEngine;
using testing::PullRows;
using testing::PushRows;
using testing::SimpleTable;

constexpr absl::Duration kShort = absl::Milliseconds(50);
constexpr absl::Duration kLong = absl::Seconds(30);

absl::StatusOr<PullResult> PullAt(Engine& e, const std::string& table,
                                  uint64_t id, uint64_t step,
                                  absl::Duration wait) {
  std::vector<uint64_t> ids = {id};
  SparseRead r{table, ids, false};
  return e.Pull({.step_id = step, .deadline = absl::Now() + wait}, {}, {&r, 1});
}

TEST(Consistency, AsyncAppliesOnArrivalAndNeverWaits) {
  auto e = NewEngine();
  ASSERT_TRUE(e->CreateTable({SimpleTable("t", 1)}).ok());
  ASSERT_TRUE(
      PushRows(*e, "t", {1}, {2}, {.step_id = 1, .exactly_once = false}).ok());
  EXPECT_EQ(PullRows(*e, "t", {1}), std::vector<float>{-1});
  // A pull far in the future does not wait (deadline already past).
  EXPECT_TRUE(PullAt(*e, "t", 1, 1000, absl::ZeroDuration()).ok());
}

TEST(Consistency, SyncAggregatesClosuresAndAppliesOnce) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("t", 1, 1.0);
  c.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 3};
  ASSERT_TRUE(e->CreateTable({c}).ok());

  // Three closures of step 1 push concurrently; only when all three are in is
  // the mean applied, once.
  const float grads[3] = {0.3f, 0.7f, 1.1f};
  std::vector<PushResult> results(3);
  {
    absl::Barrier* start = new absl::Barrier(3);
    std::vector<std::thread> workers;
    for (int w = 0; w < 3; ++w) {
      workers.emplace_back([&, w] {
        if (start->Block()) delete start;
        auto r = PushRows(*e, "t", {1}, {grads[w]},
                          {.worker_id = static_cast<uint64_t>(10 + w),
                           .worker_incarnation = 1,
                           .step_id = 1,
                           .closure_id = static_cast<uint64_t>(100 + w)});
        ASSERT_TRUE(r.ok()) << r.status();
        results[w] = *r;
      });
    }
    for (auto& t : workers) t.join();
  }
  for (const auto& r : results) EXPECT_EQ(r.outcome, PushOutcome::kAggregated);
  // Sum in ascending closure order, then divide: bitwise deterministic.
  const float mean = ((grads[0] + grads[1]) + grads[2]) * (1.0f / 3);
  EXPECT_EQ(PullRows(*e, "t", {1}), std::vector<float>{-mean});
  EXPECT_EQ(e->ReadRow("t", 1)->update_count, 1);
  EXPECT_EQ(e->DescribeTable("t")->last_applied_step_id, 1u);

  // A late push for step 1 is refused.
  EXPECT_EQ(PushRows(*e, "t", {1}, {1},
                     {.step_id = 1, .closure_id = 999, .exactly_once = false})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(Consistency, SyncPullOfNextStepWaitsForTheStep) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("t", 1, 1.0);
  c.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 2};
  ASSERT_TRUE(e->CreateTable({c}).ok());
  // Step 1 pulls do not wait (nothing before step 1).
  ASSERT_TRUE(PullAt(*e, "t", 1, 1, kShort).ok());
  // Closure 1 pushes step 1; a pull at step 2 must wait for closure 2.
  ASSERT_TRUE(PushRows(*e, "t", {1}, {1},
                       {.worker_id = 1, .step_id = 1, .closure_id = 1})
                  .ok());
  EXPECT_EQ(PullAt(*e, "t", 1, 2, kShort).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(PullRows(*e, "t", {1}), std::vector<float>{0})
      << "nothing applied before the step is complete";

  absl::Notification pulled;
  std::vector<float> seen;
  std::thread waiter([&] {
    auto r = PullAt(*e, "t", 1, 2, kLong);
    ASSERT_TRUE(r.ok()) << r.status();
    seen = testing::Decode(r->sparse[0].dtype, r->sparse[0].data);
    pulled.Notify();
  });
  ASSERT_TRUE(PushRows(*e, "t", {1}, {3},
                       {.worker_id = 2, .step_id = 1, .closure_id = 2})
                  .ok());
  ASSERT_TRUE(pulled.WaitForNotificationWithTimeout(kLong));
  waiter.join();
  EXPECT_EQ(seen, std::vector<float>{-2}) << "the waiter sees step 1 applied";
}

TEST(Consistency, SyncAggregatesChunkedDensePushes) {
  auto e = NewEngine();
  VariableConfig c = testing::SimpleVariable("w", {4}, 1.0);
  c.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 2};
  ASSERT_TRUE(e->CreateVariable({.config = c}).ok());
  auto push = [&](uint64_t closure, RowRange rows, uint32_t chunk,
                  std::vector<float> g) {
    auto t = testing::F32({rows.size()}, g);
    DenseGradient dg{"w", rows, t.view()};
    return e->Push({.step_id = 1,
                    .closure_id = closure,
                    .chunk_index = chunk,
                    .num_chunks = 2},
                   {&dg, 1}, {});
  };
  ASSERT_TRUE(push(1, {0, 2}, 0, {1, 1}).ok());
  ASSERT_TRUE(push(2, {0, 2}, 0, {3, 3}).ok());
  ASSERT_TRUE(push(2, {2, 4}, 1, {3, 3}).ok());
  EXPECT_EQ(testing::PullDense(*e, "w"), std::vector<float>(4, 0))
      << "closure 1 has one chunk of two: step incomplete";
  ASSERT_TRUE(push(1, {2, 4}, 1, {5, 5}).ok());
  EXPECT_EQ(testing::PullDense(*e, "w"), (std::vector<float>{-2, -2, -4, -4}));
}

TEST(Consistency, BoundedStalenessWaitsForTheSlowestWorker) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("t", 1);
  c.consistency = {.mode = ConsistencyMode::kBoundedStaleness,
                   .num_workers = 2,
                   .staleness_bound = 1};
  ASSERT_TRUE(e->CreateTable({c}).ok());
  auto push = [&](uint64_t worker, uint64_t step) {
    return PushRows(
        *e, "t", {1}, {1},
        {.worker_id = worker, .step_id = step, .exactly_once = false});
  };
  // Worker 1 runs ahead: pushes steps 1..3, applied on arrival.
  for (uint64_t s = 1; s <= 3; ++s) ASSERT_TRUE(push(1, s).ok());
  EXPECT_EQ(PullRows(*e, "t", {1}), std::vector<float>{-1.5f});
  // Pull at step 2 is fine with s = 1 (the slowest may be at step 1).
  ASSERT_TRUE(PullAt(*e, "t", 1, 2, kShort).ok());
  // Pull at step 4 needs every worker to have pushed step 2.
  EXPECT_EQ(PullAt(*e, "t", 1, 4, kShort).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  absl::Notification done;
  std::thread waiter([&] {
    EXPECT_TRUE(PullAt(*e, "t", 1, 4, kLong).ok());
    done.Notify();
  });
  ASSERT_TRUE(push(2, 1).ok());
  EXPECT_EQ(PullAt(*e, "t", 1, 4, kShort).status().code(),
            absl::StatusCode::kDeadlineExceeded)
      << "worker 2 at step 1 is still too old";
  ASSERT_TRUE(push(2, 2).ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kLong));
  waiter.join();
}

TEST(Consistency, ShutdownWakesWaiters) {
  auto e = NewEngine();
  TableConfig c = SimpleTable("t", 1);
  c.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 2};
  ASSERT_TRUE(e->CreateTable({c}).ok());
  absl::Notification done;
  absl::Status status;
  std::thread waiter([&] {
    status = PullAt(*e, "t", 1, 5, kLong).status();
    done.Notify();
  });
  e->Shutdown();
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(kLong));
  waiter.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace plexus::ps

namespace plexus::ps {
namespace {

TEST(Consistency, SyncTargetCreatedMidJobStartsAfterItsAppliedStep) {
  auto e = testing::NewEngine();
  TableConfig c = testing::SimpleTable("t", 1);
  c.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 1};
  ASSERT_TRUE(e->CreateTable({c, /*applied_step=*/41}).ok());
  EXPECT_TRUE(PullAt(*e, "t", 1, 42, absl::ZeroDuration()).ok());
  EXPECT_EQ(testing::PushRows(*e, "t", {1}, {1},
                              {.step_id = 41, .exactly_once = false})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(testing::PushRows(*e, "t", {1}, {1},
                                {.step_id = 42, .exactly_once = false})
                  .ok());
  EXPECT_TRUE(PullAt(*e, "t", 1, 43, absl::ZeroDuration()).ok());
}

TEST(Consistency, PushPullReflectsThePush) {
  auto e = testing::NewEngine();
  ASSERT_TRUE(e->CreateTable({testing::SimpleTable("t", 1)}).ok());
  std::vector<uint64_t> ids = {4};
  auto g = testing::F32({1, 1}, {2});
  SparseGradient sg{"t", ids, g.view()};
  SparseRead sr{"t", ids, false};
  PushOptions po{.worker_id = 1, .step_id = 1};
  auto r = e->PushPull(po, {}, {&sg, 1}, {}, {}, {&sr, 1});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->push.outcome, PushOutcome::kApplied);
  EXPECT_EQ(testing::Decode(DType::kFloat32, r->pull.sparse[0].data),
            std::vector<float>{-1});
  // The duplicate still returns the pull.
  r = e->PushPull(po, {}, {&sg, 1}, {}, {}, {&sr, 1});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->push.outcome, PushOutcome::kDuplicate);
  EXPECT_EQ(testing::Decode(DType::kFloat32, r->pull.sparse[0].data),
            std::vector<float>{-1});
}

}  // namespace
}  // namespace plexus::ps

namespace plexus::ps {
namespace {

TEST(Consistency, SyncSparseMeanOverClosuresWithOverlappingIds) {
  auto e = testing::NewEngine();
  TableConfig c = testing::SimpleTable("t", 1, 1.0);
  c.consistency = {.mode = ConsistencyMode::kSync, .num_workers = 2};
  ASSERT_TRUE(e->CreateTable({c}).ok());
  // Closure 7 touches ids 1 (twice: summed) and 2; closure 3 touches 2 and 3.
  ASSERT_TRUE(testing::PushRows(*e, "t", {1, 2, 1}, {1, 2, 3},
                                {.step_id = 1, .closure_id = 7})
                  .ok());
  ASSERT_TRUE(testing::PushRows(*e, "t", {2, 3}, {4, 6},
                                {.step_id = 1, .closure_id = 3})
                  .ok());
  // Mean over the two closures: id 1: 4/2, id 2: (4 + 2)/2, id 3: 6/2.
  EXPECT_EQ(testing::PullRows(*e, "t", {1, 2, 3}),
            (std::vector<float>{-2, -3, -3}));
  // An empty contribution counts as a closure's push (no rows to send).
  {
    auto empty = testing::F32({0, 1}, {});
    SparseGradient none{"t", {}, empty.view()};
    ASSERT_TRUE(e->Push({.step_id = 2, .closure_id = 8}, {}, {&none, 1}).ok());
  }
  ASSERT_TRUE(
      testing::PushRows(*e, "t", {3}, {2}, {.step_id = 2, .closure_id = 9})
          .ok());
  EXPECT_EQ(testing::PullRows(*e, "t", {3}), std::vector<float>{-4});
  EXPECT_TRUE(PullAt(*e, "t", 3, 3, absl::ZeroDuration()).ok());
}

TEST(Consistency, BoundedStalenessTracksEveryWorkerSeenWhenUnset) {
  auto e = testing::NewEngine();
  TableConfig c = testing::SimpleTable("t", 1);
  c.consistency = {.mode = ConsistencyMode::kBoundedStaleness,
                   .num_workers = 0,
                   .staleness_bound = 0};
  ASSERT_TRUE(e->CreateTable({c}).ok());
  auto push = [&](uint64_t worker, uint64_t step) {
    return testing::PushRows(
        *e, "t", {1}, {1},
        {.worker_id = worker, .step_id = step, .exactly_once = false});
  };
  ASSERT_TRUE(push(1, 1).ok());
  ASSERT_TRUE(push(2, 1).ok());
  ASSERT_TRUE(push(1, 2).ok());
  // s = 0: a pull at step 3 needs every seen worker at step 2.
  EXPECT_EQ(PullAt(*e, "t", 1, 3, kShort).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(PullAt(*e, "t", 1, 2, absl::ZeroDuration()).ok());
  ASSERT_TRUE(push(2, 2).ok());
  EXPECT_TRUE(PullAt(*e, "t", 1, 3, absl::ZeroDuration()).ok());
}

}  // namespace
}  // namespace plexus::ps

namespace plexus::ps {
namespace {

// The same contributions arriving in different orders give the same bits.
TEST(Consistency, SyncResultDoesNotDependOnArrivalOrder) {
  const std::vector<float> g = {1e-3f, 7.0f, -3.3e-4f, 1e5f, 0.1f};
  auto run = [&](const std::vector<int>& order) {
    auto e = testing::NewEngine();
    TableConfig c = testing::SimpleTable("t", 1, 0.1);
    c.consistency = {.mode = ConsistencyMode::kSync,
                     .num_workers = static_cast<uint32_t>(g.size())};
    EXPECT_TRUE(e->CreateTable({c}).ok());
    for (int i : order) {
      EXPECT_TRUE(
          testing::PushRows(
              *e, "t", {1}, {g[i]},
              {.step_id = 1, .closure_id = static_cast<uint64_t>(i + 1)})
              .ok());
    }
    return testing::PullRows(*e, "t", {1})[0];
  };
  const float a = run({0, 1, 2, 3, 4});
  EXPECT_EQ(a, run({4, 3, 2, 1, 0}));
  EXPECT_EQ(a, run({2, 0, 4, 1, 3}));
}

}  // namespace
}  // namespace plexus::ps
