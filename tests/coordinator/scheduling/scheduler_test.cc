#include "coordinator/scheduling/scheduler.h"

#include <atomic>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/synchronization/notification.h"
#include "common/clock.h"

namespace plexus::coordinator::scheduling {
namespace {

using ::testing::HasSubstr;

// Bound for waits a test expects to be cut short by an event (a real-time
// guard: the fake clock does not move by itself).
constexpr absl::Duration kGuard = absl::Seconds(30);

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest() {
    scheduler_ = std::make_unique<Scheduler>(Options(), &clock_);
  }

  static SchedulerOptions Options() {
    SchedulerOptions o;
    o.no_worker_timeout = absl::Seconds(60);
    o.max_attempts = 3;
    return o;
  }

  JobSpec Loop(std::string id, uint64_t steps, std::string fn = "train") {
    JobSpec spec;
    spec.job_id = std::move(id);
    spec.work = StepLoop{.function_name = std::move(fn), .num_steps = steps};
    return spec;
  }

  // NextTask that does not wait.
  NextTaskResult Poll(uint64_t worker, uint64_t incarnation) {
    absl::StatusOr<NextTaskResult> r =
        scheduler_->NextTask(worker, incarnation, clock_.Now());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : NextTaskResult{};
  }

  ReportDisposition Succeed(uint64_t worker, uint64_t incarnation,
                            const Task& task, std::string result = "") {
    absl::StatusOr<ReportDisposition> d =
        scheduler_->ReportResult(worker, incarnation,
                                 {.closure_id = task.closure_id,
                                  .attempt = task.attempt,
                                  .result = std::move(result)});
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : ReportDisposition::kDuplicate;
  }

  ReportDisposition Fail(uint64_t worker, uint64_t incarnation,
                         const Task& task, absl::Status error) {
    absl::StatusOr<ReportDisposition> d =
        scheduler_->ReportResult(worker, incarnation,
                                 {.closure_id = task.closure_id,
                                  .attempt = task.attempt,
                                  .error = std::move(error)});
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : ReportDisposition::kDuplicate;
  }

  FakeClock clock_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, StepLoopRunsEveryStepAndJoinSucceeds) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  absl::StatusOr<SubmitResult> job = scheduler_->SubmitJob(Loop("j", 3));
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_TRUE(job->created);
  EXPECT_TRUE(job->closure_ids.empty());
  for (uint64_t step = 1; step <= 3; ++step) {
    NextTaskResult next = Poll(1, 10);
    ASSERT_TRUE(next.task.has_value());
    EXPECT_EQ(next.task->step_id, step);
    EXPECT_EQ(next.task->attempt, 1u);
    EXPECT_EQ(next.task->function_name, "train");
    EXPECT_EQ(next.task->job_id, "j");
    EXPECT_EQ(Succeed(1, 10, *next.task), ReportDisposition::kAccepted);
  }
  absl::StatusOr<JobStatus> joined = scheduler_->Join("j", clock_.Now());
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->state, JobState::kSucceeded);
  EXPECT_EQ(joined->closures_total, 3u);
  EXPECT_EQ(joined->closures_succeeded, 3u);
  EXPECT_EQ(joined->completed_through_step_id, 3u);
  EXPECT_EQ(joined->requeues, 0u);
  EXPECT_EQ(Poll(1, 10).no_task_reason, NoTaskReason::kNoJob);
}

TEST_F(SchedulerTest, ReplicasPerStep) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  JobSpec spec = Loop("j", 2);
  std::get<StepLoop>(spec.work).replicas_per_step = 2;
  std::get<StepLoop>(spec.work).first_step_id = 7;
  ASSERT_TRUE(scheduler_->SubmitJob(spec).ok());
  std::vector<std::pair<uint64_t, uint32_t>> seen;
  for (int i = 0; i < 4; ++i) {
    NextTaskResult next = Poll(1, 10);
    ASSERT_TRUE(next.task.has_value());
    EXPECT_EQ(next.task->replicas_per_step, 2u);
    seen.emplace_back(next.task->step_id, next.task->replica_index);
    Succeed(1, 10, *next.task);
  }
  EXPECT_EQ(seen, (std::vector<std::pair<uint64_t, uint32_t>>{
                      {7, 0}, {7, 1}, {8, 0}, {8, 1}}));
  EXPECT_EQ(scheduler_->GetJobStatus("j")->completed_through_step_id, 8u);
}

