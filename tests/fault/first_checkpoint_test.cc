// Finding 1 of README.md and F18 of ../shared/FAULTS.md on the shared harness
// with the golden workload: a PS shard lost right after it committed its
// part of a global checkpoint, before the coordinator published it.
//
//  - The *first* checkpoint: shard 0 dies (failpoint crash) once its part is
//    committed on disk, before its CommitCheckpoint answers. Nothing is
//    published yet. The checkpoint is in doubt; once the shard is back it
//    hands over its committed part, the checkpoint is published and every
//    shard restores it: the job ends golden (it used to hang: the restarted
//    shard waited for a restore of an unpublished checkpoint for ever).
//  - A published checkpoint P exists and a newer one X is committed on
//    shard 0 but never published (shard 0 dies at its commit while shard 1's
//    write fails, so the coordinator abandons X while shard 0 is away). The
//    coordinator abandons X on the restarted shard and restores P
//    everywhere: X never counts (F18).
//  - Nothing published and the coordinator lost too: the restarted shard
//    stops waiting and the job ends (FAILED, naming what the shard lost)
//    instead of hanging.
//  - A call the shard cancels is retried by the PS client (a nemesis
//    finding: a pull cancelled by a draining shard failed the job).
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "tests/fault/fault_cluster.h"
#include "tests/integration/golden.h"
#include "tests/util/test_env.h"

namespace plexus::fault {
namespace {

using ::plexus::testing::TempDir;

constexpr char kCommitFailpoint[] = "ps.checkpoint.after_commit_before_reply";

class FirstCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    FaultClusterOptions o;
    o.root_dir = dir_.Sub("cluster");
    o.num_ps = 2;
    o.coordinator_knows_shards = true;
    o.coordinator_flags = {"--checkpoint_every_steps=10",
                           "--no_worker_timeout_ms=60000"};
    auto c = FaultCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
  }

  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      LOG(INFO) << "logs of the failed test:" << cluster_->Logs();
    }
  }

  void StartWorkers() {
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(cluster_->StartWorker(i, {"--pause_after_pull_ms=20"}).ok());
    }
  }

  // The published checkpoints, newest first (empty if the coordinator does
  // not answer).
  std::vector<v1::CheckpointManifest> Published() {
    v1::ListCheckpointsRequest req;
    v1::ListCheckpointsResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    if (!cluster_->coordinator_stub()->ListCheckpoints(&ctx, req, &resp).ok()) {
      return {};
    }
    return {resp.manifests().begin(), resp.manifests().end()};
  }

  // The checkpoint ids present (committed or published) in shard i's
  // checkpoint folder, highest first.
  std::vector<uint64_t> OnDisk(int i) {
    std::vector<uint64_t> ids;
    std::error_code ec;
    // <member folder>/data is the shard's --data_dir.
    for (const auto& e : std::filesystem::directory_iterator(
             cluster_->ps(i).dir + "/data/checkpoints", ec)) {
      uint64_t id = 0;
      if (absl::SimpleAtoi(e.path().filename().string(), &id)) {
        ids.push_back(id);
      }
    }
    std::sort(ids.rbegin(), ids.rend());
    return ids;
  }

  TempDir dir_;
  std::unique_ptr<FaultCluster> cluster_;
};

TEST_F(FirstCheckpointTest, ShardLostAfterCommittingTheFirstCheckpoint) {
  ASSERT_TRUE(
      cluster_->SetFailpoint(cluster_->ps(0), kCommitFailpoint, "crash").ok());
  ASSERT_NO_FATAL_FAILURE(StartWorkers());
  constexpr uint64_t kSteps = 60;
  ASSERT_TRUE(cluster_->Submit(kSteps).ok());
  absl::StatusOr<int> code = cluster_->ps(0).process->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status() << cluster_->Logs();
  // Its part of checkpoint 1 is committed on disk; nothing is published.
  EXPECT_EQ(OnDisk(0), std::vector<uint64_t>{1});
  EXPECT_TRUE(Published().empty());
  ASSERT_TRUE(cluster_->Restart(cluster_->ps(0)).ok());
  absl::Status st = cluster_->CheckJobGolden(kSteps, absl::Seconds(90));
  EXPECT_TRUE(st.ok()) << st << cluster_->Logs();
  // Checkpoint 1 got published from the parts and restored on every shard.
  EXPECT_TRUE(absl::StrContains(ReadFile(cluster_->ps(0).log),
                                "restored checkpoint 1 (step"))
      << cluster_->Logs();
  EXPECT_TRUE(absl::StrContains(ReadFile(cluster_->ps(1).log),
                                "restored checkpoint 1 (step"))
      << cluster_->Logs();
}

