// Global checkpoints end to end: two real plexus-ps shards, a
// plexus-coordinator that knows them (--ps_shards) and golden_worker
// processes running the golden workload (FAULTS.md). Covers create / list /
// inspect / restore through the RPCs and the `plexus checkpoint` command,
// F7 (a shard killed and restarted: every shard restores the newest
// checkpoint and the steps after it run again exactly once), F8 (the
// coordinator killed before the manifest rename), F18 (a shard killed
// during a checkpoint after the other one finished its part), F15 through
// the coordinator (fall back past a damaged checkpoint) and F14 (a full
// disk fails the checkpoint, the shards keep serving).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"
#include "common/health_client.h"
#include "common/process.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/integration/golden.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

namespace fs = std::filesystem;
using ::plexus::testing::BinDir;
using ::plexus::testing::GoldenValues;
using ::plexus::testing::GoldenVariableConfig;
using ::plexus::testing::kGoldenElements;
using ::plexus::testing::ReadFile;
using ::plexus::testing::TempDir;
using ::plexus::testing::WaitFor;

constexpr char kVariable[] = "golden";
constexpr char kJob[] = "golden-job";

template <typename F>
absl::Status Call(F rpc, absl::Duration timeout = absl::Seconds(60)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return FromGrpcStatus(rpc(&ctx));
}

class CheckpointClusterTest : public ::testing::Test {
 protected:
  struct Proc {
    std::unique_ptr<Subprocess> process;
    std::string dir;
    std::string address;
    std::string log;
  };

  // Starts a daemon `binary` with its folder `dir`; port 0 or a fixed one
  // (a restart at the same address).
  Proc StartDaemon(const std::string& binary, const std::string& dir,
                   std::vector<std::string> flags, int port = 0,
                   std::string failpoints = "") {
    Proc p;
    p.dir = dir;
    fs::create_directories(dir);
    const std::string port_file = dir + "/port";
    std::error_code ec;
    fs::remove(port_file, ec);
    p.log = absl::StrCat(dir, "/log-", ++runs_);
    SubprocessOptions so;
    so.argv = {BinDir() + "/" + binary,
               "--data_dir=" + dir + "/data",
               absl::StrCat("--port=", port),
               "--port_file=" + port_file,
               "--admin_port=-1",
               "--failpoint_rpc"};
    so.argv.insert(so.argv.end(), flags.begin(), flags.end());
    if (!failpoints.empty())
      so.env.push_back({"PLEXUS_FAILPOINTS", failpoints});
    so.log_file = p.log;
    auto s = Subprocess::Start(so);
    EXPECT_TRUE(s.ok()) << s.status();
    if (!s.ok()) return p;
    p.process = std::move(*s);
    auto bound = WaitForPortFile(port_file, absl::Seconds(30), p.process.get());
    EXPECT_TRUE(bound.ok()) << bound.status() << "\n" << ReadFile(p.log);
    if (bound.ok()) p.address = absl::StrCat("127.0.0.1:", *bound);
    return p;
  }

  static int PortOf(const std::string& address) {
    return std::stoi(address.substr(address.rfind(':') + 1));
  }

  std::vector<std::string> CoordinatorFlags() {
    std::vector<std::string> f = {
        "--heartbeat_interval_ms=100", "--suspect_timeout_ms=600",
        "--dead_timeout_ms=1500", "--no_worker_timeout_ms=30000",
        "--ps_shards=" + absl::StrJoin(ShardAddresses(), ",")};
    f.insert(f.end(), coordinator_extra_.begin(), coordinator_extra_.end());
    return f;
  }

  std::vector<std::string> ShardAddresses() {
    std::vector<std::string> a;
    for (const Proc& s : shards_) a.push_back(s.address);
    return a;
  }