TEST_F(SchedulerTest, ExplicitClosuresCarryArgsAndResults) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"f", "g"}).ok());
  JobSpec spec;
  spec.job_id = "list";
  spec.work =
      std::vector<ClosureSpec>{{"f", "a1", 0}, {"g", "a2", 5}, {"f", "", 0}};
  absl::StatusOr<SubmitResult> job = scheduler_->SubmitJob(spec);
  ASSERT_TRUE(job.ok());
  ASSERT_EQ(job->closure_ids.size(), 3u);
  std::vector<uint64_t> steps;
  for (int i = 0; i < 3; ++i) {
    NextTaskResult next = Poll(1, 10);
    ASSERT_TRUE(next.task.has_value());
    EXPECT_EQ(next.task->closure_id, job->closure_ids[i]);
    steps.push_back(next.task->step_id);
    Succeed(1, 10, *next.task, "r-" + next.task->args);
  }
  EXPECT_EQ(steps, (std::vector<uint64_t>{1, 5, 6}));
  absl::StatusOr<ClosureResult> r =
      scheduler_->Fetch(job->closure_ids[1], clock_.Now());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->state, ClosureState::kSucceeded);
  EXPECT_EQ(r->result, "r-a2");
  EXPECT_EQ(r->step_id, 5u);
  EXPECT_EQ(r->attempts, 1u);
  EXPECT_EQ(r->job_id, "list");
}

TEST_F(SchedulerTest, SubmitIsIdempotentAndValidates) {
  absl::StatusOr<SubmitResult> a = scheduler_->SubmitJob(Loop("j", 3));
  absl::StatusOr<SubmitResult> b = scheduler_->SubmitJob(Loop("j", 3));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(b->created);
  EXPECT_EQ(scheduler_->GetJobStatus("j")->closures_total, 3u);
  EXPECT_EQ(scheduler_->SubmitJob(Loop("j", 4)).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(scheduler_->SubmitJob(Loop("j/..", 1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->SubmitJob(Loop("k", 0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->SubmitJob(Loop("k", 1, "")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->SubmitJob(Loop("k", uint64_t{1} << 40)).status().code(),
            absl::StatusCode::kInvalidArgument);
  JobSpec unnamed;
  absl::StatusOr<SubmitResult> c = scheduler_->SubmitJob(unnamed);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->job_id, "job-1");
  EXPECT_EQ(scheduler_->GetJobStatus("")->job_id, "job-1");
  EXPECT_EQ(scheduler_->GetJobStatus("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->Join("nope", clock_.Now()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->Fetch(999, clock_.Now()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->Schedule("nope", {"f", "", 0}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(scheduler_->Cancel("nope", "").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, InteractiveJobScheduleJoinScheduleAgain) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"f"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(JobSpec{.job_id = "i"}).ok());
  EXPECT_TRUE(scheduler_->Join("i", clock_.Now()).ok());  // nothing to wait for
  absl::StatusOr<Scheduled> s = scheduler_->Schedule("i", {"f", "x", 0});
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->step_id, 1u);
  NextTaskResult next = Poll(1, 10);
  ASSERT_TRUE(next.task.has_value());
  EXPECT_EQ(next.task->closure_id, s->closure_id);
  Succeed(1, 10, *next.task, "out");
  EXPECT_EQ(scheduler_->Join("i", clock_.Now())->state, JobState::kSucceeded);
  absl::StatusOr<Scheduled> s2 = scheduler_->Schedule("i", {"f", "", 0});
  ASSERT_TRUE(s2.ok());
  EXPECT_EQ(s2->step_id, 2u);
  EXPECT_EQ(scheduler_->GetJobStatus("i")->state, JobState::kRunning);
  EXPECT_EQ(scheduler_->Join("i", clock_.Now()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(SchedulerTest, NextTaskReasonsWhenThereIsNoTask) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"eval"}).ok());
  NextTaskResult r = Poll(1, 10);
  EXPECT_FALSE(r.task.has_value());
  EXPECT_EQ(r.no_task_reason, NoTaskReason::kNoJob);
  EXPECT_GT(r.retry_after, absl::ZeroDuration());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 1)).ok());
  EXPECT_EQ(Poll(1, 10).no_task_reason, NoTaskReason::kQueueEmpty);
  ASSERT_TRUE(scheduler_->AddWorker(2, 20, {"train"}).ok());
  scheduler_->Pause("checkpoint");
  EXPECT_EQ(Poll(2, 20).no_task_reason, NoTaskReason::kPaused);
  scheduler_->Resume();
  ASSERT_TRUE(scheduler_->DrainWorker(2, 20).ok());
  EXPECT_EQ(Poll(2, 20).no_task_reason, NoTaskReason::kDraining);
  EXPECT_EQ(scheduler_->NextTask(3, 30, clock_.Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SchedulerTest, WaitingWorkerIsWokenBySchedule) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"f"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(JobSpec{.job_id = "i"}).ok());
  absl::StatusOr<NextTaskResult> got;
  std::thread worker(
      [&] { got = scheduler_->NextTask(1, 10, clock_.Now() + kGuard); });
  absl::StatusOr<Scheduled> s = scheduler_->Schedule("i", {"f", "", 0});
  worker.join();
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->task.has_value());
  EXPECT_EQ(got->task->closure_id, s->closure_id);
}

TEST_F(SchedulerTest, WaitingWorkerTimesOutOnTheInjectedClock) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"f"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 1, "other")).ok());
  absl::StatusOr<NextTaskResult> got;
  absl::Time deadline = clock_.Now() + absl::Seconds(10);
  std::thread worker([&] { got = scheduler_->NextTask(1, 10, deadline); });
  clock_.Advance(absl::Seconds(10));
  scheduler_->Tick();
  worker.join();
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->no_task_reason, NoTaskReason::kQueueEmpty);
}

