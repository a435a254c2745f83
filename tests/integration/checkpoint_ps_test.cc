// The checkpoint RPCs of a real plexus-ps (ps.proto PrepareCheckpoint,
// CommitCheckpoint, FinalizeCheckpoint, Restore, ListCheckpoints): a
// checkpoint taken, the state changed, restored (also by a restarted process
// on the same folder); paths outside the root refused; a flipped byte is
// DATA_LOSS naming the file with the state unchanged; a full disk (failpoint,
// and a real tmpfs where this test may mount one) is RESOURCE_EXHAUSTED with
// the shard serving and nothing published; health is NOT_SERVING while a
// restore runs; a second shard on the same folder exits 1 (FAULTS.md F14,
// F15, F16).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/error_info.h"
#include "common/grpc_status.h"
#include "common/health_client.h"
#include "common/process.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

namespace fs = std::filesystem;
using ::plexus::testing::BinDir;
using ::plexus::testing::TempDir;

constexpr int64_t kDim = 4;

struct Shard {
  std::unique_ptr<Subprocess> proc;
  std::string address;
  std::unique_ptr<v1::ParameterServer::Stub> stub;
};

// Starts plexus-ps on `data_dir` (with the failpoint RPC); its log goes to
// `log`.
Shard StartPs(const std::string& data_dir, const std::string& port_file,
              const std::string& log) {
  Shard s;
  std::error_code ec;
  fs::remove(port_file, ec);
  SubprocessOptions o;
  o.argv = {BinDir() + "/plexus-ps", "--data_dir=" + data_dir,
            "--port_file=" + port_file, "--admin_port=-1", "--failpoint_rpc"};
  o.log_file = log;
  auto p = Subprocess::Start(o);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return s;
  s.proc = std::move(*p);
  auto port = WaitForPortFile(port_file, absl::Seconds(30), s.proc.get());
  EXPECT_TRUE(port.ok()) << port.status();
  if (!port.ok()) return s;
  s.address = "127.0.0.1:" + std::to_string(*port);
  s.stub = v1::ParameterServer::NewStub(
      grpc::CreateChannel(s.address, grpc::InsecureChannelCredentials()));
  return s;
}

template <typename F>
absl::Status Call(F rpc, absl::Duration timeout = absl::Seconds(60)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return FromGrpcStatus(rpc(&ctx));
}

class CheckpointPsTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  void Start(const std::string& data = "") {
    shard_ = StartPs(data.empty() ? dir_.Sub("data") : data, dir_.Sub("port"),
                     dir_.Sub("log"));
    ASSERT_NE(shard_.stub, nullptr);
  }
  v1::ParameterServer::Stub* stub() { return shard_.stub.get(); }
  std::string Root(const std::string& data = "") {
    return (data.empty() ? dir_.Sub("data") : data) + "/checkpoints";
  }

  void CreateResources() {
    v1::CreateTableRequest t;
    t.mutable_config()->set_name("emb");
    t.mutable_config()->set_dim(kDim);
    t.mutable_config()
        ->mutable_optimizer()
        ->mutable_adagrad()
        ->set_learning_rate(0.5);
    t.mutable_config()
        ->mutable_optimizer()
        ->mutable_adagrad()
        ->set_initial_accumulator_value(0.1);
    t.mutable_config()->mutable_consistency()->set_mode(
        v1::CONSISTENCY_MODE_ASYNC);
    v1::CreateTableResponse tr;
    ASSERT_TRUE(
        Call([&](auto* c) { return stub()->CreateTable(c, t, &tr); }).ok());
    v1::CreateVariableRequest v;
    v.mutable_config()->set_name("w");
    v.mutable_config()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    v.mutable_config()->mutable_spec()->add_shape(3);
    v.mutable_config()->mutable_spec()->add_shape(2);
    v.mutable_config()->mutable_optimizer()->mutable_sgd()->set_learning_rate(
        1);
    v.mutable_config()->mutable_consistency()->set_mode(
        v1::CONSISTENCY_MODE_ASYNC);
    v.mutable_rows()->set_row_end(3);
    v1::CreateVariableResponse vr;
    ASSERT_TRUE(
        Call([&](auto* c) { return stub()->CreateVariable(c, v, &vr); }).ok());
  }

  // Pushes gradient `g` to rows `ids` of "emb" and to every element of "w",
  // as step `step`.
  absl::Status PushAll(const std::vector<uint64_t>& ids, float g, uint64_t step,
                       const std::string& job = "",
                       v1::PushOutcome* outcome = nullptr) {
    v1::PushRequest req;
    req.mutable_header()->set_job_id(job);
    req.mutable_header()->set_step_id(step);
    req.mutable_header()->set_worker_id(1);
    req.mutable_header()->set_worker_incarnation(1);
    auto* u = req.add_sparse();
    u->set_table("emb");
    for (uint64_t id : ids) u->add_ids(id);
    std::vector<float> grads(ids.size() * kDim, g);
    u->mutable_grads()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    u->mutable_grads()->mutable_spec()->add_shape(
        static_cast<int64_t>(ids.size()));
    u->mutable_grads()->mutable_spec()->add_shape(kDim);
    u->mutable_grads()->set_data(grads.data(), grads.size() * sizeof(float));
    auto* d = req.add_dense();
    d->set_variable("w");
    d->mutable_rows()->set_row_end(3);
    std::vector<float> dg(6, g);
    d->mutable_tensor()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    d->mutable_tensor()->mutable_spec()->add_shape(3);
    d->mutable_tensor()->mutable_spec()->add_shape(2);
    d->mutable_tensor()->set_data(dg.data(), dg.size() * sizeof(float));
    v1::PushResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub()->Push(c, req, &resp); });
    if (outcome != nullptr) *outcome = resp.outcome();
    return st;
  }

  // The bytes of rows 0..9 of "emb" and of "w" (empty on error).
  std::string Snapshot() {
    v1::PullRequest req;
    auto* l = req.add_sparse();
    l->set_table("emb");
    for (uint64_t id = 0; id < 10; ++id) l->add_ids(id);
    auto* d = req.add_dense();
    d->set_variable("w");
    d->mutable_rows()->set_row_end(3);
    v1::PullResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub()->Pull(c, req, &resp); });
    if (!st.ok()) return "";
    return resp.sparse(0).values().data() + resp.dense(0).tensor().data();
  }

  absl::StatusOr<v1::ShardCheckpoint> Checkpoint(uint64_t id, uint64_t step,
                                                 uint64_t base = 0,
                                                 uint32_t keep_last = 0) {
    v1::PrepareCheckpointRequest p;
    p.set_checkpoint_id(id);
    p.set_step_id(step);
    p.set_base_checkpoint_id(base);
    v1::PrepareCheckpointResponse pr;
    absl::Status st =
        Call([&](auto* c) { return stub()->PrepareCheckpoint(c, p, &pr); });
    if (!st.ok()) return st;
    v1::CommitCheckpointRequest c;
    c.set_checkpoint_id(id);
    v1::CommitCheckpointResponse cr;
    st = Call([&](auto* ctx) { return stub()->CommitCheckpoint(ctx, c, &cr); });
    if (!st.ok()) return st;
    v1::FinalizeCheckpointRequest f;
    f.mutable_header()->set_job_id(job_);
    f.set_checkpoint_id(id);
    f.set_published(true);
    f.set_keep_last(keep_last);
    v1::FinalizeCheckpointResponse fr;
    st = Call(
        [&](auto* ctx) { return stub()->FinalizeCheckpoint(ctx, f, &fr); });
    if (!st.ok()) return st;
    return cr.shard_checkpoint();
  }

  static v1::CheckpointManifest Manifest(uint64_t id, uint64_t step,
                                         const v1::ShardCheckpoint& shard) {
    v1::CheckpointManifest m;
    m.set_checkpoint_id(id);
    m.set_step_id(step);
    *m.add_shards() = shard;
    return m;
  }

  absl::StatusOr<v1::RestoreResponse> Restore(const v1::CheckpointManifest& m) {
    v1::RestoreRequest r;
    *r.mutable_manifest() = m;
    v1::RestoreResponse resp;
    absl::Status st =
        Call([&](auto* c) { return stub()->Restore(c, r, &resp); });
    if (!st.ok()) return st;
    return resp;
  }

  absl::Status SetFailpoint(const std::string& name,
                            const std::string& action) {
    v1::SetFailpointRequest r;
    r.set_name(name);
    r.set_action(action);
    v1::SetFailpointResponse resp;
    return Call([&](auto* c) { return stub()->SetFailpoint(c, r, &resp); });
  }

  std::vector<v1::ShardCheckpointInfo> List() {
    v1::ListShardCheckpointsRequest r;
    v1::ListShardCheckpointsResponse resp;
    EXPECT_TRUE(Call([&](auto* c) {
                  return stub()->ListCheckpoints(c, r, &resp);
                }).ok());
    return {resp.checkpoints().begin(), resp.checkpoints().end()};
  }

  void ExpectServing() {
    auto h = CheckHealth(shard_.address, absl::Seconds(5));
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(*h, Health::kServing);
  }

  TempDir dir_;
  Shard shard_;
  // The job Checkpoint() publishes for.
  std::string job_;
};