TEST_F(FirstCheckpointTest, NewerUnpublishedCheckpointNeverCounts) {
  // Checkpoint 1 is published. At checkpoint 2 (X), shard 1's write fails
  // (so the coordinator abandons X) and shard 0 dies once its part is
  // committed, so it never hears that X was abandoned.
  ASSERT_TRUE(cluster_
                  ->SetFailpoint(cluster_->ps(1), "ps.checkpoint.before_link",
                                 "1*error(INTERNAL)")
                  .ok());
  ASSERT_TRUE(
      cluster_->SetFailpoint(cluster_->ps(0), kCommitFailpoint, "1*crash")
          .ok());
  ASSERT_NO_FATAL_FAILURE(StartWorkers());
  constexpr uint64_t kSteps = 80;
  ASSERT_TRUE(cluster_->Submit(kSteps).ok());
  absl::StatusOr<int> code = cluster_->ps(0).process->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status() << cluster_->Logs();
  // Shard 1's write of X may still be going on: clear its failpoint only
  // once it has failed.
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(ReadFile(cluster_->ps(1).log),
                                 "failpoint ps.checkpoint.before_link: error");
      },
      absl::Seconds(60)))
      << cluster_->Logs();
  ASSERT_TRUE(
      cluster_->SetFailpoint(cluster_->ps(1), "ps.checkpoint.before_link", "")
          .ok());
  std::vector<v1::CheckpointManifest> published = Published();
  ASSERT_FALSE(published.empty());
  const uint64_t p = published[0].checkpoint_id();
  EXPECT_EQ(p, 1u);
  std::vector<uint64_t> on_disk = OnDisk(0);
  ASSERT_FALSE(on_disk.empty());
  const uint64_t x = on_disk[0];
  ASSERT_GT(x, p) << "shard 0 holds no checkpoint newer than the published";
  ASSERT_TRUE(cluster_->Restart(cluster_->ps(0)).ok());
  // Every shard restores P, and X is gone from shard 0 before that.
  const std::string restored = absl::StrCat("restored checkpoint ", p, " (");
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(ReadFile(cluster_->ps(0).log), restored);
      },
      absl::Seconds(60)))
      << cluster_->Logs();
  on_disk = OnDisk(0);
  EXPECT_EQ(std::count(on_disk.begin(), on_disk.end(), x), 0)
      << "unpublished checkpoint " << x << " is still on shard 0";
  // Only unpublished checkpoints are abandoned: P stays.
  {
    auto stub = v1::ParameterServer::NewStub(grpc::CreateChannel(
        cluster_->ps(0).address, grpc::InsecureChannelCredentials()));
    v1::FinalizeCheckpointRequest req;
    req.set_checkpoint_id(p);
    req.set_published(false);
    v1::FinalizeCheckpointResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    grpc::Status gs = stub->FinalizeCheckpoint(&ctx, req, &resp);
    EXPECT_EQ(gs.error_code(), grpc::StatusCode::FAILED_PRECONDITION)
        << gs.error_message();
  }
  absl::Status st = cluster_->CheckJobGolden(kSteps, absl::Seconds(120));
  EXPECT_TRUE(st.ok()) << st << cluster_->Logs();
  EXPECT_TRUE(absl::StrContains(ReadFile(cluster_->ps(1).log), restored))
      << cluster_->Logs();
}