TEST_F(SchedulerTest, LostResponseRedeliversTheSameTask) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 2)).ok());
  NextTaskResult a = Poll(1, 10);
  NextTaskResult b = Poll(1, 10);
  ASSERT_TRUE(a.task && b.task);
  EXPECT_EQ(a.task->closure_id, b.task->closure_id);
  EXPECT_EQ(a.task->attempt, b.task->attempt);
}

TEST_F(SchedulerTest, DeadWorkersClosureRunsElsewhereAndZombieIsRefused) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->AddWorker(2, 20, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 2)).ok());
  Task t1 = *Poll(1, 10).task;
  Task t2 = *Poll(2, 20).task;
  EXPECT_EQ(scheduler_->RemoveWorker(1, 999, "stale"), std::vector<uint64_t>{});
  EXPECT_EQ(scheduler_->RemoveWorker(1, 10, "no heartbeat for 15s"),
            std::vector<uint64_t>{t1.closure_id});
  Succeed(2, 20, t2);
  NextTaskResult retry = Poll(2, 20);
  ASSERT_TRUE(retry.task.has_value());
  EXPECT_EQ(retry.task->closure_id, t1.closure_id);
  EXPECT_EQ(retry.task->attempt, 2u);
  // The zombie's late report is refused.
  absl::StatusOr<ReportDisposition> late = scheduler_->ReportResult(
      1, 10, {.closure_id = t1.closure_id, .attempt = 1});
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Succeed(2, 20, *retry.task), ReportDisposition::kAccepted);
  absl::StatusOr<JobStatus> done = scheduler_->Join("j", clock_.Now());
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(done->requeues, 1u);
  EXPECT_EQ(done->closures_succeeded, 2u);
}

TEST_F(SchedulerTest, RestartedWorkerGetsNewWorkUnderItsNewIncarnation) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 1)).ok());
  Task t = *Poll(1, 10).task;
  ASSERT_TRUE(scheduler_->AddWorker(1, 11, {"train"}).ok());
  EXPECT_EQ(scheduler_->AddWorker(1, 10, {"train"}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(scheduler_->NextTask(1, 10, clock_.Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  NextTaskResult again = Poll(1, 11);
  ASSERT_TRUE(again.task.has_value());
  EXPECT_EQ(again.task->closure_id, t.closure_id);
  EXPECT_EQ(again.task->attempt, 2u);
}

TEST_F(SchedulerTest, RetryableErrorRequeuesPreferringAnotherWorker) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 1)).ok());
  Task t = *Poll(1, 10).task;
  ASSERT_TRUE(scheduler_->AddWorker(2, 20, {"train"}).ok());
  EXPECT_EQ(Fail(1, 10, t, absl::UnavailableError("PS shard 1 unreachable")),
            ReportDisposition::kRequeued);
  // Worker 2 is idle and can run it: worker 1 is passed over.
  EXPECT_FALSE(Poll(1, 10).task.has_value());
  NextTaskResult r = Poll(2, 20);
  ASSERT_TRUE(r.task.has_value());
  EXPECT_EQ(r.task->attempt, 2u);
  // With no other worker, the same one gets it again.
  EXPECT_EQ(Fail(2, 20, *r.task, absl::AbortedError("conflict")),
            ReportDisposition::kRequeued);
  scheduler_->RemoveWorker(1, 10, "gone", /*failure=*/false);
  NextTaskResult r2 = Poll(2, 20);
  ASSERT_TRUE(r2.task.has_value());
  EXPECT_EQ(r2.task->attempt, 3u);
}

