// The coordinator and the worker runtime as real processes on 127.0.0.1: a
// plexus-coordinator and PS shards started by LocalCluster, golden_worker
// processes started with Subprocess. A job of N golden steps must end with
// every step applied exactly once: the variable equals the golden values bit
// for bit. Then the worker faults of ../shared/FAULTS.md: F1, F2, F3, F4,
// F5, F6, F9, F10, F13.
//
// Timeouts are short (heartbeat 100 ms, suspect 600 ms, dead 1.5 s) so each
// case takes seconds; tests wait on conditions (job status, log lines,
// process exits), never on sleeps.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/process.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/integration/golden.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::GoldenValues;
using ::plexus::testing::kGoldenElements;
using ::plexus::testing::TempDir;

constexpr char kVariable[] = "golden";

std::vector<std::string> CoordinatorFlags() {
  return {"--heartbeat_interval_ms=100", "--suspect_timeout_ms=600",
          "--dead_timeout_ms=1500", "--no_worker_timeout_ms=3000"};
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

size_t CountOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

// Polls `cond` until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& cond, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (cond()) return true;
    absl::SleepFor(absl::Milliseconds(20));  // polling interval
  }
  return cond();
}

class CoordinatorWorkerTest : public ::testing::Test {
 protected:
  void StartCluster(int num_ps, std::vector<std::string> extra = {}) {
    local::LocalClusterOptions o;
    o.bin_dir = BinDir();
    o.root_dir = dir_.Sub("cluster");
    o.num_ps = num_ps;
    o.extra_flags = CoordinatorFlags();
    o.extra_flags.insert(o.extra_flags.end(), extra.begin(), extra.end());
    // The PS does not know the coordinator's flags.
    o.extra_flags.push_back(
        "--undefok=heartbeat_interval_ms,suspect_timeout_ms,dead_timeout_ms,"
        "no_worker_timeout_ms");
    auto c = local::LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    for (const auto& m : cluster_->members()) {
      if (m.role == "ps") shards_.push_back(m.address);
    }
    Connect(cluster_->coordinator_address());
    worker::PsClientOptions po;
    po.shards = shards_;
    auto ps = worker::PsClient::Connect(po);
    ASSERT_TRUE(ps.ok()) << ps.status();
    ps_ = std::move(*ps);
    v1::VariableConfig v;
    v.set_name(kVariable);
    v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    // [elements, 1]: the PS client slices along axis 0 and sends 2-D slices.
    v.mutable_spec()->add_shape(kGoldenElements);
    v.mutable_spec()->add_shape(1);
    v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1.0);
    v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
    ASSERT_TRUE(ps_->CreateVariable(v).ok());
  }

  void Connect(const std::string& address) {
    stub_ = v1::Coordinator::NewStub(
        grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  }

  struct Worker {
    std::unique_ptr<Subprocess> process;
    std::string log;
  };

  // Starts golden_worker with task index `index`.
  Worker StartWorker(int index, std::vector<std::string> extra = {},
                     std::string failpoints = "") {
    Worker w;
    w.log =
        dir_.Sub(absl::StrCat("worker-", index, "-", ++worker_runs_, ".log"));
    SubprocessOptions so;
    so.argv = {BinDir() + "/golden_worker",
               "--coordinator=" + cluster_->coordinator_address(),
               "--ps=" + absl::StrJoin(shards_, ","),
               absl::StrCat("--task_index=", index)};
    so.argv.insert(so.argv.end(), extra.begin(), extra.end());
    if (!failpoints.empty())
      so.env.push_back({"PLEXUS_FAILPOINTS", failpoints});
    so.log_file = w.log;
    auto p = Subprocess::Start(so);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) w.process = std::move(*p);
    return w;
  }

  absl::StatusOr<std::string> Submit(uint64_t steps,
                                     int64_t no_worker_timeout_ms = 0,
                                     uint32_t max_restarts = 0) {
    v1::SubmitJobRequest req;
    req.set_max_restarts_per_worker(max_restarts);
    req.set_job_id("golden-job");
    req.mutable_steps()->set_function_name("golden");
    req.mutable_steps()->set_num_steps(steps);
    req.set_no_worker_timeout_ms(no_worker_timeout_ms);
    v1::SubmitJobResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    absl::Status st = FromGrpcStatus(stub_->SubmitJob(&ctx, req, &resp));
    if (!st.ok()) return st;
    return resp.job_id();
  }

  absl::StatusOr<v1::JobStatus> Join(absl::Duration timeout) {
    v1::JoinRequest req;
    req.set_job_id("golden-job");
    req.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
    v1::JoinResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(
        absl::ToChronoTime(absl::Now() + timeout + absl::Seconds(5)));
    absl::Status st = FromGrpcStatus(stub_->Join(&ctx, req, &resp));
    if (!st.ok()) return st;
    return resp.status();
  }

  absl::StatusOr<v1::GetJobStatusResponse> Status() {
    v1::GetJobStatusRequest req;
    req.set_job_id("golden-job");
    v1::GetJobStatusResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    absl::Status st = FromGrpcStatus(stub_->GetJobStatus(&ctx, req, &resp));
    if (!st.ok()) return st;
    return resp;
  }

  std::vector<v1::ProcessInfo> Processes(bool include_dead = false) {
    v1::ListProcessesRequest req;
    req.set_include_dead(include_dead);
    v1::ListProcessesResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    EXPECT_TRUE(stub_->ListProcesses(&ctx, req, &resp).ok());
    return {resp.processes().begin(), resp.processes().end()};
  }

  // Starts plexus-coordinator again on the first one's data folder and port
  // (the first must be dead) and waits until it answers.
  std::unique_ptr<Subprocess> RestartCoordinator() {
    const local::Member& coord = cluster_->members().front();
    std::string port = coord.address.substr(coord.address.rfind(':') + 1);
    SubprocessOptions so;
    so.argv = {BinDir() + "/plexus-coordinator",
               "--data_dir=" + coord.dir + "/data", "--port=" + port,
               "--admin_port=-1"};
    for (const std::string& f : CoordinatorFlags()) so.argv.push_back(f);
    so.log_file = coord.dir + "/log-restarted";
    auto restarted = Subprocess::Start(so);
    EXPECT_TRUE(restarted.ok()) << restarted.status();
    if (!restarted.ok()) return nullptr;
    EXPECT_TRUE(WaitFor([&] { return Status().ok(); }, absl::Seconds(30)))
        << ReadFile(so.log_file);
    return std::move(*restarted);
  }

  // Succeeded closures of the job so far (0 if unknown).
  uint64_t Succeeded() {
    auto s = Status();
    return s.ok() ? s->status().closures_succeeded() : 0;
  }

  // The variable equals the golden values of `steps` steps bit for bit.
  void ExpectGolden(uint64_t steps) {
    std::vector<float> w(kGoldenElements);
    ASSERT_TRUE(ps_->PullDense(kVariable, absl::MakeSpan(w)).ok());
    std::vector<float> golden = GoldenValues(steps, kGoldenElements);
    EXPECT_EQ(0, std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)))
        << "element 0: " << w[0] << " vs golden " << golden[0];
  }

  void ExpectJobSucceeded(uint64_t steps, absl::Duration timeout) {
    absl::StatusOr<v1::JobStatus> done = Join(timeout);
    ASSERT_TRUE(done.ok()) << done.status();
    EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
    EXPECT_EQ(done->closures_total(), steps);
    EXPECT_EQ(done->closures_succeeded(), steps);
    ExpectGolden(steps);
  }

  TempDir dir_;
  std::unique_ptr<local::LocalCluster> cluster_;
  std::vector<std::string> shards_;
  std::unique_ptr<worker::PsClient> ps_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  int worker_runs_ = 0;
};