// Shard 0 dies after committing its part of the first checkpoint and the
// coordinator dies too, forgetting that the checkpoint is in doubt. Nothing
// is published: the restarted coordinator abandons the committed part on
// shard 0, which stops waiting for a restore that cannot come and serves
// its (empty) state. Its state is lost, so the job cannot end golden, but
// it ends (the golden variable is gone from shard 0: its steps fail) instead
// of hanging.
TEST_F(FirstCheckpointTest, NothingPublishedAndCoordinatorLostDoesNotHang) {
  ASSERT_TRUE(
      cluster_->SetFailpoint(cluster_->ps(0), kCommitFailpoint, "crash").ok());
  ASSERT_NO_FATAL_FAILURE(StartWorkers());
  // Long enough that the first checkpoint (every 10 steps, looked for every
  // 200 ms) cuts well before the end: one that cut at the last step left no
  // step to fail, and the job ended OK (a flake under a loaded CI machine).
  ASSERT_TRUE(cluster_->Submit(600).ok());
  absl::StatusOr<int> code = cluster_->ps(0).process->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status() << cluster_->Logs();
  ASSERT_TRUE(cluster_->Signal(cluster_->coordinator(), SIGKILL).ok());
  EXPECT_EQ(OnDisk(0), std::vector<uint64_t>{1});
  ASSERT_TRUE(cluster_->Restart(cluster_->ps(0)).ok());
  ASSERT_TRUE(cluster_->Restart(cluster_->coordinator()).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return absl::StrContains(ReadFile(cluster_->ps(0).log),
                                 "no checkpoint left to restore");
      },
      absl::Seconds(60)))
      << cluster_->Logs();
  EXPECT_TRUE(OnDisk(0).empty());
  // The job ends (its steps fail on the lost variable) instead of hanging.
  ASSERT_TRUE(
      WaitFor([&] { return cluster_->JobStatus().ok(); }, absl::Seconds(30)));
  // Join answers with the job's error: the variable shard 0 lost.
  absl::StatusOr<v1::JobStatus> job = cluster_->Join(absl::Seconds(90));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kNotFound)
      << job.status() << cluster_->Logs();
  EXPECT_TRUE(
      absl::StrContains(job.status().message(), "no variable named 'golden'"))
      << job.status();
  absl::StatusOr<v1::GetJobStatusResponse> status = cluster_->JobStatus();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->status().state(), v1::JOB_STATE_FAILED);
}

// Found by the nemesis (round 5 of a 30-minute soak): a shard SIGTERMed
// with a pull still queued cancels it (the drain's
// grpc_server_cancel_all_calls), the client got CANCELLED, the golden step
// returned it and the job failed (CANCELLED is not retryable). The PS client
// never cancels its own calls, so it retries a CANCELLED like UNAVAILABLE
// (a push already applied is acknowledged as a duplicate). The race itself
// cannot be timed from outside; the shard answers CANCELLED once here
// through a failpoint instead.
TEST(PsClientCancelTest, CallCancelledByTheShardIsRetried) {
  TempDir dir;
  FaultClusterOptions o;
  o.root_dir = dir.Sub("cluster");
  auto c = FaultCluster::Start(o);
  ASSERT_TRUE(c.ok()) << c.status();
  FaultCluster& cluster = **c;
  Proc& ps = cluster.ps(0);
  ASSERT_TRUE(
      cluster.SetFailpoint(ps, "ps.push.before_apply", "error(CANCELLED)@1")
          .ok());
  std::vector<float> g(testing::kGoldenElements, -1.0f);
  absl::StatusOr<worker::PushResult> pushed =
      cluster.ps_client()->PushDense(kGoldenVariable, g);
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_TRUE(absl::StrContains(ReadFile(ps.log),
                                "failpoint ps.push.before_apply: error"));
  absl::StatusOr<std::vector<float>> w = cluster.Values();
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(*w, std::vector<float>(testing::kGoldenElements, 1.0f));
}

}  // namespace
}  // namespace plexus::fault