TEST_F(SchedulerTest, TooManyFailedAttemptsFailTheJob) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 2)).ok());
  Task t = *Poll(1, 10).task;
  EXPECT_EQ(Fail(1, 10, t, absl::UnavailableError("x")),
            ReportDisposition::kRequeued);
  t = *Poll(1, 10).task;
  EXPECT_EQ(Fail(1, 10, t, absl::DeadlineExceededError("y")),
            ReportDisposition::kRequeued);
  t = *Poll(1, 10).task;
  EXPECT_EQ(t.attempt, 3u);
  EXPECT_EQ(Fail(1, 10, t, absl::UnavailableError("z")),
            ReportDisposition::kFailed);
  absl::StatusOr<JobStatus> joined = scheduler_->Join("j", clock_.Now());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(joined.status().message()),
              HasSubstr("failed 3 times"));
}

TEST_F(SchedulerTest, HandBackIsNotAFailure) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 1)).ok());
  for (int i = 0; i < 5; ++i) {  // more than max_attempts
    Task t = *Poll(1, 10).task;
    absl::StatusOr<ReportDisposition> d =
        scheduler_->ReportResult(1, 10,
                                 {.closure_id = t.closure_id,
                                  .attempt = t.attempt,
                                  .handed_back = true});
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(*d, ReportDisposition::kRequeued);
  }
  Task t = *Poll(1, 10).task;
  EXPECT_EQ(t.attempt, 6u);
  EXPECT_EQ(Succeed(1, 10, t), ReportDisposition::kAccepted);
  EXPECT_EQ(scheduler_->GetJobStatus("j")->requeues, 5u);
}

TEST_F(SchedulerTest, PermanentErrorFailsClosureAndJob) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 3)).ok());
  Task t = *Poll(1, 10).task;
  EXPECT_EQ(Fail(1, 10, t, absl::InvalidArgumentError("shape mismatch")),
            ReportDisposition::kFailed);
  absl::StatusOr<JobStatus> joined = scheduler_->Join("j", clock_.Now());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(joined.status().message()),
              HasSubstr("shape mismatch"));
  EXPECT_THAT(std::string(joined.status().message()), HasSubstr("step 1"));
  absl::StatusOr<ClosureResult> failed =
      scheduler_->Fetch(t.closure_id, clock_.Now());
  EXPECT_EQ(failed->state, ClosureState::kFailed);
  EXPECT_EQ(failed->error.code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<JobStatus> status = scheduler_->GetJobStatus("j");
  EXPECT_EQ(status->state, JobState::kFailed);
  EXPECT_EQ(status->closures_failed, 1u);
  EXPECT_EQ(status->closures_cancelled, 2u);
  EXPECT_EQ(Poll(1, 10).no_task_reason, NoTaskReason::kNoJob);
  EXPECT_EQ(scheduler_->Schedule("j", {"train", "", 0}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SchedulerTest, DuplicateReportsAreIgnored) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 2)).ok());
  Task t = *Poll(1, 10).task;
  EXPECT_EQ(Succeed(1, 10, t, "first"), ReportDisposition::kAccepted);
  EXPECT_EQ(Succeed(1, 10, t, "second"), ReportDisposition::kDuplicate);
  EXPECT_EQ(Fail(1, 10, t, absl::InternalError("late")),
            ReportDisposition::kDuplicate);
  EXPECT_EQ(scheduler_->Fetch(t.closure_id, clock_.Now())->result, "first");
  absl::StatusOr<ReportDisposition> unknown =
      scheduler_->ReportResult(1, 10, {.closure_id = 999, .attempt = 1});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SchedulerTest, CancelDropsQueuedAndDiscardsRunning) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 3)).ok());
  Task t = *Poll(1, 10).task;
  absl::StatusOr<JobStatus> c = scheduler_->Cancel("j", "user asked");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->state, JobState::kCancelled);
  EXPECT_EQ(c->closures_cancelled, 3u);
  EXPECT_EQ(scheduler_->Cancel("j", "again")->state, JobState::kCancelled);
  EXPECT_EQ(Succeed(1, 10, t), ReportDisposition::kDuplicate);
  absl::StatusOr<JobStatus> joined = scheduler_->Join("j", clock_.Now());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kCancelled);
  EXPECT_THAT(std::string(joined.status().message()), HasSubstr("user asked"));
  EXPECT_EQ(scheduler_->Fetch(t.closure_id, clock_.Now())->state,
            ClosureState::kCancelled);
  // The worker is free for other jobs.
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("k", 1)).ok());
  EXPECT_EQ(Poll(1, 10).task->job_id, "k");
}

