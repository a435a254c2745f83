// The coordinator and the worker runtime as real processes on 127.0.0.1,
// on the fault suite's harness (fault_cluster.h): a plexus-coordinator, PS
// shards and golden_worker processes. A job of N golden steps must end with
// every step applied exactly once: the variable equals the golden values bit
// for bit. Then the worker and coordinator faults of ../shared/FAULTS.md:
// F1, F2, F3, F4, F5, F6, F9, F10, F13 (moved here from
// tests/integration/coordinator_worker_test.cc).
//
// Timeouts are short (heartbeat 100 ms, suspect 600 ms, dead 1.5 s) so each
// case takes seconds; tests wait on conditions (job status, log lines,
// process exits), never on sleeps.
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "tests/fault/fault_cluster.h"
#include "tests/util/test_env.h"

namespace plexus::fault {
namespace {

using ::plexus::testing::TempDir;

class CoordinatorWorkerTest : public ::testing::Test {
 protected:
  void StartCluster(int num_ps, std::vector<std::string> extra = {}) {
    FaultClusterOptions o;
    o.root_dir = dir_.Sub("cluster");
    o.num_ps = num_ps;
    o.coordinator_flags = {"--no_worker_timeout_ms=3000"};
    o.coordinator_flags.insert(o.coordinator_flags.end(), extra.begin(),
                               extra.end());
    auto c = FaultCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    stub_ = cluster_->coordinator_stub();
  }

  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      LOG(INFO) << "logs of the failed test:" << cluster_->Logs();
    }
  }

  // Starts golden_worker with task index `index` (again, when it ran
  // before: the same slot, a new log).
  Proc* StartWorker(int index, std::vector<std::string> extra = {},
                    std::string failpoints = "") {
    absl::Status st = cluster_->StartWorker(index, extra, failpoints);
    EXPECT_TRUE(st.ok()) << st;
    for (int i = 0; i < cluster_->num_workers(); ++i) {
      if (cluster_->worker(i).index == index) return &cluster_->worker(i);
    }
    return nullptr;
  }

  absl::Status Submit(uint64_t steps, int64_t no_worker_timeout_ms = 0,
                      uint32_t max_restarts = 0) {
    return cluster_->Submit(steps, no_worker_timeout_ms, max_restarts);
  }
  absl::StatusOr<v1::JobStatus> Join(absl::Duration timeout) {
    return cluster_->Join(timeout);
  }
  absl::StatusOr<v1::GetJobStatusResponse> Status() {
    return cluster_->JobStatus();
  }
  uint64_t Succeeded() { return cluster_->Succeeded(); }

  std::vector<v1::ProcessInfo> Processes(bool include_dead = false) {
    v1::ListProcessesRequest req;
    req.set_include_dead(include_dead);
    v1::ListProcessesResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    EXPECT_TRUE(stub_->ListProcesses(&ctx, req, &resp).ok());
    return {resp.processes().begin(), resp.processes().end()};
  }

  // Starts plexus-coordinator again on its data folder and port (it must be
  // dead) and waits until it answers.
  void RestartCoordinator() {
    absl::Status st = cluster_->Restart(cluster_->coordinator());
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_TRUE(WaitFor([&] { return Status().ok(); }, absl::Seconds(30)))
        << ReadFile(cluster_->coordinator().log);
  }

  void ExpectJobSucceeded(uint64_t steps, absl::Duration timeout) {
    absl::Status st = cluster_->CheckJobGolden(steps, timeout);
    EXPECT_TRUE(st.ok()) << st;
  }

  // SIGTERM to the daemons: each drains and exits 0 within `grace`.
  void StopDaemons(absl::Duration grace) {
    std::vector<Proc*> daemons = {&cluster_->coordinator()};
    for (int i = 0; i < cluster_->num_ps(); ++i)
      daemons.push_back(&cluster_->ps(i));
    for (Proc* p : daemons) ASSERT_TRUE(p->process->Signal(SIGTERM).ok());
    for (Proc* p : daemons) {
      absl::StatusOr<int> code = p->process->Wait(grace);
      ASSERT_TRUE(code.ok()) << p->role << ": " << code.status();
      EXPECT_EQ(*code, 0) << p->role << " " << p->index;
    }
  }

