#include "coordinator/state/state_store.h"

#include <string>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "tests/util/test_env.h"

namespace plexus::coordinator::state {
namespace {

using membership::Membership;
using membership::MembershipOptions;
using membership::RegisterRequest;
using membership::Registration;
using scheduling::JobSpec;
using scheduling::Scheduler;
using scheduling::SchedulerOptions;
using scheduling::StepLoop;

TEST(StateStoreTest, EpochGrowsAcrossOpens) {
  testing::TempDir dir;
  {
    absl::StatusOr<std::unique_ptr<StateStore>> store =
        StateStore::Open(dir.Sub("state"));
    ASSERT_TRUE(store.ok()) << store.status();
    EXPECT_EQ(*(*store)->Epoch(), 0u);
    EXPECT_EQ(*(*store)->BumpEpoch(), 1u);
    EXPECT_FALSE((*store)->LoadMembership()->has_value());
    EXPECT_FALSE((*store)->LoadScheduler()->has_value());
  }
  absl::StatusOr<std::unique_ptr<StateStore>> again =
      StateStore::Open(dir.Sub("state"));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*(*again)->BumpEpoch(), 2u);
  EXPECT_EQ(*(*again)->Epoch(), 2u);
}

TEST(StateStoreTest, SecondOpenOfTheSameFolderFails) {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<StateStore>> first =
      StateStore::Open(dir.Sub("state"));
  ASSERT_TRUE(first.ok());
  absl::StatusOr<std::unique_ptr<StateStore>> second =
      StateStore::Open(dir.Sub("state"));
  EXPECT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable)
      << second.status();
}

// A coordinator runs a job halfway, saves, "crashes"; a new one opens the
// store, bumps the epoch, restores and finishes the job with the same workers
// (their ids and incarnations survive).
TEST(StateStoreTest, RestartedCoordinatorContinuesTheJob) {
  testing::TempDir dir;
  FakeClock clock;
  Registration worker;
  uint64_t running_closure = 0;
  uint32_t running_attempt = 0;
  {
    std::unique_ptr<StateStore> store = *StateStore::Open(dir.Sub("state"));
    uint64_t epoch = *store->BumpEpoch();
    Membership membership({.coordinator_epoch = epoch}, &clock);
    Scheduler scheduler({}, &clock);
    RegisterRequest req;
    req.task_index = 0;
    req.step_functions = {"train"};
    worker = *membership.Register(req);
    ASSERT_TRUE(
        scheduler.AddWorker(worker.worker_id, worker.incarnation, {"train"})
            .ok());
    JobSpec spec;
    spec.job_id = "job";
    spec.work = StepLoop{.function_name = "train", .num_steps = 3};
    ASSERT_TRUE(scheduler.SubmitJob(spec).ok());
    scheduling::Task t =
        *scheduler.NextTask(worker.worker_id, worker.incarnation, clock.Now())
             ->task;
    ASSERT_TRUE(scheduler
                    .ReportResult(worker.worker_id, worker.incarnation,
                                  {.closure_id = t.closure_id,
                                   .attempt = t.attempt,
                                   .result = "step1"})
                    .ok());
    scheduling::Task t2 =
        *scheduler.NextTask(worker.worker_id, worker.incarnation, clock.Now())
             ->task;
    running_closure = t2.closure_id;
    running_attempt = t2.attempt;
    ASSERT_TRUE(store->Save(membership.Snapshot(), scheduler.Snapshot()).ok());
  }  // the coordinator dies

  std::unique_ptr<StateStore> store = *StateStore::Open(dir.Sub("state"));
  uint64_t epoch = *store->BumpEpoch();
  EXPECT_EQ(epoch, 2u);
  absl::StatusOr<std::optional<membership::MembershipSnapshot>> m =
      store->LoadMembership();
  absl::StatusOr<std::optional<scheduling::SchedulerSnapshot>> s =
      store->LoadScheduler();
  ASSERT_TRUE(m.ok() && m->has_value()) << m.status();
  ASSERT_TRUE(s.ok() && s->has_value()) << s.status();
  std::unique_ptr<Membership> membership =
      *Membership::Restore(**m, {.coordinator_epoch = epoch}, &clock);
  std::unique_ptr<Scheduler> scheduler =
      *Scheduler::Restore(**s, SchedulerOptions{}, &clock);
  EXPECT_EQ(membership->coordinator_epoch(), 2u);
  // The live worker keeps its identity and reconnects.
  ASSERT_TRUE(membership->IsCurrent(worker.worker_id, worker.incarnation));
  for (const membership::ProcessRecord& p : membership->List()) {
    ASSERT_TRUE(
        scheduler->AddWorker(p.worker_id, p.incarnation, p.step_functions)
            .ok());
  }
  // Its report of the step it kept running is accepted.
  absl::StatusOr<scheduling::ReportDisposition> d = scheduler->ReportResult(
      worker.worker_id, worker.incarnation,
      {.closure_id = running_closure, .attempt = running_attempt});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, scheduling::ReportDisposition::kAccepted);
  scheduling::Task last =
      *scheduler->NextTask(worker.worker_id, worker.incarnation, clock.Now())
           ->task;
  EXPECT_EQ(last.step_id, 3u);
  ASSERT_TRUE(scheduler
                  ->ReportResult(
                      worker.worker_id, worker.incarnation,
                      {.closure_id = last.closure_id, .attempt = last.attempt})
                  .ok());
  absl::StatusOr<scheduling::JobStatus> joined =
      scheduler->Join("job", clock.Now());
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->closures_succeeded, 3u);
  EXPECT_EQ(joined->completed_through_step_id, 3u);
}

}  // namespace
}  // namespace plexus::coordinator::state