TEST_F(SchedulerTest, FailJobWithRestartBudgetError) {
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 3)).ok());
  ASSERT_TRUE(
      scheduler_
          ->FailJob("j", absl::ResourceExhaustedError(
                             "worker 1 (id 2) exceeded its restart budget"))
          .ok());
  absl::StatusOr<JobStatus> joined = scheduler_->Join("j", clock_.Now());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(joined.status().message()), HasSubstr("worker 1"));
  EXPECT_TRUE(scheduler_->RunningJobIds().empty());
}

TEST_F(SchedulerTest, JoinIsUnavailableWhenNoWorkerIsLeftForTheBound) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 2)).ok());
  Task t = *Poll(1, 10).task;
  scheduler_->RemoveWorker(1, 10, "killed");
  clock_.Advance(absl::Seconds(59));
  EXPECT_EQ(scheduler_->Join("j", clock_.Now()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  // A waiting Join gives up at the bound, not at its (later) deadline.
  absl::StatusOr<JobStatus> joined;
  std::thread joiner(
      [&] { joined = scheduler_->Join("j", clock_.Now() + absl::Hours(1)); });
  clock_.Advance(absl::Seconds(1));
  scheduler_->Tick();
  joiner.join();
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(joined.status().message()),
              HasSubstr("no live worker"));
  EXPECT_EQ(scheduler_->GetJobStatus("j")->workers_alive, 0u);
  // The job is not failed: a new worker finishes it.
  ASSERT_TRUE(scheduler_->AddWorker(1, 11, {"train"}).ok());
  for (int i = 0; i < 2; ++i) Succeed(1, 11, *Poll(1, 11).task);
  EXPECT_TRUE(scheduler_->Join("j", clock_.Now()).ok());
  (void)t;
}

TEST_F(SchedulerTest, WorkersWithoutTheFunctionDoNotCount) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"eval"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 1)).ok());
  clock_.Advance(absl::Seconds(60));
  EXPECT_EQ(scheduler_->Join("j", clock_.Now()).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(SchedulerTest, CompletedThroughStepFollowsTheLowestUnfinishedStep) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->AddWorker(2, 20, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 3)).ok());
  Task s1 = *Poll(1, 10).task;
  Task s2 = *Poll(2, 20).task;
  Succeed(2, 20, s2);
  EXPECT_EQ(scheduler_->GetJobStatus("j")->completed_through_step_id, 0u);
  Succeed(1, 10, s1);
  EXPECT_EQ(scheduler_->GetJobStatus("j")->completed_through_step_id, 2u);
}

TEST_F(SchedulerTest, FetchWaitsForTheResult) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"f"}).ok());
  JobSpec spec;
  spec.job_id = "l";
  spec.work = std::vector<ClosureSpec>{{"f", "", 0}};
  uint64_t id = scheduler_->SubmitJob(spec)->closure_ids[0];
  EXPECT_EQ(scheduler_->Fetch(id, clock_.Now())->state, ClosureState::kQueued);
  absl::StatusOr<ClosureResult> fetched;
  std::thread fetcher(
      [&] { fetched = scheduler_->Fetch(id, clock_.Now() + kGuard); });
  Task t = *Poll(1, 10).task;
  Succeed(1, 10, t, "value");
  fetcher.join();
  ASSERT_TRUE(fetched.ok());
  EXPECT_EQ(fetched->state, ClosureState::kSucceeded);
  EXPECT_EQ(fetched->result, "value");
}

