// The coordinator's logic modules wired together as the gRPC glue wires them
// (MiniCoordinator below is the reference for that wiring), driven through
// the worker-failure cases of FAULTS.md with a fake clock.
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/clock.h"
#include "coordinator/health/failure_detector.h"
#include "coordinator/membership/membership.h"
#include "coordinator/membership/names.h"
#include "coordinator/rendezvous/rendezvous.h"
#include "coordinator/scheduling/scheduler.h"

namespace plexus::coordinator {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

// What each RPC handler of the service does, minus the protos.
class MiniCoordinator {
 public:
  explicit MiniCoordinator(Clock* clock, int max_restarts = -1)
      : membership_(
            {.coordinator_epoch = 1, .max_restarts_per_worker = max_restarts},
            clock),
        health_({.suspect_timeout = absl::Seconds(5),
                 .dead_timeout = absl::Seconds(15)},
                clock),
        scheduler_({.no_worker_timeout = absl::Seconds(60)}, clock),
        rendezvous_({}, clock) {}

  // Register: identity, health tracking, dispatch, restart budget.
  membership::Registration Register(int task_index) {
    membership::RegisterRequest req;
    req.role = membership::Role::kWorker;
    req.task_index = task_index;
    req.hostname = "host-" + std::to_string(task_index);
    req.step_functions = {"train"};
    membership::Registration reg = *membership_.Register(req);
    if (reg.replaced_incarnation != 0) {
      Collect(rendezvous_.MemberDied(reg.worker_id, reg.replaced_incarnation));
    }
    health_.Track(reg.worker_id, reg.incarnation);
    EXPECT_TRUE(
        scheduler_.AddWorker(reg.worker_id, reg.incarnation, req.step_functions)
            .ok());
    if (!reg.budget_status.ok()) {
      for (const std::string& job : scheduler_.RunningJobIds()) {
        EXPECT_TRUE(scheduler_.FailJob(job, reg.budget_status).ok());
      }
    }
    return reg;
  }

  // Heartbeat: fencing first, then the detector.
  absl::Status Heartbeat(const membership::Registration& w) {
    absl::Status current = membership_.CheckCurrent(w.worker_id, w.incarnation);
    if (!current.ok()) return current;
    return health_.Heartbeat(w.worker_id, w.incarnation, {});
  }

  // The health loop: act on every transition.
  void PollHealth() {
    for (const health::HealthEvent& e : health_.Poll()) {
      if (e.to == health::Liveness::kDead) {
        membership_.MarkDead(e.worker_id, e.incarnation, e.reason);
        scheduler_.RemoveWorker(e.worker_id, e.incarnation, e.reason);
        Collect(rendezvous_.MemberDied(e.worker_id, e.incarnation));
      } else if (e.to == health::Liveness::kLeft) {
        membership_.MarkLeft(e.worker_id, e.incarnation, e.reason);
        scheduler_.RemoveWorker(e.worker_id, e.incarnation, e.reason,
                                /*failure=*/false);
      }
    }
    scheduler_.Tick();
  }

  // NextTask / ReportResult: fencing, then the scheduler.
  absl::StatusOr<scheduling::NextTaskResult> NextTask(
      const membership::Registration& w, absl::Time deadline) {
    absl::Status current = membership_.CheckCurrent(w.worker_id, w.incarnation);
    if (!current.ok()) return current;
    return scheduler_.NextTask(w.worker_id, w.incarnation, deadline);
  }
  absl::StatusOr<scheduling::ReportDisposition> Report(
      const membership::Registration& w, const scheduling::Task& t) {
    absl::Status current = membership_.CheckCurrent(w.worker_id, w.incarnation);
    if (!current.ok()) return current;
    return scheduler_.ReportResult(
        w.worker_id, w.incarnation,
        {.closure_id = t.closure_id, .attempt = t.attempt});
  }

  scheduling::Scheduler& scheduler() { return scheduler_; }
  rendezvous::Rendezvous& rendezvous() { return rendezvous_; }
  std::vector<rendezvous::ReformNotice>& notices() { return notices_; }

 private:
  void Collect(std::vector<rendezvous::ReformNotice> n) {
    notices_.insert(notices_.end(), n.begin(), n.end());
  }

  membership::Membership membership_;
  health::FailureDetector health_;
  scheduling::Scheduler scheduler_;
  rendezvous::Rendezvous rendezvous_;
  std::vector<rendezvous::ReformNotice> notices_;
};

scheduling::JobSpec Steps(uint64_t n) {
  scheduling::JobSpec spec;
  spec.job_id = "job";
  spec.work = scheduling::StepLoop{.function_name = "train", .num_steps = n};
  return spec;
}

class LogicTest : public ::testing::Test {
 protected:
  scheduling::Task Take(MiniCoordinator& c, const membership::Registration& w) {
    absl::StatusOr<scheduling::NextTaskResult> r = c.NextTask(w, clock_.Now());
    EXPECT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(r.ok() && r->task.has_value());
    return r.ok() && r->task ? *r->task : scheduling::Task{};
  }
  FakeClock clock_;
};

// F10: a worker stops past its dead timeout mid-step; its step runs elsewhere
// and the zombie's late report and heartbeat are refused; re-registered, it
// gets new work.
TEST_F(LogicTest, StuckWorkerIsDeclaredDeadAndItsStepRerunElsewhere) {
  MiniCoordinator c(&clock_);
  membership::Registration w0 = c.Register(0);
  membership::Registration w1 = c.Register(1);
  ASSERT_TRUE(c.scheduler().SubmitJob(Steps(3)).ok());
  scheduling::Task stuck = Take(c, w0);
  scheduling::Task t1 = Take(c, w1);
  ASSERT_TRUE(c.Report(w1, t1).ok());
  // w1 keeps heartbeating; w0 is silent.
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Seconds(4));
    ASSERT_TRUE(c.Heartbeat(w1).ok());
    c.PollHealth();
  }
  scheduling::Task rerun = Take(c, w1);
  EXPECT_EQ(rerun.closure_id, stuck.closure_id);
  EXPECT_EQ(rerun.attempt, 2u);
  // SIGCONT: the zombie's report and heartbeat are stale.
  absl::StatusOr<scheduling::ReportDisposition> late = c.Report(w0, stuck);
  EXPECT_EQ(late.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetReason(late.status()), ErrorReason::kStaleIncarnation);
  EXPECT_EQ(c.Heartbeat(w0).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(c.Report(w1, rerun).ok());
  membership::Registration back = c.Register(0);
  EXPECT_EQ(back.worker_id, w0.worker_id);
  EXPECT_GT(back.incarnation, w0.incarnation);
  scheduling::Task fresh = Take(c, back);
  EXPECT_EQ(fresh.step_id, 3u);
  ASSERT_TRUE(c.Report(back, fresh).ok());
  absl::StatusOr<scheduling::JobStatus> done =
      c.scheduler().Join("job", clock_.Now());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->closures_succeeded, 3u);
  EXPECT_EQ(done->requeues, 1u);
}