  // Two shards (shard 1 with `shard1_failpoints`), a coordinator, and the
  // golden variable.
  void StartCluster(std::string shard1_failpoints = "",
                    std::string coordinator_failpoints = "") {
    for (int i = 0; i < 2; ++i) {
      shards_.push_back(StartDaemon(
          "plexus-ps", dir_.Sub(absl::StrCat("ps-", i)),
          {absl::StrCat("--shard=", i)}, 0, i == 1 ? shard1_failpoints : ""));
      ASSERT_FALSE(shards_.back().address.empty());
    }
    coordinator_ = StartDaemon("plexus-coordinator", dir_.Sub("coordinator"),
                               CoordinatorFlags(), 0, coordinator_failpoints);
    ASSERT_FALSE(coordinator_.address.empty());
    ConnectCoordinator();
    worker::PsClientOptions po;
    po.shards = ShardAddresses();
    auto ps = worker::PsClient::Connect(po);
    ASSERT_TRUE(ps.ok()) << ps.status();
    ps_ = std::move(*ps);
    v1::VariableConfig v = GoldenVariableConfig(kVariable);
    ASSERT_TRUE(ps_->CreateVariable(v).ok());
  }

  void ConnectCoordinator() {
    stub_ = v1::Coordinator::NewStub(grpc::CreateChannel(
        coordinator_.address, grpc::InsecureChannelCredentials()));
  }

  Proc StartWorker(int index, std::vector<std::string> extra = {}) {
    Proc w;
    w.log = dir_.Sub(absl::StrCat("worker-", index, "-", ++runs_, ".log"));
    SubprocessOptions so;
    so.argv = {BinDir() + "/golden_worker",
               "--coordinator=" + coordinator_.address,
               "--ps=" + absl::StrJoin(ShardAddresses(), ","),
               absl::StrCat("--task_index=", index)};
    so.argv.insert(so.argv.end(), extra.begin(), extra.end());
    so.log_file = w.log;
    auto p = Subprocess::Start(so);
    EXPECT_TRUE(p.ok()) << p.status();
    if (p.ok()) w.process = std::move(*p);
    return w;
  }

  absl::Status Submit(uint64_t steps) {
    v1::SubmitJobRequest req;
    req.set_job_id(kJob);
    req.mutable_steps()->set_function_name("golden");
    req.mutable_steps()->set_num_steps(steps);
    v1::SubmitJobResponse resp;
    return Call([&](auto* c) { return stub_->SubmitJob(c, req, &resp); });
  }

  absl::StatusOr<v1::JobStatus> Join(absl::Duration timeout) {
    v1::JoinRequest req;
    req.set_job_id(kJob);
    req.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
    v1::JoinResponse resp;
    absl::Status st = Call([&](auto* c) { return stub_->Join(c, req, &resp); },
                           timeout + absl::Seconds(5));
    if (!st.ok()) return st;
    return resp.status();
  }