  TempDir dir_;
  std::unique_ptr<FaultCluster> cluster_;
  v1::Coordinator::Stub* stub_ = nullptr;
};

TEST_F(CoordinatorWorkerTest, JobCompletesWithEveryStepAppliedOnce) {
  StartCluster(2);
  std::vector<Proc*> workers;
  for (int i = 0; i < 3; ++i) workers.push_back(StartWorker(i));
  ASSERT_TRUE(Submit(60).ok());
  ExpectJobSucceeded(60, absl::Seconds(60));
  std::vector<v1::ProcessInfo> procs = Processes();
  int alive_workers = 0;
  for (const auto& p : procs) {
    if (p.role() == v1::ROLE_WORKER) {
      ++alive_workers;
      EXPECT_EQ(p.restarts(), 0u);
      EXPECT_GT(p.last_heartbeat_unix_ms(), 0);
    }
  }
  EXPECT_EQ(alive_workers, 3);
  // The coordinator's metrics moved.
  httplib::Client http("127.0.0.1", cluster_->coordinator().admin_port);
  httplib::Result metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics) << "no /metrics answer";
  for (const char* name :
       {"plexus_coordinator_workers_alive 3",
        "plexus_coordinator_steps_dispatched_total 60",
        "plexus_coordinator_finished_total 60",
        "plexus_coordinator_requeued_total 0",
        "plexus_coordinator_restarts_total 0",
        "plexus_coordinator_dispatch_latency_seconds_count 60"}) {
    EXPECT_TRUE(absl::StrContains(metrics->body, name))
        << name << " missing from:\n"
        << metrics->body;
  }
  // SIGTERM between steps: each worker leaves cleanly with 143.
  for (Proc* w : workers) {
    ASSERT_TRUE(w->process->Signal(SIGTERM).ok());
    absl::StatusOr<int> code = w->process->Wait(absl::Seconds(10));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 143);
  }
  // The daemons drain on SIGTERM and exit 0.
  StopDaemons(absl::Seconds(10));
}

// F1: SIGKILL a worker between steps, restart it: it re-registers (a new
// incarnation, one restart) and the job completes exactly once.
TEST_F(CoordinatorWorkerTest, F1_KilledWorkerRestartsAndRejoins) {
  StartCluster(1);
  std::vector<Proc*> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  ASSERT_TRUE(Submit(60).ok());
  ASSERT_TRUE(
      WaitFor([&] { return CountOf(ReadFile(workers[0]->log), " done") >= 3; },
              absl::Seconds(30)));
  ASSERT_TRUE(workers[0]->process->Signal(SIGKILL).ok());
  ASSERT_TRUE(workers[0]->process->Wait(absl::Seconds(10)).ok());
  workers[0] = StartWorker(0, {"--pause_after_pull_ms=20"});
  ASSERT_TRUE(
      WaitFor([&] { return CountOf(ReadFile(workers[0]->log), " done") >= 1; },
              absl::Seconds(30)))
      << "the restarted worker never ran a step";
  ExpectJobSucceeded(60, absl::Seconds(60));
  bool found = false;
  for (const auto& p : Processes()) {
    if (p.role() == v1::ROLE_WORKER && p.task_index() == 0) {
      found = true;
      EXPECT_EQ(p.restarts(), 1u);
    }
  }
  EXPECT_TRUE(found);
}