TEST_F(CoordinatorWorkerTest, JobCompletesWithEveryStepAppliedOnce) {
  StartCluster(2);
  std::vector<Worker> workers;
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
  httplib::Client http("127.0.0.1", cluster_->members().front().admin_port);
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
  for (Worker& w : workers) {
    ASSERT_TRUE(w.process->Signal(SIGTERM).ok());
    absl::StatusOr<int> code = w.process->Wait(absl::Seconds(10));
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 143);
  }
  // The daemons drain on SIGTERM and exit 0.
  EXPECT_TRUE(cluster_->Stop(absl::Seconds(10)).ok());
}

// F1: SIGKILL a worker between steps, restart it: it re-registers (a new
// incarnation, one restart) and the job completes exactly once.
TEST_F(CoordinatorWorkerTest, F1_KilledWorkerRestartsAndRejoins) {
  StartCluster(1);
  std::vector<Worker> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  ASSERT_TRUE(Submit(60).ok());
  ASSERT_TRUE(
      WaitFor([&] { return CountOf(ReadFile(workers[0].log), " done") >= 3; },
              absl::Seconds(30)));
  ASSERT_TRUE(workers[0].process->Signal(SIGKILL).ok());
  ASSERT_TRUE(workers[0].process->Wait(absl::Seconds(10)).ok());
  workers[0] = StartWorker(0, {"--pause_after_pull_ms=20"});
  ASSERT_TRUE(
      WaitFor([&] { return CountOf(ReadFile(workers[0].log), " done") >= 1; },
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
  std::vector<Worker> workers;
  workers.push_back(StartWorker(0, {}, "golden.after_pull=3*crash"));
  workers.push_back(StartWorker(1));
  workers.push_back(StartWorker(2));
  ASSERT_TRUE(Submit(40).ok());
  absl::StatusOr<int> code = workers[0].process->Wait(absl::Seconds(30));
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
  Worker w = StartWorker(0, {}, "worker.step.after_push_before_report=2*crash");
  ASSERT_TRUE(Submit(30).ok());
  absl::StatusOr<int> code = w.process->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGKILL);
  Worker again = StartWorker(0);
  ExpectJobSucceeded(30, absl::Seconds(60));
  EXPECT_EQ(CountOf(ReadFile(again.log), "pushed (duplicate)"), 1u)
      << ReadFile(again.log);
}

// F4: every worker is killed mid-job and restarted: the job completes, the
// coordinator never exits, the result is golden.
TEST_F(CoordinatorWorkerTest, F4_AllWorkersKilledAndRestarted) {
  StartCluster(2);
  std::vector<Worker> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  ASSERT_TRUE(Submit(60).ok());
  ASSERT_TRUE(WaitFor([&] { return Succeeded() >= 5; }, absl::Seconds(30)));
  for (Worker& w : workers) ASSERT_TRUE(w.process->Signal(SIGKILL).ok());
  for (Worker& w : workers)
    ASSERT_TRUE(w.process->Wait(absl::Seconds(10)).ok());
  for (int i = 0; i < 2; ++i) {
    workers[i] = StartWorker(i, {"--pause_after_pull_ms=20"});
  }
  ExpectJobSucceeded(60, absl::Seconds(60));
  EXPECT_TRUE(cluster_->process(0)->Running());
}

// F5: the same worker killed past its restart budget fails the job with a
// message naming it.
TEST_F(CoordinatorWorkerTest, F5_RestartBudgetExceededFailsTheJob) {
  StartCluster(1);
  ASSERT_TRUE(Submit(20, /*no_worker_timeout_ms=*/0, /*max_restarts=*/2).ok());
  // Each incarnation dies at its first step (after the pull); the fourth
  // registration is the third restart, past the budget of 2.
  std::vector<Worker> runs;
  for (int run = 0; run < 4; ++run) {
    runs.push_back(StartWorker(3, {}, "golden.after_pull=crash"));
    Worker& w = runs.back();
    ASSERT_TRUE(WaitFor(
        [&] {
          auto st = Status();
          return !w.process->Running() ||
                 (st.ok() && st->status().state() == v1::JOB_STATE_FAILED);
        },
        absl::Seconds(30)));
    if (run < 3) {
      absl::StatusOr<int> code = w.process->Wait(absl::Seconds(10));
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
  Worker w = StartWorker(0, {"--pause_after_pull_ms=20"});
  ASSERT_TRUE(Submit(1000, /*no_worker_timeout_ms=*/1500).ok());
  ASSERT_TRUE(WaitFor([&] { return CountOf(ReadFile(w.log), " done") >= 2; },
                      absl::Seconds(30)));
  ASSERT_TRUE(w.process->Signal(SIGKILL).ok());
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
  std::vector<Worker> workers;
  workers.push_back(StartWorker(0, {"--pause_after_pull_ms=200"}));
  workers.push_back(StartWorker(1, {"--pause_after_pull_ms=20"}));
  ASSERT_TRUE(Submit(60).ok());
  ASSERT_TRUE(
      WaitFor([&] { return CountOf(ReadFile(workers[0].log), " pulled") >= 2; },
              absl::Seconds(30)));
  ASSERT_TRUE(workers[0].process->Signal(SIGSTOP).ok());
  // Declared dead: its closure is re-queued.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto s = Status();
        return s.ok() && s->status().requeues() >= 1;
      },
      absl::Seconds(20)));
  ASSERT_TRUE(workers[0].process->Signal(SIGCONT).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        std::string log = ReadFile(workers[0].log);
        return absl::StrContains(log, "push refused") &&
               absl::StrContains(log, "fenced out");
      },
      absl::Seconds(20)))
      << ReadFile(workers[0].log);
  ExpectJobSucceeded(60, absl::Seconds(60));
  // It came back as a new incarnation.
  EXPECT_TRUE(WaitFor(
      [&] {
        return CountOf(ReadFile(workers[0].log), "registered as worker id") >=
               2;
      },
      absl::Seconds(20)))
      << ReadFile(workers[0].log);
}

