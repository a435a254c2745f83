// Exactly-once pushes: duplicates acknowledged and not applied, stale
// incarnations fenced, the record trimmed at checkpoints.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/barrier.h"
#include "ps/storage/engine.h"
#include "tests/ps/storage/test_util.h"

namespace plexus::ps {
namespace {

using testing::NewEngine;
using testing::PullRows;
using testing::PushRows;
using testing::SimpleTable;

class ExactlyOnce : public ::testing::Test {
 protected:
  void SetUp() override {
    e_ = NewEngine();
    ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 1, 1.0)}).ok());
  }
  absl::StatusOr<PushResult> Push(PushOptions o) {
    return PushRows(*e_, "t", {1}, {1}, o);
  }
  float Value() { return PullRows(*e_, "t", {1})[0]; }
  std::unique_ptr<Engine> e_;
};

TEST_F(ExactlyOnce, SecondPushWithSameKeyIsADuplicate) {
  PushOptions o{.job_id = "j",
                .worker_id = 3,
                .worker_incarnation = 1,
                .step_id = 7,
                .push_seq = 0};
  auto first = Push(o);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->outcome, PushOutcome::kApplied);
  auto second = Push(o);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->outcome, PushOutcome::kDuplicate);
  EXPECT_EQ(second->rows_applied, 0);
  EXPECT_EQ(Value(), -1.0f);
  EXPECT_EQ(e_->counters().duplicate_pushes, 1);
  // Another push_seq, chunk or step is another key.
  o.push_seq = 1;
  EXPECT_EQ(Push(o)->outcome, PushOutcome::kApplied);
  o.chunk_index = 1;
  EXPECT_EQ(Push(o)->outcome, PushOutcome::kApplied);
  o.step_id = 8;
  EXPECT_EQ(Push(o)->outcome, PushOutcome::kApplied);
  EXPECT_EQ(Value(), -4.0f);
}

TEST_F(ExactlyOnce, ClosureKeyIgnoresWhichWorkerRanIt) {
  // A closure re-run on another worker after a failure is deduplicated.
  ASSERT_EQ(Push({.worker_id = 1,
                  .worker_incarnation = 1,
                  .step_id = 4,
                  .closure_id = 55})
                ->outcome,
            PushOutcome::kApplied);
  EXPECT_EQ(Push({.worker_id = 2,
                  .worker_incarnation = 1,
                  .step_id = 4,
                  .closure_id = 55})
                ->outcome,
            PushOutcome::kDuplicate);
  EXPECT_EQ(Value(), -1.0f);
}

TEST_F(ExactlyOnce, OlderIncarnationIsRejected) {
  ASSERT_TRUE(
      Push({.worker_id = 5, .worker_incarnation = 2, .step_id = 1}).ok());
  auto stale = Push({.worker_id = 5, .worker_incarnation = 1, .step_id = 2});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Value(), -1.0f) << "the stale push changed nothing";
  EXPECT_EQ(e_->counters().rejected_pushes, 1);
  // A newer incarnation is accepted and becomes the newest.
  ASSERT_TRUE(
      Push({.worker_id = 5, .worker_incarnation = 3, .step_id = 2}).ok());
  EXPECT_EQ(Push({.worker_id = 5, .worker_incarnation = 2, .step_id = 3})
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(ExactlyOnce, RecordIsTrimmedUpToACheckpointStep) {
  for (uint64_t s = 1; s <= 10; ++s) {
    ASSERT_TRUE(Push({.worker_id = 1, .step_id = s}).ok());
  }
  EXPECT_EQ(e_->counters().applied_keys, 10);
  e_->TrimAppliedKeys(6);
  EXPECT_EQ(e_->counters().applied_keys, 4);
  // Keys after the checkpoint still deduplicate.
  EXPECT_EQ(Push({.worker_id = 1, .step_id = 8})->outcome,
            PushOutcome::kDuplicate);
}

TEST_F(ExactlyOnce, UnkeyedPushesAreAlwaysApplied) {
  // No closure id and no (worker id, step id): an unregistered client.
  EXPECT_EQ(Push({})->outcome, PushOutcome::kApplied);
  EXPECT_EQ(Push({})->outcome, PushOutcome::kApplied);
  EXPECT_EQ(Push({.worker_id = 4})->outcome, PushOutcome::kApplied);
  EXPECT_EQ(Push({.worker_id = 4})->outcome, PushOutcome::kApplied);
  EXPECT_EQ(Value(), -4.0f);
  EXPECT_EQ(e_->counters().applied_keys, 0);
}

TEST_F(ExactlyOnce, ConcurrentCopiesApplyOnce) {
  constexpr int kThreads = 8;
  std::atomic<int> applied{0}, duplicates{0};
  absl::Barrier* start = new absl::Barrier(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      if (start->Block()) delete start;
      auto r = Push({.worker_id = 9, .step_id = 1, .closure_id = 77});
      ASSERT_TRUE(r.ok());
      (r->outcome == PushOutcome::kApplied ? applied : duplicates)++;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(applied.load(), 1);
  EXPECT_EQ(duplicates.load(), kThreads - 1);
  EXPECT_EQ(Value(), -1.0f);
  EXPECT_EQ(e_->counters().duplicate_pushes, kThreads - 1);
}

}  // namespace
}  // namespace plexus::ps