// F2: a worker dies mid-step (after its pull): the step is re-queued and run
// elsewhere, every step is applied exactly once.
TEST_F(CoordinatorWorkerTest, F2_WorkerKilledMidStepIsRerunElsewhere) {
  StartCluster(2);
  std::vector<Proc*> workers;
  workers.push_back(StartWorker(0, {}, "golden.after_pull=3*crash"));
  workers.push_back(StartWorker(1));
  workers.push_back(StartWorker(2));
  ASSERT_TRUE(Submit(40).ok());
  absl::StatusOr<int> code = workers[0]->process->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGKILL);
  ExpectJobSucceeded(40, absl::Seconds(60));
  auto s = Status();
  ASSERT_TRUE(s.ok());
  EXPECT_GE(s->status().requeues(), 1u);
  // `plexus status` sees it dead (and not among the live ones).
  EXPECT_TRUE(WaitFor(
      [&] {
        for (const auto& p : Processes(/*include_dead=*/true)) {
          if (p.role() == v1::ROLE_WORKER && p.task_index() == 0) {
            return p.state() == v1::PROCESS_STATE_DEAD;
          }
        }
        return false;
      },
      absl::Seconds(10)));
  for (const auto& p : Processes()) {
    EXPECT_FALSE(p.role() == v1::ROLE_WORKER && p.task_index() == 0);
  }
}

// F3: a worker dies after the PS acknowledged its push, before the
// coordinator heard: the re-run's push is a duplicate the PS drops. The
// re-run happens on the restarted worker, which registered after the job
// was submitted (its first incarnation registered before).
TEST_F(CoordinatorWorkerTest, F3_PushAckedThenKilledIsDeduplicated) {
  StartCluster(1);
  Proc* w = StartWorker(0, {}, "worker.step.after_push_before_report=2*crash");
  ASSERT_TRUE(Submit(30).ok());
  absl::StatusOr<int> code = w->process->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGKILL);
  Proc* again = StartWorker(0);
  ExpectJobSucceeded(30, absl::Seconds(60));
  EXPECT_EQ(CountOf(ReadFile(again->log), "pushed (duplicate)"), 1u)
      << ReadFile(again->log);
}

// F4: every worker is killed mid-job and restarted: the job completes, the
// coordinator never exits, the result is golden.
TEST_F(CoordinatorWorkerTest, F4_AllWorkersKilledAndRestarted) {
  StartCluster(2);
  std::vector<Proc*> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  ASSERT_TRUE(Submit(60).ok());
  ASSERT_TRUE(WaitFor([&] { return Succeeded() >= 5; }, absl::Seconds(30)));
  for (Proc* w : workers) ASSERT_TRUE(w->process->Signal(SIGKILL).ok());
  for (Proc* w : workers) ASSERT_TRUE(w->process->Wait(absl::Seconds(10)).ok());
  for (int i = 0; i < 2; ++i) {
    workers[i] = StartWorker(i, {"--pause_after_pull_ms=20"});
  }
  ExpectJobSucceeded(60, absl::Seconds(60));
  EXPECT_TRUE(cluster_->coordinator().process->Running());
}

// F5: the same worker killed past its restart budget fails the job with a
// message naming it.
TEST_F(CoordinatorWorkerTest, F5_RestartBudgetExceededFailsTheJob) {
  StartCluster(1);
  ASSERT_TRUE(Submit(20, /*no_worker_timeout_ms=*/0, /*max_restarts=*/2).ok());
  // Each incarnation dies at its first step (after the pull); the fourth
  // registration is the third restart, past the budget of 2.
  std::vector<Proc*> runs;
  for (int run = 0; run < 4; ++run) {
    runs.push_back(StartWorker(3, {}, "golden.after_pull=crash"));
    Proc* w = runs.back();
    ASSERT_TRUE(WaitFor(
        [&] {
          auto st = Status();
          return !w->process->Running() ||
                 (st.ok() && st->status().state() == v1::JOB_STATE_FAILED);
        },
        absl::Seconds(30)));
    if (run < 3) {
      absl::StatusOr<int> code = w->process->Wait(absl::Seconds(10));
      ASSERT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(*code, 128 + SIGKILL);
    }
  }
  absl::StatusOr<v1::JobStatus> joined = Join(absl::Seconds(10));
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kResourceExhausted)
      << joined.status();
  EXPECT_TRUE(absl::StrContains(joined.status().message(), "worker 3"))
      << joined.status();
  auto s = Status();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->status().state(), v1::JOB_STATE_FAILED);
}