// Several worker threads drain a step loop; every step is accepted exactly
// once and Join returns when the last one is in.
TEST_F(SchedulerTest, ConcurrentWorkersKeepBusyAndFinishEveryStep) {
  constexpr int kWorkers = 4;
  constexpr uint64_t kSteps = 400;
  for (int w = 1; w <= kWorkers; ++w) {
    ASSERT_TRUE(scheduler_->AddWorker(w, w * 10, {"train"}).ok());
  }
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  std::vector<std::vector<uint64_t>> steps(kWorkers + 1);
  for (int w = 1; w <= kWorkers; ++w) {
    threads.emplace_back([&, w] {
      while (true) {
        absl::StatusOr<NextTaskResult> r =
            scheduler_->NextTask(w, w * 10, clock_.Now() + kGuard);
        if (!r.ok() || !r->task.has_value()) return;  // drained
        steps[w].push_back(r->task->step_id);
        absl::StatusOr<ReportDisposition> d = scheduler_->ReportResult(
            w, w * 10,
            {.closure_id = r->task->closure_id, .attempt = r->task->attempt});
        if (d.ok() && *d == ReportDisposition::kAccepted) ++accepted;
      }
    });
  }
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", kSteps)).ok());
  absl::StatusOr<JobStatus> joined =
      scheduler_->Join("j", clock_.Now() + kGuard);
  for (int w = 1; w <= kWorkers; ++w) {
    ASSERT_TRUE(scheduler_->DrainWorker(w, w * 10).ok());
  }
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(joined->closures_succeeded, kSteps);
  EXPECT_EQ(joined->completed_through_step_id, kSteps);
  EXPECT_EQ(accepted.load(), static_cast<int>(kSteps));
  std::set<uint64_t> all;
  size_t total = 0;
  for (const auto& s : steps) {
    all.insert(s.begin(), s.end());
    total += s.size();
  }
  EXPECT_EQ(total, kSteps);
  EXPECT_EQ(all.size(), kSteps);
}

// A worker dies holding a closure while others run; its closure is re-run
// elsewhere and the job completes with every step exactly once.
TEST_F(SchedulerTest, ConcurrentWorkersSurviveADeath) {
  constexpr uint64_t kSteps = 100;
  for (int w = 1; w <= 3; ++w) {
    ASSERT_TRUE(scheduler_->AddWorker(w, w * 10, {"train"}).ok());
  }
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", kSteps)).ok());
  // Worker 3 takes one closure and "crashes" without reporting.
  Task lost = *Poll(3, 30).task;
  std::atomic<int> accepted{0};
  absl::Notification ran_some;
  std::vector<std::thread> threads;
  for (int w = 1; w <= 2; ++w) {
    threads.emplace_back([&, w] {
      while (true) {
        absl::StatusOr<NextTaskResult> r =
            scheduler_->NextTask(w, w * 10, clock_.Now() + kGuard);
        if (!r.ok() || !r->task.has_value()) return;
        absl::StatusOr<ReportDisposition> d = scheduler_->ReportResult(
            w, w * 10,
            {.closure_id = r->task->closure_id, .attempt = r->task->attempt});
        // Exactly one thread sees the count reach 10.
        if (d.ok() && *d == ReportDisposition::kAccepted && ++accepted == 10) {
          ran_some.Notify();
        }
      }
    });
  }
  ASSERT_TRUE(ran_some.WaitForNotificationWithTimeout(kGuard));
  EXPECT_EQ(scheduler_->RemoveWorker(3, 30, "SIGKILL"),
            std::vector<uint64_t>{lost.closure_id});
  absl::StatusOr<JobStatus> joined =
      scheduler_->Join("j", clock_.Now() + kGuard);
  for (int w = 1; w <= 2; ++w)
    ASSERT_TRUE(scheduler_->DrainWorker(w, w * 10).ok());
  for (std::thread& t : threads) t.join();
  ASSERT_TRUE(joined.ok()) << joined.status();
  EXPECT_EQ(accepted.load(), static_cast<int>(kSteps));
  EXPECT_EQ(joined->requeues, 1u);
  absl::StatusOr<ClosureResult> r =
      scheduler_->Fetch(lost.closure_id, clock_.Now());
  EXPECT_EQ(r->state, ClosureState::kSucceeded);
  EXPECT_EQ(r->attempts, 2u);
}