TEST_F(CheckpointPsTest, CheckpointChangeRestore) {
  CreateResources();
  ASSERT_TRUE(PushAll({1, 2, 3}, 1.0f, 1).ok());
  auto c1 = Checkpoint(1, 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  EXPECT_EQ(c1->directory(), "1");
  EXPECT_FALSE(c1->files().empty());
  EXPECT_NE(c1->server_incarnation(), 0u);
  const std::string at1 = Snapshot();
  ASSERT_FALSE(at1.empty());

  // An incremental checkpoint after a change to one row.
  ASSERT_TRUE(PushAll({2}, 0.5f, 2).ok());
  auto c2 = Checkpoint(2, 2, /*base=*/1);
  ASSERT_TRUE(c2.ok()) << c2.status();
  EXPECT_LT(c2->new_bytes(), c2->total_bytes());
  const std::string at2 = Snapshot();
  ASSERT_NE(at1, at2);

  auto list = List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].checkpoint_id(), 2u);
  EXPECT_EQ(list[0].state(), v1::SHARD_CHECKPOINT_STATE_PUBLISHED);
  EXPECT_EQ(list[0].shard_checkpoint().files_size(), c2->files_size());

  ASSERT_TRUE(PushAll({1, 7}, 2.0f, 3).ok());
  ASSERT_NE(Snapshot(), at2);
  auto r = Restore(Manifest(1, 1, *c1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->checkpoint_id(), 1u);
  EXPECT_EQ(r->step_id(), 1u);
  EXPECT_EQ(Snapshot(), at1);
  r = Restore(Manifest(2, 2, *c2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Snapshot(), at2);

  v1::GetShardInfoRequest gi;
  v1::GetShardInfoResponse info;
  ASSERT_TRUE(
      Call([&](auto* c) { return stub()->GetShardInfo(c, gi, &info); }).ok());
  EXPECT_EQ(info.restored_checkpoint_id(), 2u);
  EXPECT_EQ(info.last_checkpoint_id(), 2u);

  // Retention: a third checkpoint keeping one deletes 1 and 2.
  ASSERT_TRUE(PushAll({3}, 1.0f, 4).ok());
  auto c3 = Checkpoint(3, 4, 2, /*keep_last=*/1);
  ASSERT_TRUE(c3.ok()) << c3.status();
  list = List();
  ASSERT_FALSE(list.empty());
  EXPECT_EQ(list[0].checkpoint_id(), 3u);
  EXPECT_EQ(list[0].state(), v1::SHARD_CHECKPOINT_STATE_PUBLISHED);
  for (size_t i = 1; i < list.size(); ++i) {
    EXPECT_EQ(list[i].state(), v1::SHARD_CHECKPOINT_STATE_ABORTED);
  }
  EXPECT_FALSE(fs::exists(Root() + "/1"));
  EXPECT_FALSE(fs::exists(Root() + "/2"));
  EXPECT_TRUE(fs::exists(Root() + "/3"));
  ExpectServing();
}

// A push of a step inside the newest published checkpoint of its job is a
// late copy of one applied before (its record was trimmed at publish): it
// is acknowledged as a duplicate and not applied.
TEST_F(CheckpointPsTest, LatePushInsideThePublishedCheckpointIsADuplicate) {
  CreateResources();
  job_ = "j";
  ASSERT_TRUE(PushAll({1}, 1.0f, 4, "j").ok());
  ASSERT_TRUE(PushAll({1}, 1.0f, 5, "j").ok());
  ASSERT_TRUE(Checkpoint(1, 5).ok());
  const std::string at5 = Snapshot();
  v1::PushOutcome outcome = v1::PUSH_OUTCOME_UNSPECIFIED;
  ASSERT_TRUE(PushAll({1}, 1.0f, 4, "j", &outcome).ok());
  EXPECT_EQ(outcome, v1::PUSH_OUTCOME_DUPLICATE);
  EXPECT_EQ(Snapshot(), at5);
  // Later steps, and other jobs, apply.
  ASSERT_TRUE(PushAll({1}, 1.0f, 6, "j", &outcome).ok());
  EXPECT_EQ(outcome, v1::PUSH_OUTCOME_APPLIED);
  const std::string at6 = Snapshot();
  EXPECT_NE(at6, at5);
  ASSERT_TRUE(PushAll({1}, 1.0f, 4, "other", &outcome).ok());
  EXPECT_EQ(outcome, v1::PUSH_OUTCOME_APPLIED);
  EXPECT_NE(Snapshot(), at6);
}

TEST_F(CheckpointPsTest, RestartedShardRestoresFromItsFolder) {
  CreateResources();
  ASSERT_TRUE(PushAll({1, 2, 3}, 1.0f, 1).ok());
  auto c1 = Checkpoint(1, 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  const std::string at1 = Snapshot();
  ASSERT_TRUE(shard_.proc->Signal(SIGKILL).ok());
  ASSERT_TRUE(shard_.proc->Wait(absl::Seconds(30)).ok());
  Start();
  // A fresh process: empty until restored.
  EXPECT_EQ(Snapshot(), "");
  auto r = Restore(Manifest(1, 1, *c1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Snapshot(), at1);
  // Describe knows the restored configs (clients learn shapes from it).
  v1::DescribeRequest d;
  d.set_name("w");
  v1::DescribeResponse dr;
  ASSERT_TRUE(Call([&](auto* c) { return stub()->Describe(c, d, &dr); }).ok());
  ASSERT_EQ(dr.variable().config().spec().shape_size(), 2);
  EXPECT_EQ(dr.variable().config().spec().shape(0), 3);
  // And training continues on the restored state.
  ASSERT_TRUE(PushAll({1}, 1.0f, 2).ok());
  EXPECT_NE(Snapshot(), at1);
}

TEST_F(CheckpointPsTest, PathsOutsideTheRootAreRefused) {
  CreateResources();
  ASSERT_TRUE(PushAll({1}, 1.0f, 1).ok());
  const std::string outside = dir_.Sub("escaped");
  struct Case {
    std::string directory, staging;
  };
  for (const Case& c : std::vector<Case>{{"../escaped", ""},
                                         {outside, ""},
                                         {"a/../../escaped", ""},
                                         {"ok", "../escaped"},
                                         {"ok", outside},
                                         {"ok", "not-staging/x"}}) {
    v1::PrepareCheckpointRequest p;
    p.set_checkpoint_id(9);
    p.set_step_id(1);
    p.set_directory(c.directory);
    p.set_staging_directory(c.staging);
    v1::PrepareCheckpointResponse pr;
    absl::Status st =
        Call([&](auto* ctx) { return stub()->PrepareCheckpoint(ctx, p, &pr); });
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument)
        << c.directory << " " << c.staging << ": " << st;
  }
  EXPECT_FALSE(fs::exists(outside));
  // Restore from outside the root: by directory and by manifest path.
  v1::ShardCheckpoint bad;
  bad.set_directory("../escaped");
  bad.add_files()->set_path("CURRENT");
  EXPECT_EQ(Restore(Manifest(1, 1, bad)).status().code(),
            absl::StatusCode::kInvalidArgument);
  bad.set_directory("1");
  bad.mutable_files(0)->set_path("../../x");
  EXPECT_EQ(Restore(Manifest(1, 1, bad)).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::RestoreRequest r;
  r.set_manifest_path("../../etc/passwd");
  v1::RestoreResponse resp;
  EXPECT_EQ(Call([&](auto* c) { return stub()->Restore(c, r, &resp); }).code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing was half-made: a proper checkpoint still works.
  for (const auto& l : List()) {
    EXPECT_NE(l.state(), v1::SHARD_CHECKPOINT_STATE_PUBLISHED);
  }
  EXPECT_TRUE(Checkpoint(1, 1).ok());
  ExpectServing();
}

TEST_F(CheckpointPsTest, FlippedByteIsDataLossNamingTheFile) {
  CreateResources();
  ASSERT_TRUE(PushAll({1, 2, 3}, 1.0f, 1).ok());
  auto c1 = Checkpoint(1, 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  const std::string at1 = Snapshot();
  ASSERT_TRUE(PushAll({2}, 1.0f, 2).ok());
  const std::string now = Snapshot();
  std::string victim;
  for (const auto& f : c1->files()) {
    if (absl::EndsWith(f.path(), ".sst")) victim = f.path();
  }
  ASSERT_FALSE(victim.empty());
  {
    std::fstream f(Root() + "/1/" + victim,
                   std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(64);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x01;
    f.seekp(64);
    f.write(&c, 1);
  }
  auto r = Restore(Manifest(1, 1, *c1));
  ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), victim)) << r.status();
  auto info = GetErrorInfo(r.status());
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), v1::ErrorInfo::REASON_CHECKSUM_MISMATCH);
  EXPECT_TRUE(absl::EndsWith(info->resource(), victim)) << info->resource();
  // Unchanged and serving.
  EXPECT_EQ(Snapshot(), now);
  ExpectServing();
  // Sizes only (skip_checksum_verification) does not see a flipped byte;
  // what matters here is that the default does, which it did.
  (void)at1;
}

TEST_F(CheckpointPsTest, HealthIsNotServingWhileRestoring) {
  CreateResources();
  ASSERT_TRUE(PushAll({1}, 1.0f, 1).ok());
  auto c1 = Checkpoint(1, 1);
  ASSERT_TRUE(c1.ok()) << c1.status();
  ASSERT_TRUE(SetFailpoint("ps.checkpoint.restore.load", "hang").ok());
  absl::Status restored;
  std::thread t([&] { restored = Restore(Manifest(1, 1, *c1)).status(); });
  // The restore is parked in the failpoint: wait (bounded) for the health
  // to say so.
  bool not_serving = false;
  for (absl::Time end = absl::Now() + absl::Seconds(20);
       absl::Now() < end && !not_serving;) {
    auto h = CheckHealth(shard_.address, absl::Seconds(5));
    not_serving = h.ok() && *h == Health::kNotServing;
  }
  EXPECT_TRUE(not_serving);
  v1::PullRequest pull;
  pull.add_dense()->set_variable("w");
  pull.mutable_dense(0)->mutable_rows()->set_row_end(3);
  v1::PullResponse pr;
  absl::Status st = Call([&](auto* c) { return stub()->Pull(c, pull, &pr); });
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  ASSERT_TRUE(SetFailpoint("ps.checkpoint.restore.load", "off").ok());
  t.join();
  EXPECT_TRUE(restored.ok()) << restored;
  ExpectServing();
}

TEST_F(CheckpointPsTest, DiskFullFailpointIsResourceExhausted) {
  CreateResources();
  ASSERT_TRUE(PushAll({1, 2}, 1.0f, 1).ok());
  const std::string before = Snapshot();
  ASSERT_TRUE(
      SetFailpoint("ps.checkpoint.write", "error(RESOURCE_EXHAUSTED)").ok());
  auto c = Checkpoint(1, 1);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted)
      << c.status();
  ExpectServing();
  EXPECT_EQ(Snapshot(), before);
  EXPECT_FALSE(fs::exists(Root() + "/1"));
  // Space is back: the next checkpoint works.
  ASSERT_TRUE(SetFailpoint("ps.checkpoint.write", "off").ok());
  v1::FinalizeCheckpointRequest f;
  f.set_checkpoint_id(1);
  v1::FinalizeCheckpointResponse fr;
  EXPECT_TRUE(Call([&](auto* ctx) {
                return stub()->FinalizeCheckpoint(ctx, f, &fr);
              }).ok());
  auto c2 = Checkpoint(2, 1);
  EXPECT_TRUE(c2.ok()) << c2.status();
}