// F6: the only worker dies and never comes back: Join fails with
// UNAVAILABLE within the job's bound instead of waiting forever.
TEST_F(CoordinatorWorkerTest, F6_NoWorkerLeftMakesJoinUnavailable) {
  StartCluster(1);
  Proc* w = StartWorker(0, {"--pause_after_pull_ms=20"});
  ASSERT_TRUE(Submit(1000, /*no_worker_timeout_ms=*/1500).ok());
  ASSERT_TRUE(WaitFor([&] { return CountOf(ReadFile(w->log), " done") >= 2; },
                      absl::Seconds(30)));
  ASSERT_TRUE(w->process->Signal(SIGKILL).ok());
  absl::Time start = absl::Now();
  absl::StatusOr<v1::JobStatus> joined = Join(absl::Seconds(30));
  EXPECT_EQ(joined.status().code(), absl::StatusCode::kUnavailable)
      << joined.status();
  // dead timeout (1.5 s) + no-worker bound (1.5 s) + scheduling slack.
  EXPECT_LT(absl::Now() - start, absl::Seconds(8));
}

// F10: a worker stopped (SIGSTOP) mid-step past its dead timeout is declared
// dead and its step re-run elsewhere; after SIGCONT its late push is refused
// as a stale incarnation, it registers again, and the result is golden.
TEST_F(CoordinatorWorkerTest, F10_StoppedWorkerIsFencedOut) {
  StartCluster(1);
  std::vector<Proc*> workers;
  workers.push_back(StartWorker(0, {"--pause_after_pull_ms=200"}));
  workers.push_back(StartWorker(1, {"--pause_after_pull_ms=20"}));
  ASSERT_TRUE(Submit(60).ok());
  ASSERT_TRUE(WaitFor(
      [&] { return CountOf(ReadFile(workers[0]->log), " pulled") >= 2; },
      absl::Seconds(30)));
  ASSERT_TRUE(workers[0]->process->Signal(SIGSTOP).ok());
  // Declared dead: its closure is re-queued.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = Status();
        return s.ok() && s->status().requeues() >= 1;
      },
      absl::Seconds(20)));
  ASSERT_TRUE(workers[0]->process->Signal(SIGCONT).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string log = ReadFile(workers[0]->log);
        return absl::StrContains(log, "push refused") &&
               absl::StrContains(log, "fenced out");
      },
      absl::Seconds(20)))
      << ReadFile(workers[0]->log);
  ExpectJobSucceeded(60, absl::Seconds(60));
  // It came back as a new incarnation.
  EXPECT_TRUE(WaitFor(
      [&] {
        return CountOf(ReadFile(workers[0]->log), "registered as worker id") >=
               2;
      },
      absl::Seconds(20)))
      << ReadFile(workers[0]->log);
}

// F13: SIGTERM mid-step: the worker finishes (or hands back) its step and
// exits 143; the job runs exactly N closures.
TEST_F(CoordinatorWorkerTest, F13_SigtermMidStepFinishesThenExits143) {
  StartCluster(1);
  std::vector<Proc*> workers;
  workers.push_back(StartWorker(0, {"--pause_after_pull_ms=300"}));
  workers.push_back(StartWorker(1, {"--pause_after_pull_ms=20"}));
  ASSERT_TRUE(Submit(40).ok());
  ASSERT_TRUE(WaitFor(
      [&] { return CountOf(ReadFile(workers[0]->log), " pulled") >= 2; },
      absl::Seconds(30)));
  ASSERT_TRUE(workers[0]->process->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = workers[0]->process->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 143);
  std::string log = ReadFile(workers[0]->log);
  EXPECT_EQ(CountOf(log, " pulled"), CountOf(log, " done"))
      << "the running step was not finished: " << log;
  ExpectJobSucceeded(40, absl::Seconds(60));
  auto s = Status();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->status().closures_total(), 40u);
  // With a worker still attached (heartbeat stream and NextTask long polls
  // open), the coordinator drains on SIGTERM and exits 0.
  absl::Time start = absl::Now();
  StopDaemons(absl::Seconds(10));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