TEST_F(SchedulerTest, SnapshotRestoreRequeuesRunningAndAcceptsTheirReports) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 3)).ok());
  Task done = *Poll(1, 10).task;
  Succeed(1, 10, done, "r1");
  Task running = *Poll(1, 10).task;
  SchedulerSnapshot snap = scheduler_->Snapshot();
  absl::StatusOr<std::unique_ptr<Scheduler>> restored =
      Scheduler::Restore(snap, Options(), &clock_);
  ASSERT_TRUE(restored.ok()) << restored.status();
  Scheduler& s = **restored;
  absl::StatusOr<JobStatus> status = s.GetJobStatus("j");
  EXPECT_EQ(status->closures_succeeded, 1u);
  EXPECT_EQ(status->closures_queued, 2u);
  EXPECT_EQ(status->completed_through_step_id, 1u);
  EXPECT_EQ(s.Fetch(done.closure_id, clock_.Now())->result, "r1");
  // The worker that kept running reconnects and reports: accepted.
  ASSERT_TRUE(s.AddWorker(1, 10, {"train"}).ok());
  absl::StatusOr<ReportDisposition> d = s.ReportResult(
      1, 10, {.closure_id = running.closure_id, .attempt = running.attempt});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(*d, ReportDisposition::kAccepted);
  absl::StatusOr<NextTaskResult> next = s.NextTask(1, 10, clock_.Now());
  ASSERT_TRUE(next.ok() && next->task.has_value());
  EXPECT_EQ(next->task->step_id, 3u);
  // New closures never reuse ids.
  EXPECT_GT(next->task->closure_id, running.closure_id);
  EXPECT_FALSE(s.SubmitJob(Loop("j", 3))->created);
}

}  // namespace
}  // namespace plexus::coordinator::scheduling

namespace plexus::coordinator::scheduling {
namespace {

TEST_F(SchedulerTest, DispatchLimitHoldsBackLaterSteps) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 4)).ok());
  scheduler_->SetDispatchLimit(2);
  Succeed(1, 10, *Poll(1, 10).task);
  Succeed(1, 10, *Poll(1, 10).task);
  NextTaskResult held = Poll(1, 10);
  EXPECT_FALSE(held.task.has_value());
  EXPECT_EQ(held.no_task_reason, NoTaskReason::kPaused);
  EXPECT_EQ(scheduler_->GetJobStatus("j")->completed_through_step_id, 2u);
  scheduler_->SetDispatchLimit(std::nullopt);
  EXPECT_EQ(Poll(1, 10).task->step_id, 3u);
}