// F13: SIGTERM mid-step: the worker finishes (or hands back) its step and
// exits 143; the job runs exactly N closures.
TEST_F(CoordinatorWorkerTest, F13_SigtermMidStepFinishesThenExits143) {
  StartCluster(1);
  std::vector<Worker> workers;
  workers.push_back(StartWorker(0, {"--pause_after_pull_ms=300"}));
  workers.push_back(StartWorker(1, {"--pause_after_pull_ms=20"}));
  ASSERT_TRUE(Submit(40).ok());
  ASSERT_TRUE(
      WaitFor([&] { return CountOf(ReadFile(workers[0].log), " pulled") >= 2; },
              absl::Seconds(30)));
  ASSERT_TRUE(workers[0].process->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = workers[0].process->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 143);
  std::string log = ReadFile(workers[0].log);
  EXPECT_EQ(CountOf(log, " pulled"), CountOf(log, " done"))
      << "the running step was not finished: " << log;
  ExpectJobSucceeded(40, absl::Seconds(60));
  auto s = Status();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->status().closures_total(), 40u);
  // With a worker still attached (heartbeat stream and NextTask long polls
  // open), the coordinator drains on SIGTERM and exits 0.
  absl::Time start = absl::Now();
  EXPECT_TRUE(cluster_->Stop(absl::Seconds(10)).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

// F13, hand-back: SIGTERM mid-step with a drain grace shorter than the
// step: the step is told to stop, hands its closure back (re-queued, not a
// failure), the worker exits 143, and another worker runs the step once.
TEST_F(CoordinatorWorkerTest, F13_SigtermPastGraceHandsTheStepBack) {
  StartCluster(1);
  std::vector<Worker> workers;
  workers.push_back(
      StartWorker(0, {"--pause_after_pull_ms=5000", "--drain_grace_ms=50"}));
  ASSERT_TRUE(Submit(20).ok());
  ASSERT_TRUE(
      WaitFor([&] { return CountOf(ReadFile(workers[0].log), " pulled") >= 1; },
              absl::Seconds(30)));
  workers.push_back(StartWorker(1));
  ASSERT_TRUE(workers[0].process->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = workers[0].process->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 143);
  EXPECT_EQ(CountOf(ReadFile(workers[0].log), " handed back"), 1u);
  EXPECT_EQ(CountOf(ReadFile(workers[0].log), " pushed"), 0u);
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
  std::vector<Worker> workers;
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

  ASSERT_TRUE(cluster_->process(0)->Signal(SIGKILL).ok());
  ASSERT_TRUE(cluster_->process(0)->Wait(absl::Seconds(10)).ok());
  std::unique_ptr<Subprocess> restarted = RestartCoordinator();
  ASSERT_NE(restarted, nullptr);
  auto after = Status();
  ASSERT_TRUE(after.ok());
  EXPECT_GT(after->header().coordinator_epoch(), epoch);

  ExpectJobSucceeded(80, absl::Seconds(60));
  // No worker was restarted or re-registered.
  for (Worker& w : workers) EXPECT_TRUE(w.process->Running());
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
  std::vector<Worker> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=10"}));
  }
  ASSERT_TRUE(Submit(30).ok());
  absl::StatusOr<int> code = cluster_->process(0)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 128 + SIGKILL);
  std::unique_ptr<Subprocess> restarted = RestartCoordinator();
  ASSERT_NE(restarted, nullptr);
  ExpectJobSucceeded(30, absl::Seconds(60));
  for (Worker& w : workers) EXPECT_TRUE(w.process->Running());
}

}  // namespace
}  // namespace plexus