// F13, hand-back: SIGTERM mid-step with a drain grace shorter than the
// step: the step is told to stop, hands its closure back (re-queued, not a
// failure), the worker exits 143, and another worker runs the step once.
TEST_F(CoordinatorWorkerTest, F13_SigtermPastGraceHandsTheStepBack) {
  StartCluster(1);
  std::vector<Proc*> workers;
  workers.push_back(
      StartWorker(0, {"--pause_after_pull_ms=5000", "--drain_grace_ms=50"}));
  ASSERT_TRUE(Submit(20).ok());
  ASSERT_TRUE(WaitFor(
      [&] { return CountOf(ReadFile(workers[0]->log), " pulled") >= 1; },
      absl::Seconds(30)));
  workers.push_back(StartWorker(1));
  ASSERT_TRUE(workers[0]->process->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = workers[0]->process->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 143);
  EXPECT_EQ(CountOf(ReadFile(workers[0]->log), " handed back"), 1u);
  EXPECT_EQ(CountOf(ReadFile(workers[0]->log), " pushed"), 0u);
  ExpectJobSucceeded(20, absl::Seconds(60));
  auto s = Status();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->status().requeues(), 1u);
}

// F9: SIGKILL the coordinator mid-training and restart it on the same data
// folder and port: the job continues from its RocksDB state without
// restarting workers or PS, under a higher epoch.
TEST_F(CoordinatorWorkerTest, F9_CoordinatorRestartContinuesTheJob) {
  StartCluster(1);
  std::vector<Proc*> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  ASSERT_TRUE(Submit(80).ok());
  ASSERT_TRUE(WaitFor([&] { return Succeeded() >= 10; }, absl::Seconds(30)));
  auto before = Status();
  ASSERT_TRUE(before.ok());
  const uint64_t epoch = before->header().coordinator_epoch();
  std::map<uint64_t, uint64_t> incarnations;
  for (const auto& p : Processes())
    incarnations[p.worker_id()] = p.incarnation();

  ASSERT_TRUE(cluster_->coordinator().process->Signal(SIGKILL).ok());
  ASSERT_TRUE(cluster_->coordinator().process->Wait(absl::Seconds(10)).ok());
  ASSERT_NO_FATAL_FAILURE(RestartCoordinator());
  auto after = Status();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->header().coordinator_epoch(), epoch);

  ExpectJobSucceeded(80, absl::Seconds(60));
  // No worker was restarted or re-registered.
  for (Proc* w : workers) EXPECT_TRUE(w->process->Running());
  for (const auto& p : Processes()) {
    if (p.role() != v1::ROLE_WORKER) continue;
    EXPECT_EQ(p.incarnation(), incarnations[p.worker_id()]);
    EXPECT_EQ(p.restarts(), 0u);
  }
}

// F9 at a precise point: the coordinator dies right after handing a closure
// out, before recording it (failpoint coordinator.after_dispatch_before_record
// = crash on the 6th dispatch). Restarted on its folder, it re-dispatches
// what it had not recorded; the job ends golden.
TEST_F(CoordinatorWorkerTest, F9_CrashAfterDispatchBeforeRecord) {
  StartCluster(
      1, {"--failpoints=coordinator.after_dispatch_before_record=5*crash"});
  std::vector<Proc*> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=10"}));
  }
  ASSERT_TRUE(Submit(30).ok());
  absl::StatusOr<int> code =
      cluster_->coordinator().process->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGKILL);
  // The restart runs without the failpoint.
  std::vector<std::string>& argv = cluster_->coordinator().argv;
  argv.erase(std::remove_if(argv.begin(), argv.end(),
                            [](const std::string& a) {
                              return absl::StartsWith(a, "--failpoints=");
                            }),
             argv.end());
  ASSERT_NO_FATAL_FAILURE(RestartCoordinator());
  ExpectJobSucceeded(30, absl::Seconds(60));
  for (Proc* w : workers) EXPECT_TRUE(w->process->Running());
}

}  // namespace
}  // namespace plexus::fault