TEST_F(SchedulerTest, RequeueStepsAfterARestoreRerunsThemOnce) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->AddWorker(2, 20, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 4)).ok());
  for (int i = 0; i < 3; ++i) Succeed(1, 10, *Poll(1, 10).task);  // 1..3
  Task running = *Poll(2, 20).task;                               // step 4
  absl::StatusOr<uint64_t> n = scheduler_->RequeueStepsAfter("j", 1);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3u);
  absl::StatusOr<JobStatus> s = scheduler_->GetJobStatus("j");
  EXPECT_EQ(s->completed_through_step_id, 1u);
  EXPECT_EQ(s->closures_queued, 3u);
  // The attempt that ran against the pre-restore state does not count.
  EXPECT_EQ(Succeed(2, 20, running), ReportDisposition::kDuplicate);
  std::vector<uint64_t> steps;
  for (int i = 0; i < 3; ++i) {
    Task t = *Poll(1, 10).task;
    steps.push_back(t.step_id);
    EXPECT_EQ(Succeed(1, 10, t), ReportDisposition::kAccepted);
  }
  EXPECT_EQ(steps, (std::vector<uint64_t>{2, 3, 4}));
  absl::StatusOr<JobStatus> done = scheduler_->Join("j", clock_.Now());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->closures_succeeded, 4u);
  // A finished job runs again after a restore to an earlier step.
  EXPECT_EQ(*scheduler_->RequeueStepsAfter("j", 3), 1u);
  EXPECT_EQ(scheduler_->GetJobStatus("j")->state, JobState::kRunning);
  EXPECT_EQ(scheduler_->RequeueStepsAfter("nope", 1).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace plexus::coordinator::scheduling

namespace plexus::coordinator::scheduling {
namespace {

// Finding 4 of tests/fault/README.md: a coordinator dispatched a closure after
// its last save and died; its successor restores a checkpoint before that
// step. The attempt it never heard of ran against the pre-restore state:
// its report must not count, the successor's own attempt must.
TEST_F(SchedulerTest, RestoreFencesAttemptsOfAPreviousCoordinator) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->AddWorker(2, 20, {"train"}).ok());
  ASSERT_TRUE(scheduler_->SubmitJob(Loop("j", 2)).ok());
  Succeed(1, 10, *Poll(1, 10).task);                 // step 1
  SchedulerSnapshot saved = scheduler_->Snapshot();  // step 2 queued
  Task unknown = *Poll(2, 20).task;                  // after the save
  ASSERT_EQ(unknown.step_id, 2u);
  absl::StatusOr<std::unique_ptr<Scheduler>> restored =
      Scheduler::Restore(saved, Options(), &clock_);
  ASSERT_TRUE(restored.ok()) << restored.status();
  Scheduler& s = **restored;
  ASSERT_TRUE(s.AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(s.AddWorker(2, 20, {"train"}).ok());
  ASSERT_EQ(*s.RequeueStepsAfter("j", 1), 0u);  // nothing it knew ran
  absl::StatusOr<ReportDisposition> late = s.ReportResult(
      2, 20, {.closure_id = unknown.closure_id, .attempt = unknown.attempt});
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(*late, ReportDisposition::kDuplicate);
  absl::StatusOr<NextTaskResult> next = s.NextTask(1, 10, clock_.Now());
  ASSERT_TRUE(next.ok() && next->task.has_value());
  EXPECT_EQ(next->task->closure_id, unknown.closure_id);
  EXPECT_GT(next->task->attempt, unknown.attempt);
  absl::StatusOr<ReportDisposition> own = s.ReportResult(
      1, 10,
      {.closure_id = next->task->closure_id, .attempt = next->task->attempt});
  ASSERT_TRUE(own.ok()) << own.status();
  EXPECT_EQ(*own, ReportDisposition::kAccepted);
  EXPECT_EQ(s.GetJobStatus("j")->closures_succeeded, 2u);
}

TEST_F(SchedulerTest, ClosurePastItsTimeBudgetIsRequeued) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  ASSERT_TRUE(scheduler_->AddWorker(2, 20, {"train"}).ok());
  JobSpec spec = Loop("j", 1);
  spec.closure_timeout = absl::Seconds(10);
  ASSERT_TRUE(scheduler_->SubmitJob(spec).ok());
  absl::Time start = clock_.Now();
  Task slow = *Poll(1, 10).task;
  EXPECT_EQ(slow.time_budget, absl::Seconds(10));
  EXPECT_EQ(scheduler_->NextTimeout(), start + absl::Seconds(10));
  clock_.Advance(absl::Seconds(9));
  scheduler_->Tick();
  EXPECT_FALSE(Poll(2, 20).task.has_value());
  clock_.Advance(absl::Seconds(1));
  scheduler_->Tick();
  NextTaskResult retry = Poll(2, 20);
  ASSERT_TRUE(retry.task.has_value());
  EXPECT_EQ(retry.task->closure_id, slow.closure_id);
  EXPECT_EQ(retry.task->attempt, 2u);
  EXPECT_EQ(scheduler_->GetJobStatus("j")->requeues, 1u);
  // The slow attempt finishes first after all: its result wins.
  EXPECT_EQ(Succeed(1, 10, slow, "slow"), ReportDisposition::kAccepted);
  EXPECT_EQ(Succeed(2, 20, *retry.task, "fast"), ReportDisposition::kDuplicate);
  EXPECT_EQ(scheduler_->Fetch(slow.closure_id, clock_.Now())->result, "slow");
  EXPECT_EQ(scheduler_->NextTimeout(), absl::InfiniteFuture());
}

TEST_F(SchedulerTest, TimeBudgetFailuresCountTowardsMaxAttempts) {
  ASSERT_TRUE(scheduler_->AddWorker(1, 10, {"train"}).ok());
  JobSpec spec = Loop("j", 1);
  spec.closure_timeout = absl::Seconds(1);
  ASSERT_TRUE(scheduler_->SubmitJob(spec).ok());
  for (int i = 0; i < 3; ++i) {  // max_attempts is 3
    ASSERT_TRUE(Poll(1, 10).task.has_value());
    clock_.Advance(absl::Seconds(1));
    scheduler_->Tick();
  }
  absl::StatusOr<JobStatus> joined = scheduler_->Join("j", clock_.Now());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(joined.status().message()), HasSubstr("time budget"));
}

}  // namespace
}  // namespace plexus::coordinator::scheduling