// F1 within budget and F5 past it: the job fails naming the worker.
TEST_F(LogicTest, RestartBudgetExceededFailsTheJobNamingTheWorker) {
  MiniCoordinator c(&clock_, /*max_restarts=*/2);
  ASSERT_TRUE(c.scheduler().SubmitJob(Steps(10)).ok());
  membership::Registration w = c.Register(3);
  for (int restart = 1; restart <= 2; ++restart) {
    (void)Take(c, w);  // killed mid-step, restarted at once
    w = c.Register(3);
    EXPECT_EQ(c.scheduler().GetJobStatus("job")->state,
              scheduling::JobState::kRunning);
  }
  w = c.Register(3);
  absl::StatusOr<scheduling::JobStatus> joined =
      c.scheduler().Join("job", clock_.Now());
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(joined.status().message()), HasSubstr("worker 3"));
  EXPECT_THAT(std::string(joined.status().message()), HasSubstr("host-3"));
}

// F6: the only worker dies and never returns: Join is UNAVAILABLE within the
// bound instead of waiting forever.
TEST_F(LogicTest, NoWorkerLeftMakesJoinUnavailable) {
  MiniCoordinator c(&clock_);
  membership::Registration w = c.Register(0);
  ASSERT_TRUE(c.scheduler().SubmitJob(Steps(2)).ok());
  (void)Take(c, w);
  clock_.Advance(absl::Seconds(15));
  c.PollHealth();
  EXPECT_EQ(c.scheduler().GetJobStatus("job")->workers_alive, 0u);
  clock_.Advance(absl::Seconds(60));
  absl::StatusOr<scheduling::JobStatus> joined =
      c.scheduler().Join("job", clock_.Now() + absl::Hours(1));
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kUnavailable);
}

// F17's coordinator side: a group member dies; survivors are told the new
// epoch and the dead rank; a replacement takes it.
TEST_F(LogicTest, GroupMemberDeathReformsTheGroup) {
  MiniCoordinator c(&clock_);
  membership::Registration w0 = c.Register(0);
  membership::Registration w1 = c.Register(1);
  rendezvous::Rendezvous& rdv = c.rendezvous();
  absl::StatusOr<rendezvous::GroupInfo> g0;
  std::thread t([&] {
    g0 = rdv.JoinGroup({.group = "ring",
                        .size = 2,
                        .worker_id = w0.worker_id,
                        .incarnation = w0.incarnation},
                       clock_.Now() + absl::Seconds(30));
  });
  absl::StatusOr<rendezvous::GroupInfo> g1 =
      rdv.JoinGroup({.group = "ring",
                     .size = 2,
                     .worker_id = w1.worker_id,
                     .incarnation = w1.incarnation},
                    clock_.Now() + absl::Seconds(30));
  t.join();
  ASSERT_TRUE(g0.ok() && g1.ok());
  // w1 dies.
  for (int i = 0; i < 4; ++i) {
    clock_.Advance(absl::Seconds(4));
    ASSERT_TRUE(c.Heartbeat(w0).ok());
    c.PollHealth();
  }
  ASSERT_EQ(c.notices().size(), 1u);
  EXPECT_EQ(c.notices()[0].new_epoch, 2u);
  EXPECT_THAT(c.notices()[0].failed_ranks, UnorderedElementsAre(g1->my_rank));
  EXPECT_THAT(c.notices()[0].survivors, UnorderedElementsAre(w0.worker_id));
  membership::Registration w2 = c.Register(2);
  std::thread t2([&] {
    g0 = rdv.JoinGroup({.group = "ring",
                        .size = 2,
                        .worker_id = w0.worker_id,
                        .incarnation = w0.incarnation},
                       clock_.Now() + absl::Seconds(30));
  });
  absl::StatusOr<rendezvous::GroupInfo> g2 =
      rdv.JoinGroup({.group = "ring",
                     .size = 2,
                     .worker_id = w2.worker_id,
                     .incarnation = w2.incarnation},
                    clock_.Now() + absl::Seconds(30));
  t2.join();
  ASSERT_TRUE(g0.ok() && g2.ok());
  EXPECT_EQ(g2->epoch, 2u);
  EXPECT_EQ(g2->my_rank, g1->my_rank);
}

}  // namespace
}  // namespace plexus::coordinator