  uint64_t CompletedThrough() {
    v1::GetJobStatusRequest req;
    req.set_job_id(kJob);
    v1::GetJobStatusResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub_->GetJobStatus(c, req, &resp); },
             absl::Seconds(5));
    return st.ok() ? resp.status().completed_through_step_id() : 0;
  }

  absl::StatusOr<v1::TriggerCheckpointResponse> Trigger() {
    v1::TriggerCheckpointRequest req;
    req.set_wait(true);
    v1::TriggerCheckpointResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub_->TriggerCheckpoint(c, req, &resp); });
    if (!st.ok()) return st;
    return resp;
  }

  std::vector<v1::CheckpointManifest> List(bool files = false) {
    v1::ListCheckpointsRequest req;
    req.set_include_files(files);
    v1::ListCheckpointsResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub_->ListCheckpoints(c, req, &resp); },
             absl::Seconds(10));
    EXPECT_TRUE(st.ok()) << st;
    return {resp.manifests().begin(), resp.manifests().end()};
  }

  absl::StatusOr<v1::RestoreCheckpointResponse> Restore(uint64_t id,
                                                        bool fall_back) {
    v1::RestoreCheckpointRequest req;
    req.set_checkpoint_id(id);
    req.set_fall_back_to_previous(fall_back);
    v1::RestoreCheckpointResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub_->Restore(c, req, &resp); });
    if (!st.ok()) return st;
    return resp;
  }

  std::vector<float> Values() {
    std::vector<float> w(kGoldenElements, -1.0f);
    absl::Status st;
    // A shard may still be restoring: retry for a bounded time.
    WaitFor(
        [&] {
          st = ps_->PullDense(kVariable, absl::MakeSpan(w));
          return st.ok();
        },
        absl::Seconds(30));
    EXPECT_TRUE(st.ok()) << st;
    return w;
  }

  void ExpectGolden(uint64_t steps) {
    std::vector<float> w = Values();
    std::vector<float> golden = GoldenValues(steps, kGoldenElements);
    EXPECT_EQ(0, std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)))
        << "element 0: " << w[0] << " vs golden " << golden[0] << " of "
        << steps << " steps";
  }

  // Runs the `plexus` command; returns its exit code and output.
  std::pair<int, std::string> Cli(std::vector<std::string> args) {
    const std::string out = dir_.Sub(absl::StrCat("cli-", ++runs_, ".out"));
    SubprocessOptions so;
    so.argv = {BinDir() + "/plexus"};
    so.argv.insert(so.argv.end(), args.begin(), args.end());
    so.log_file = out;
    auto p = Subprocess::Start(so);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return {-1, ""};
    auto code = (*p)->Wait(absl::Seconds(60));
    EXPECT_TRUE(code.ok()) << code.status();
    return {code.ok() ? *code : -1, ReadFile(out)};
  }

  void KillAndWait(Proc& p) {
    ASSERT_TRUE(p.process->Signal(SIGKILL).ok());
    ASSERT_TRUE(p.process->Wait(absl::Seconds(30)).ok());
  }

  TempDir dir_;
  std::vector<Proc> shards_;
  Proc coordinator_;
  std::vector<std::string> coordinator_extra_;
  std::unique_ptr<worker::PsClient> ps_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  int runs_ = 0;
};

TEST_F(CheckpointClusterTest, CreateListInspectRestoreAndRerunOnce) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::vector<Proc> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  ASSERT_TRUE(Submit(40).ok());
  ASSERT_TRUE(
      WaitFor([&] { return CompletedThrough() >= 10; }, absl::Seconds(60)));
  auto c1 = Trigger();
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_GE(c1->step_id(), 10u);
  ASSERT_EQ(c1->manifest().shards_size(), 2);
  for (const auto& s : c1->manifest().shards()) {
    EXPECT_FALSE(s.files().empty());
  }
  auto done = Join(absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  ExpectGolden(40);
  {
    v1::GetJobStatusRequest req;
    req.set_job_id(kJob);
    v1::GetJobStatusResponse resp;
    ASSERT_TRUE(
        Call([&](auto* c) { return stub_->GetJobStatus(c, req, &resp); }).ok());
    EXPECT_EQ(resp.status().last_checkpoint_id(), c1->checkpoint_id());
    EXPECT_EQ(resp.status().last_checkpoint_step_id(), c1->step_id());
  }
  // A second checkpoint at the end (incremental against the first).
  auto c2 = Trigger();
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_EQ(c2->step_id(), 40u);
  EXPECT_EQ(c2->manifest().base_checkpoint_id(), c1->checkpoint_id());

  // The command line.
  auto [code, out] =
      Cli({"checkpoint", "list", "--coordinator", coordinator_.address});
  EXPECT_EQ(code, 0) << out;
  EXPECT_TRUE(absl::StrContains(out, "STEP")) << out;
  EXPECT_TRUE(absl::StrContains(out, kJob)) << out;
  auto [icode, inspect] =
      Cli({"checkpoint", "inspect", std::to_string(c1->checkpoint_id()),
           "--coordinator", coordinator_.address});
  EXPECT_EQ(icode, 0) << inspect;
  EXPECT_TRUE(absl::StrContains(inspect, "crc32c")) << inspect;
  EXPECT_TRUE(
      absl::StrContains(inspect, c1->manifest().shards(0).files(0).path()))
      << inspect;
  auto [ncode, nf] = Cli(
      {"checkpoint", "inspect", "999", "--coordinator", coordinator_.address});
  EXPECT_NE(ncode, 0) << nf;
  auto [ccode, created] =
      Cli({"checkpoint", "create", "--coordinator", coordinator_.address});
  EXPECT_EQ(ccode, 0) << created;
  EXPECT_TRUE(absl::StrContains(created, "published")) << created;
  EXPECT_EQ(List().size(), 3u);

  // Restore to the first checkpoint with no worker running: the state is
  // the golden state of its step, and the job runs the later steps again.
  for (Proc& w : workers) KillAndWait(w);
  auto r = Restore(c1->checkpoint_id(), false);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest().checkpoint_id(), c1->checkpoint_id());
  ExpectGolden(c1->step_id());
  workers.clear();
  workers.push_back(StartWorker(0));
  done = Join(absl::Seconds(120));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  ExpectGolden(40);
}