// F14 on a real full volume: the shard's folder on a small tmpfs.
TEST(CheckpointDiskFullTest, RealTmpfsVolume) {
  TempDir dir;
  const std::string mnt = dir.Sub("vol");
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=3m") != 0) {
    GTEST_SKIP() << "cannot mount a tmpfs here (" << std::strerror(errno)
                 << "); the failpoint variant covers the code path";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  Shard s = StartPs(mnt + "/data", dir.Sub("port"), dir.Sub("log"));
  ASSERT_NE(s.stub, nullptr);
  auto* stub = s.stub.get();
  v1::CreateTableRequest t;
  t.mutable_config()->set_name("big");
  t.mutable_config()->set_dim(64);
  t.mutable_config()->mutable_optimizer()->mutable_sgd()->set_learning_rate(1);
  t.mutable_config()->mutable_consistency()->set_mode(
      v1::CONSISTENCY_MODE_ASYNC);
  v1::CreateTableResponse tr;
  ASSERT_TRUE(Call([&](auto* c) { return stub->CreateTable(c, t, &tr); }).ok());
  // 16k rows x 64 x 4 bytes = 4 MiB of values: more than the volume holds.
  constexpr int kRows = 16 << 10;
  v1::PushRequest push;
  auto* u = push.add_sparse();
  u->set_table("big");
  std::vector<float> g(static_cast<size_t>(kRows) * 64);
  for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(i % 977);
  for (int i = 0; i < kRows; ++i) u->add_ids(static_cast<uint64_t>(i));
  u->mutable_grads()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  u->mutable_grads()->mutable_spec()->add_shape(kRows);
  u->mutable_grads()->mutable_spec()->add_shape(64);
  u->mutable_grads()->set_data(g.data(), g.size() * sizeof(float));
  v1::PushResponse pr;
  ASSERT_TRUE(Call([&](auto* c) { return stub->Push(c, push, &pr); }).ok());

  v1::PrepareCheckpointRequest p;
  p.set_checkpoint_id(1);
  p.set_step_id(0);
  v1::PrepareCheckpointResponse ppr;
  absl::Status st =
      Call([&](auto* c) { return stub->PrepareCheckpoint(c, p, &ppr); });
  if (st.ok()) {
    v1::CommitCheckpointRequest c;
    c.set_checkpoint_id(1);
    v1::CommitCheckpointResponse cr;
    st = Call([&](auto* ctx) { return stub->CommitCheckpoint(ctx, c, &cr); });
  }
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  // Still serving, nothing published, the staging space given back.
  auto h = CheckHealth(s.address, absl::Seconds(5));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, Health::kServing);
  EXPECT_FALSE(fs::exists(mnt + "/data/checkpoints/1"));
  v1::PullRequest pull;
  pull.add_sparse()->set_table("big");
  pull.mutable_sparse(0)->add_ids(5);
  v1::PullResponse pulled;
  EXPECT_TRUE(Call([&](auto* c) { return stub->Pull(c, pull, &pulled); }).ok());
  v1::FinalizeCheckpointRequest f;
  f.set_checkpoint_id(1);
  v1::FinalizeCheckpointResponse fr;
  EXPECT_TRUE(Call([&](auto* ctx) {
                return stub->FinalizeCheckpoint(ctx, f, &fr);
              }).ok());

  // Space returns (the volume grows): the next checkpoint is published.
  ASSERT_EQ(::mount("tmpfs", mnt.c_str(), "tmpfs", MS_REMOUNT, "size=64m"), 0)
      << std::strerror(errno);
  p.set_checkpoint_id(2);
  ASSERT_TRUE(
      Call([&](auto* c) { return stub->PrepareCheckpoint(c, p, &ppr); }).ok());
  v1::CommitCheckpointRequest c;
  c.set_checkpoint_id(2);
  v1::CommitCheckpointResponse cr;
  absl::Status ok =
      Call([&](auto* ctx) { return stub->CommitCheckpoint(ctx, c, &cr); });
  EXPECT_TRUE(ok.ok()) << ok;
  ASSERT_TRUE(s.proc->Signal(SIGKILL).ok());
  ASSERT_TRUE(s.proc->Wait(absl::Seconds(30)).ok());
}

TEST(CheckpointSecondShardTest, SameFolderExitsOne) {
  TempDir dir;
  Shard first = StartPs(dir.Sub("data"), dir.Sub("port1"), dir.Sub("log1"));
  ASSERT_NE(first.stub, nullptr);
  SubprocessOptions o;
  o.argv = {BinDir() + "/plexus-ps", "--data_dir=" + dir.Sub("data"),
            "--admin_port=-1"};
  o.log_file = dir.Sub("log2");
  auto second = Subprocess::Start(o);
  ASSERT_TRUE(second.ok()) << second.status();
  auto code = (*second)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1);
  std::ifstream log(dir.Sub("log2"));
  std::string text((std::istreambuf_iterator<char>(log)),
                   std::istreambuf_iterator<char>());
  EXPECT_TRUE(absl::StrContains(text, dir.Sub("data"))) << text;
  auto h = CheckHealth(first.address, absl::Seconds(5));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, Health::kServing);
}

}  // namespace
}  // namespace plexus