// Periodic checkpoints by time and retention of the newest N on the
// coordinator and on every shard.
TEST_F(CheckpointClusterTest, PeriodicByTimeKeepsTheNewestTwo) {
  coordinator_extra_ = {"--checkpoint_every_s=1", "--checkpoint_keep=2"};
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::vector<Proc> workers;
  workers.push_back(StartWorker(0, {"--pause_after_pull_ms=10"}));
  constexpr uint64_t kSteps = 100000;  // longer than the test: cancelled
  ASSERT_TRUE(Submit(kSteps).ok());
  // Three periodic checkpoints (ids are strictly increasing).
  ASSERT_TRUE(WaitFor(
      [&] {
        auto l = List();
        return !l.empty() && l.front().checkpoint_id() >= 3;
      },
      absl::Seconds(60)));
  // Stop the job, so no new periodic checkpoint starts.
  v1::CancelJobRequest cancel;
  cancel.set_job_id(kJob);
  v1::CancelJobResponse cr;
  EXPECT_TRUE(
      Call([&](auto* c) { return stub_->CancelJob(c, cancel, &cr); }).ok());
  // One more checkpoint: it runs after any periodic one in flight, and
  // retention has run when it returns.
  auto last = Trigger();
  ASSERT_TRUE(last.ok()) << last.status();
  auto list = List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_GT(list[0].step_id(), list[1].step_id());
  // Retention ran on the shards too: only the kept directories remain.
  for (const Proc& s : shards_) {
    std::set<std::string> kept;
    for (const auto& m : list) {
      kept.insert(m.shards(static_cast<int>(&s - &shards_[0])).directory());
    }
    for (const auto& e : fs::directory_iterator(s.dir + "/data/checkpoints")) {
      const std::string name = e.path().filename().string();
      if (name == ".staging") continue;
      EXPECT_TRUE(kept.contains(name)) << s.dir << ": " << name;
    }
  }
}

// F7: a shard dies mid-training and comes back at its address; every shard
// restores the newest checkpoint and the steps after it run exactly once.
TEST_F(CheckpointClusterTest, F7_KilledShardRecoversAndTheResultIsGolden) {
  coordinator_extra_ = {"--checkpoint_every_steps=10"};
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::vector<Proc> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  constexpr uint64_t kSteps = 80;
  ASSERT_TRUE(Submit(kSteps).ok());
  // A periodic checkpoint exists and training went on past it.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto l = List();
        return !l.empty() && CompletedThrough() >= l.front().step_id() + 5;
      },
      absl::Seconds(60)));
  const int port = PortOf(shards_[1].address);
  KillAndWait(shards_[1]);
  shards_[1] = StartDaemon("plexus-ps", shards_[1].dir, {"--shard=1"}, port);
  ASSERT_FALSE(shards_[1].address.empty());
  // Health stays NOT_SERVING until the coordinator restored it.
  ASSERT_TRUE(WaitUntilServing(shards_[1].address, absl::Seconds(60)).ok())
      << ReadFile(shards_[1].log);
  auto done = Join(absl::Seconds(180));
  ASSERT_TRUE(done.ok()) << done.status() << "\nrestarted shard:\n"
                         << ReadFile(shards_[1].log) << "\ncoordinator:\n"
                         << ReadFile(coordinator_.log);
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  ExpectGolden(kSteps);
  EXPECT_TRUE(
      absl::StrContains(ReadFile(coordinator_.log), "restoring every shard"))
      << ReadFile(coordinator_.log);
}

// F18 (and F8 on the shard side): shard 1 dies during the second
// checkpoint, after shard 0 wrote its part. Nothing is published; the
// restarted shard cleans its staging; every shard restores the first one.
TEST_F(CheckpointClusterTest, F18_ShardKilledMidCheckpointPublishesNothing) {
  ASSERT_NO_FATAL_FAILURE(
      StartCluster("ps.checkpoint.after_link_before_manifest=1*crash"));
  std::vector<Proc> workers;
  for (int i = 0; i < 2; ++i) {
    workers.push_back(StartWorker(i, {"--pause_after_pull_ms=20"}));
  }
  constexpr uint64_t kSteps = 60;
  ASSERT_TRUE(Submit(kSteps).ok());
  ASSERT_TRUE(
      WaitFor([&] { return CompletedThrough() >= 5; }, absl::Seconds(60)));
  auto c1 = Trigger();
  ASSERT_TRUE(c1.ok()) << c1.status();
  ASSERT_TRUE(WaitFor([&] { return CompletedThrough() >= c1->step_id() + 5; },
                      absl::Seconds(60)));
  auto c2 = Trigger();
  EXPECT_FALSE(c2.ok());
  ASSERT_TRUE(shards_[1].process->Wait(absl::Seconds(30)).ok())
      << "shard 1 should have crashed at the failpoint";
  auto list = List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].checkpoint_id(), c1->checkpoint_id());
  const int port = PortOf(shards_[1].address);
  shards_[1] = StartDaemon("plexus-ps", shards_[1].dir, {"--shard=1"}, port);
  ASSERT_FALSE(shards_[1].address.empty());
  ASSERT_TRUE(WaitUntilServing(shards_[1].address, absl::Seconds(60)).ok());
  // Staging left by the crash is gone; shard 0 dropped its part.
  const std::string staging = shards_[1].dir + "/data/checkpoints/.staging";
  EXPECT_TRUE(!fs::exists(staging) || fs::is_empty(staging));
  auto done = Join(absl::Seconds(180));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->state(), v1::JOB_STATE_SUCCEEDED);
  ExpectGolden(kSteps);
  EXPECT_EQ(List().front().checkpoint_id(), c1->checkpoint_id());
}

// F8 on the coordinator side: it dies between writing the manifest and
// renaming it. The restarted coordinator lists only the first checkpoint
// and the half-written manifest is gone.
TEST_F(CheckpointClusterTest, F8_CoordinatorKilledBeforeManifestRename) {
  ASSERT_NO_FATAL_FAILURE(StartCluster(
      "", "coordinator.checkpoint.before_manifest_rename=1*crash"));
  std::vector<Proc> workers;
  workers.push_back(StartWorker(0));
  ASSERT_TRUE(Submit(10).ok());
  auto done = Join(absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  auto c1 = Trigger();
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_FALSE(Trigger().ok());
  ASSERT_TRUE(coordinator_.process->Wait(absl::Seconds(30)).ok());
  const int port = PortOf(coordinator_.address);
  coordinator_ = StartDaemon("plexus-coordinator", coordinator_.dir,
                             CoordinatorFlags(), port);
  ASSERT_FALSE(coordinator_.address.empty());
  ConnectCoordinator();
  ASSERT_TRUE(
      WaitFor([&] { return CompletedThrough() == 10; }, absl::Seconds(30)));
  auto list = List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].checkpoint_id(), c1->checkpoint_id());
  for (const auto& e : fs::directory_iterator(coordinator_.dir +
                                              "/data/checkpoints/manifests")) {
    EXPECT_NE(e.path().extension(), ".tmp") << e.path();
  }
  // The next checkpoint gets a fresh id and works.
  auto c3 = Trigger();
  ASSERT_TRUE(c3.ok()) << c3.status();
  EXPECT_GT(c3->checkpoint_id(), c1->checkpoint_id() + 1);
  ExpectGolden(10);
}

// F15 and F14 through the coordinator.
TEST_F(CheckpointClusterTest,
       DamagedCheckpointFallsBackAndFullDiskPublishesNothing) {
  ASSERT_NO_FATAL_FAILURE(StartCluster());
  std::vector<Proc> workers;
  workers.push_back(StartWorker(0));
  ASSERT_TRUE(Submit(10).ok());
  ASSERT_TRUE(Join(absl::Seconds(60)).ok());
  auto c1 = Trigger();
  ASSERT_TRUE(c1.ok()) << c1.status();
  KillAndWait(workers[0]);
  // Change the state, then a second checkpoint.
  std::vector<float> g(kGoldenElements, -1.0f);
  ASSERT_TRUE(ps_->PushDense(kVariable, g).ok());
  auto c2 = Trigger();
  ASSERT_TRUE(c2.ok()) << c2.status();

  // F14: a full disk on shard 0 fails the next checkpoint; both shards
  // serve and nothing new is published.
  {
    auto ps0 = v1::ParameterServer::NewStub(grpc::CreateChannel(
        shards_[0].address, grpc::InsecureChannelCredentials()));
    v1::SetFailpointRequest f;
    f.set_name("ps.checkpoint.write");
    f.set_action("error(RESOURCE_EXHAUSTED)");
    v1::SetFailpointResponse fr;
    ASSERT_TRUE(
        Call([&](auto* c) { return ps0->SetFailpoint(c, f, &fr); }).ok());
    auto full = Trigger();
    EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted)
        << full.status();
    EXPECT_EQ(List().size(), 2u);
    for (const Proc& s : shards_) {
      auto h = CheckHealth(s.address, absl::Seconds(5));
      ASSERT_TRUE(h.ok()) << h.status();
      EXPECT_EQ(*h, Health::kServing);
    }
    f.set_action("off");
    ASSERT_TRUE(
        Call([&](auto* c) { return ps0->SetFailpoint(c, f, &fr); }).ok());
  }

  // F15: flip a byte in a file of checkpoint 2 on shard 1 that checkpoint 1
  // does not share.
  const auto& part = c2->manifest().shards(1);
  const std::string root = shards_[1].dir + "/data/checkpoints/";
  std::string victim;
  for (const auto& f : part.files()) {
    const std::string p2 = root + part.directory() + "/" + f.path();
    const std::string p1 =
        root + c1->manifest().shards(1).directory() + "/" + f.path();
    std::error_code ec;
    if (absl::EndsWith(f.path(), ".sst") && !fs::equivalent(p1, p2, ec)) {
      victim = p2;
    }
  }
  ASSERT_FALSE(victim.empty());
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(32);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(32);
    f.write(&c, 1);
  }
  auto strict = Restore(c2->checkpoint_id(), false);
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kDataLoss)
      << strict.status();
  auto r = Restore(0, true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest().checkpoint_id(), c1->checkpoint_id());
  ASSERT_EQ(r->skipped_size(), 1);
  EXPECT_TRUE(absl::StrContains(r->skipped(0).message(),
                                fs::path(victim).filename().string()))
      << r->skipped(0).message();
  // The job's steps after C run again: with a worker back, golden again.
  workers[0] = StartWorker(0);
  auto done = Join(absl::Seconds(60));
  ASSERT_TRUE(done.ok()) << done.status();
  ExpectGolden(10);
}

}  // namespace
}  // namespace plexus
