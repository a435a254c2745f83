// The worker's PS client against real plexus-ps processes on 127.0.0.1.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <numeric>

#include <signal.h>

#include <cstdio>
#include <map>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/error_info.h"
#include "common/grpc_status.h"
#include "common/process.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::TempDir;
using worker::PsClient;

// An async SGD table from zeros.
v1::TableConfig SgdTable(const std::string& name, int64_t dim,
                         double learning_rate = 0.5) {
  v1::TableConfig t;
  t.set_name(name);
  t.set_dim(dim);
  t.mutable_optimizer()->mutable_sgd()->set_learning_rate(learning_rate);
  t.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  return t;
}

// A coordinator and `num_ps` shards under `dir`, each offering the direct
// data plane; the shards' addresses in `shards`.
// Test parameter: whether the client sends Pull and Push over the shards'
// direct data plane (plexus-ps --data_port) rather than gRPC. Every test
// below runs both ways: the planes must be indistinguishable to a caller.
std::string PlaneName(const ::testing::TestParamInfo<bool>& info) {
  return info.param ? "Direct" : "Grpc";
}

// Shards offer the direct data plane whether the client uses it or not.
const std::vector<std::string> kDataPort = {"--data_port=0"};

std::unique_ptr<local::LocalCluster> StartShards(
    const TempDir& dir, int num_ps, std::vector<std::string> extra_flags,
    std::vector<std::string>* shards) {
  local::LocalClusterOptions o;
  o.bin_dir = BinDir();
  o.root_dir = dir.Sub("cluster");
  o.num_ps = num_ps;
  o.extra_flags = std::move(extra_flags);
  o.ps_flags = kDataPort;
  auto c = local::LocalCluster::Start(o);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return nullptr;
  for (const auto& m : (*c)->members()) {
    if (m.role == "ps") shards->push_back(m.address);
  }
  return std::move(*c);
}

class PsClientTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    cluster_ = StartShards(dir_, 2, {}, &shards_);
    ASSERT_NE(cluster_, nullptr);
    worker::PsClientOptions co;
    co.shards = shards_;
    co.timeout = absl::Seconds(30);
    co.direct_data_plane = GetParam();
    auto client = PsClient::Connect(
        co, {.job_id = "job", .worker_id = 3, .worker_incarnation = 1});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  TempDir dir_;
  std::unique_ptr<local::LocalCluster> cluster_;
  std::vector<std::string> shards_;
  std::unique_ptr<PsClient> client_;
};

TEST_P(PsClientTest, SparsePushThenPullAcrossShards) {
  const int64_t dim = 4;
  ASSERT_TRUE(client_->CreateTable(SgdTable("emb", dim)).ok());
  // Creating again with the same config is fine.
  ASSERT_TRUE(client_->CreateTable(SgdTable("emb", dim)).ok());
  std::vector<uint64_t> ids(200);
  std::iota(ids.begin(), ids.end(), 1000);
  ids.push_back(1000);  // a duplicate id: its gradients are summed
  std::vector<float> grads(ids.size() * dim);
  for (size_t i = 0; i < grads.size(); ++i)
    grads[i] = static_cast<float>(i % 7);
  auto pushed = client_->PushSparse(
      "emb", ids, dim, grads, {.step_id = 1, .closure_id = 0, .push_seq = 0});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->rows_applied, 200);

  std::vector<float> out(ids.size() * dim);
  ASSERT_TRUE(client_->PullSparse("emb", ids, dim, absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    for (int64_t j = 0; j < dim; ++j) {
      float g = grads[i * dim + j];
      if (ids[i] == 1000) g = grads[j] + grads[200 * dim + j];
      EXPECT_FLOAT_EQ(out[i * dim + j], -0.5f * g) << "id " << ids[i];
    }
  }
  // Both shards hold rows.
  auto info = client_->ShardInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  ASSERT_EQ(info->size(), 2u);
  for (const auto& s : *info) {
    ASSERT_EQ(s.tables_size(), 1);
    EXPECT_GT(s.tables(0).rows_in_memory(), 50);
  }
}

TEST_P(PsClientTest, ARepeatedPushIsAppliedOnce) {
  const int64_t dim = 2;
  ASSERT_TRUE(client_->CreateTable(SgdTable("t", dim)).ok());
  std::vector<uint64_t> ids = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> grads(ids.size() * dim, 1.0f);
  worker::StepOptions step{.step_id = 5, .closure_id = 0, .push_seq = 0};
  auto first = client_->PushSparse("t", ids, dim, grads, step);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->duplicate_pieces, 0);
  auto again = client_->PushSparse("t", ids, dim, grads, step);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_GT(again->duplicate_pieces, 0);
  EXPECT_EQ(again->rows_applied, 0);
  std::vector<float> out(ids.size() * dim);
  ASSERT_TRUE(client_->PullSparse("t", ids, dim, absl::MakeSpan(out)).ok());
  for (float v : out) EXPECT_FLOAT_EQ(v, -0.5f);
}

TEST_P(PsClientTest, DenseVariableIsSlicedAcrossShards) {
  v1::VariableConfig v;
  v.set_name("w");
  v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  v.mutable_spec()->add_shape(10);
  v.mutable_spec()->add_shape(3);
  v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1.0);
  v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  std::vector<float> init(30);
  std::iota(init.begin(), init.end(), 0.0f);
  ASSERT_TRUE(client_->CreateVariable(v, init).ok());
  std::vector<float> out(30);
  ASSERT_TRUE(client_->PullDense("w", absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, init);
  std::vector<float> grad(30, 2.0f);
  auto pushed = client_->PushDense("w", grad, {.step_id = 1});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->rows_applied, 10);
  ASSERT_TRUE(client_->PullDense("w", absl::MakeSpan(out)).ok());
  for (int i = 0; i < 30; ++i) EXPECT_FLOAT_EQ(out[i], init[i] - 2.0f);
  // A buffer of the wrong size is refused before anything is sent.
  std::vector<float> wrong(7);
  EXPECT_EQ(client_->PullDense("w", absl::MakeSpan(wrong)).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(PsClientTest, OneDimensionalVariablesKeepTheirShape) {
  v1::VariableConfig v;
  v.set_name("bias");
  v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  v.mutable_spec()->add_shape(9);
  v.mutable_optimizer()->mutable_sgd()->set_learning_rate(0.5);
  v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  ASSERT_TRUE(client_->CreateVariable(v).ok());
  std::vector<float> g(9, 2.0f);
  auto pushed = client_->PushDense("bias", g, {.step_id = 1});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  // Another client, which learns the shape from the shards.
  auto other = PsClient::Connect({.shards = shards_});
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->PushDense("bias", g, {.step_id = 2}).ok());
  std::vector<float> out(9);
  ASSERT_TRUE(client_->PullDense("bias", absl::MakeSpan(out)).ok());
  for (float x : out) EXPECT_EQ(x, -2.0f);
}

TEST_P(PsClientTest, AStaleShardMapVersionIsRefusedWithTheCurrentOne) {
  auto stub = v1::ParameterServer::NewStub(
      grpc::CreateChannel(shards_[0], grpc::InsecureChannelCredentials()));
  v1::PullRequest req;
  req.mutable_header()->set_shard_map_version(99);
  v1::PullResponse resp;
  grpc::ClientContext ctx;
  absl::Status st = FromGrpcStatus(stub->Pull(&ctx, req, &resp));
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  auto info = GetErrorInfo(st);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reason(), v1::ErrorInfo::REASON_STALE_SHARD_MAP);
  EXPECT_EQ(info->current_shard_map_version(), client_->shard_map().version());
}

TEST_P(PsClientTest, AsyncPullsCompleteThroughTheirFutures) {
  const int64_t dim = 8;
  ASSERT_TRUE(client_->CreateTable(SgdTable("a", dim)).ok());
  std::vector<uint64_t> ids = {10, 20, 30};
  std::vector<float> out1(ids.size() * dim, 1.0f), out2(ids.size() * dim, 1.0f);
  auto f1 = client_->PullSparseAsync("a", ids, dim, absl::MakeSpan(out1));
  auto f2 = client_->PullSparseAsync("a", ids, dim, absl::MakeSpan(out2));
  ASSERT_TRUE(f1->Wait().ok());
  ASSERT_TRUE(f2->Wait(absl::Now() + absl::Seconds(30)).ok());
  for (float v : out1) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(out1, out2);
}

TEST_P(PsClientTest, UnknownTableIsNotFound) {
  std::vector<uint64_t> ids = {1};
  std::vector<float> out(4);
  EXPECT_EQ(client_->PullSparse("missing", ids, 4, absl::MakeSpan(out)).code(),
            absl::StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Planes, PsClientTest, ::testing::Bool(), PlaneName);

// One shard: a pull of distinct ids lands straight in the caller's buffer and
// a push leaves from the caller's gradients (the identity plan); repeated ids
// still get their gradients summed and their rows copied to every position.
class PsClientOneShardTest : public ::testing::TestWithParam<bool> {};

TEST_P(PsClientOneShardTest, DistinctAndRepeatedIdsBothRoundTrip) {
  TempDir dir;
  std::vector<std::string> shards;
  auto cluster = StartShards(dir, 1, {}, &shards);
  ASSERT_NE(cluster, nullptr);
  worker::PsClientOptions co;
  co.shards = shards;
  co.direct_data_plane = GetParam();
  auto client = PsClient::Connect(
      co, {.job_id = "job", .worker_id = 1, .worker_incarnation = 1});
  ASSERT_TRUE(client.ok()) << client.status();
  const int64_t dim = 3;
  ASSERT_TRUE((*client)->CreateTable(SgdTable("emb", dim, 1.0)).ok());
  // Distinct ids, in no particular order.
  const std::vector<uint64_t> distinct = {7, 3, 11, 5};
  std::vector<float> grads(distinct.size() * dim);
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = 1.0f + i;
  auto pushed = (*client)->PushSparse("emb", distinct, dim, grads,
                                      {.step_id = 1, .push_seq = 0});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->rows_applied, 4);
  std::vector<float> out(distinct.size() * dim, 99.0f);
  ASSERT_TRUE(
      (*client)->PullSparse("emb", distinct, dim, absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_EQ(out[i], -grads[i]) << i;
  // Repeated ids: 3 twice, 7 three times.
  const std::vector<uint64_t> repeated = {3, 7, 3, 7, 7};
  std::vector<float> ones(repeated.size() * dim, 1.0f);
  pushed = (*client)->PushSparse("emb", repeated, dim, ones,
                                 {.step_id = 2, .push_seq = 0});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->rows_applied, 2);
  std::vector<float> again(repeated.size() * dim, 99.0f);
  ASSERT_TRUE(
      (*client)->PullSparse("emb", repeated, dim, absl::MakeSpan(again)).ok());
  for (size_t i = 0; i < repeated.size(); ++i) {
    const size_t first = repeated[i] == 3 ? 1 : 0;  // position in `distinct`
    const float times = repeated[i] == 3 ? 2.0f : 3.0f;
    for (int64_t j = 0; j < dim; ++j) {
      EXPECT_EQ(again[i * dim + j], -grads[first * dim + j] - times)
          << "position " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Planes, PsClientOneShardTest, ::testing::Bool(),
                         PlaneName);

}  // namespace
}  // namespace plexus

namespace plexus {
namespace {

// Pushes that fail UNAVAILABLE are retried by the client; one whose update was
// applied before the error (the ack was lost) is de-duplicated on the retry:
// either way the update is applied exactly once.
// Parameters: the failpoint, and whether the direct data plane carries the
// pushes.
class PsClientRetryTest
    : public ::testing::TestWithParam<std::tuple<const char*, bool>> {};

TEST_P(PsClientRetryTest, UnavailablePushesAreRetriedAndAppliedOnce) {
  TempDir dir;
  std::vector<std::string> shards;
  auto cluster = StartShards(dir, 1, {"--failpoint_rpc"}, &shards);
  ASSERT_NE(cluster, nullptr);
  std::string shard = shards[0];
  const std::string failpoint = std::get<0>(GetParam());
  auto client = PsClient::Connect(
      {.shards = {shard}, .direct_data_plane = std::get<1>(GetParam())},
      {.job_id = "j", .worker_id = 1, .worker_incarnation = 1});
  ASSERT_TRUE(client.ok()) << client.status();
  v1::TableConfig t = SgdTable("t", 2, 1);
  ASSERT_TRUE((*client)->CreateTable(t).ok());

  // Arm: the next two pushes fail UNAVAILABLE at the failpoint.
  auto stub = v1::ParameterServer::NewStub(
      grpc::CreateChannel(shard, grpc::InsecureChannelCredentials()));
  v1::SetFailpointRequest fp;
  fp.set_name(failpoint);
  fp.set_action("error(UNAVAILABLE)@2");
  v1::SetFailpointResponse fpr;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->SetFailpoint(&ctx, fp, &fpr).ok());

  std::vector<uint64_t> ids = {7};
  std::vector<float> g = {1.0f, 2.0f};
  auto r = (*client)->PushSparse("t", ids, 2, g, {.step_id = 1});
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<float> out(2);
  ASSERT_TRUE((*client)->PullSparse("t", ids, 2, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, (std::vector<float>{-1.0f, -2.0f}))
      << "applied more than once";
  auto info = (*client)->ShardInfo();
  ASSERT_TRUE(info.ok());
  // After the ack was lost, the retries were recognised as duplicates.
  EXPECT_EQ((*info)[0].duplicate_pushes(),
            failpoint == "ps.apply.after_write_before_ack" ? 2 : 0);
}

INSTANTIATE_TEST_SUITE_P(
    Failpoints, PsClientRetryTest,
    ::testing::Combine(::testing::Values("ps.push.before_apply",
                                         "ps.apply.after_write_before_ack"),
                       ::testing::Bool()),
    [](const auto& info) {
      std::string n = std::get<0>(info.param);
      for (char& c : n)
        if (c == '.') c = '_';
      return n + (std::get<1>(info.param) ? "_Direct" : "_Grpc");
    });

}  // namespace
}  // namespace plexus

namespace plexus {
namespace {

// A shard that dies and comes back on the same address: the client's calls
// ride out the gap (UNAVAILABLE, retried) and re-install its shard map on the
// new process, whose (empty) state then answers for itself.
// Over the direct data plane the restarted shard listens on another data
// port with another key: the client's pooled connection fails, and it asks
// the new shard for its plane again.
class PsClientRestart : public ::testing::TestWithParam<bool> {};

TEST_P(PsClientRestart, ACallRidesOutAShardRestart) {
  TempDir dir;
  auto start = [&](int port) {
    SubprocessOptions o;
    o.argv = {BinDir() + "/plexus-ps", "--data_dir=" + dir.Sub("data"),
              "--port=" + std::to_string(port), "--data_port=0",
              "--port_file=" + dir.Sub("port")};
    o.log_file = dir.Sub("log");
    std::remove(dir.Sub("port").c_str());
    auto p = Subprocess::Start(o);
    EXPECT_TRUE(p.ok()) << p.status();
    auto bound = WaitForPortFile(dir.Sub("port"), absl::Seconds(30), p->get());
    EXPECT_TRUE(bound.ok()) << bound.status();
    return std::make_pair(std::move(*p), bound.ok() ? *bound : 0);
  };
  auto [ps, port] = start(0);
  ASSERT_GT(port, 0);
  auto client =
      PsClient::Connect({.shards = {"127.0.0.1:" + std::to_string(port)},
                         .timeout = absl::Seconds(60),
                         .direct_data_plane = GetParam()});
  ASSERT_TRUE(client.ok()) << client.status();
  v1::TableConfig t = SgdTable("t", 2, 1);
  ASSERT_TRUE((*client)->CreateTable(t).ok());

  ASSERT_TRUE(ps->Signal(SIGKILL).ok());
  ASSERT_TRUE(ps->Wait(absl::Seconds(10)).ok());
  absl::Status pulled;
  std::vector<uint64_t> ids = {1};
  std::vector<float> out(2);
  std::thread caller([&] {
    pulled = (*client)->PullSparse("t", ids, 2, absl::MakeSpan(out));
  });
  auto [ps2, port2] = start(port);
  ASSERT_EQ(port2, port);
  caller.join();
  // The new shard has the map again and no table: the answer is NOT_FOUND,
  // neither UNAVAILABLE nor a stale-map error.
  EXPECT_EQ(pulled.code(), absl::StatusCode::kNotFound) << pulled;
  ASSERT_TRUE((*client)->CreateTable(t).ok());
  EXPECT_TRUE((*client)->PullSparse("t", ids, 2, absl::MakeSpan(out)).ok());
}

INSTANTIATE_TEST_SUITE_P(Planes, PsClientRestart, ::testing::Bool(), PlaneName);

}  // namespace
}  // namespace plexus

namespace plexus {
namespace {

// Two shards, a client sending dense chunks of 3 rows of 5 fp32 (60 bytes;
// 64 does not hold a fourth), and a variable `name` of 37 x 5 rows (SGD,
// learning rate 1, every value 1).
class PsClientChunking : public ::testing::TestWithParam<bool> {
 protected:
  void StartWithVariable(const std::string& name) {
    std::vector<std::string> shards;
    cluster_ = StartShards(dir_, 2, {}, &shards);
    ASSERT_NE(cluster_, nullptr);
    auto client = PsClient::Connect(
        {.shards = shards, .chunk_bytes = 64, .direct_data_plane = GetParam()});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    v1::VariableConfig v;
    v.set_name(name);
    v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    v.mutable_spec()->add_shape(37);
    v.mutable_spec()->add_shape(5);
    v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1);
    v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
    v.mutable_initializer()->mutable_constant()->set_value(1);
    ASSERT_TRUE(client_->CreateVariable(v).ok());
  }

  TempDir dir_;
  std::unique_ptr<local::LocalCluster> cluster_;
  std::unique_ptr<PsClient> client_;
};

// With a 1 MiB message limit on both sides, a 6 MiB dense variable and a
// 20,000-row sparse push/pull are split into pieces that each fit, and
// reassemble exactly.
TEST_P(PsClientChunking, LargeTensorsAreSplitUnderTheMessageLimit) {
  TempDir dir;
  std::vector<std::string> shards;
  auto cluster = StartShards(dir, 2, {"--max_message_bytes=1048576"}, &shards);
  ASSERT_NE(cluster, nullptr);
  auto client = PsClient::Connect({.shards = shards,
                                   .max_message_bytes = 1 << 20,
                                   .direct_data_plane = GetParam()});
  ASSERT_TRUE(client.ok()) << client.status();

  v1::VariableConfig v;
  v.set_name("big");
  v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  v.mutable_spec()->add_shape(6144);
  v.mutable_spec()->add_shape(256);  // 1 KiB rows, 6 MiB in all
  v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1);
  v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  // An initial value travels whole per slice, so a variable this large starts
  // from its initializer (a constant here).
  v.mutable_initializer()->mutable_constant()->set_value(3);
  ASSERT_TRUE((*client)->CreateVariable(v).ok());
  std::vector<float> grad(6144 * 256);
  for (size_t i = 0; i < grad.size(); ++i)
    grad[i] = static_cast<float>(i % 1000);
  auto pushed = (*client)->PushDense("big", grad, {.step_id = 1});
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->rows_applied, 6144);
  std::vector<float> out(grad.size());
  ASSERT_TRUE((*client)->PullDense("big", absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], 3.0f - grad[i]) << i;

  v1::TableConfig t = SgdTable("wide", 64, 1);
  ASSERT_TRUE((*client)->CreateTable(t).ok());
  std::vector<uint64_t> ids(20000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = i * 7919;
  std::vector<float> g(ids.size() * 64);
  for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>(i % 13);
  auto sp = (*client)->PushSparse("wide", ids, 64, g, {.step_id = 1});
  ASSERT_TRUE(sp.ok()) << sp.status();
  EXPECT_EQ(sp->rows_applied, 20000);
  std::vector<float> rows(g.size());
  ASSERT_TRUE(
      (*client)->PullSparse("wide", ids, 64, absl::MakeSpan(rows)).ok());
  for (size_t i = 0; i < rows.size(); ++i) ASSERT_EQ(rows[i], -g[i]) << i;
}

// Dense chunks smaller than a message (PsClientOptions.chunk_bytes):
// odd row counts land at the right offsets, and a repeated push with the
// same key is a duplicate chunk by chunk.
TEST_P(PsClientChunking, DenseChunksLandInPlaceAndApplyOnce) {
  ASSERT_NO_FATAL_FAILURE(StartWithVariable("odd"));
  std::vector<float> grad(37 * 5);
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = static_cast<float>(i);
  worker::StepOptions step{.step_id = 1, .closure_id = 9, .push_seq = 0};
  auto first = client_->PushDense("odd", grad, step);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->rows_applied, 37);
  EXPECT_EQ(first->duplicate_pieces, 0);
  auto again = client_->PushDense("odd", grad, step);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rows_applied, 0);
  // Each shard's slice in chunks of 3 rows: at least ceil(37 / 3) chunks.
  EXPECT_GE(again->duplicate_pieces, 13);
  std::vector<float> out(grad.size());
  ASSERT_TRUE(client_->PullDense("odd", absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], 1.0f - grad[i]) << i;
}

// Sparse pushes and pulls go in pieces of at most chunk_bytes of rows too
// (3 rows of dim 5 in 64 bytes): repeated ids are summed first, every row
// lands where its id is, and a repeated push is a duplicate piece by piece.
TEST_P(PsClientChunking, SparsePiecesReassembleAndApplyOnce) {
  ASSERT_NO_FATAL_FAILURE(StartWithVariable("unused"));
  ASSERT_TRUE(client_->CreateTable(SgdTable("rows", 5, 1)).ok());
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < 40; ++i) ids.push_back(1000 + (i * 37) % 31);
  std::vector<float> grad(ids.size() * 5);
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = static_cast<float>(i);
  // The expected rows: zeros minus the summed gradients of each id.
  std::map<uint64_t, std::vector<float>> want;
  for (size_t i = 0; i < ids.size(); ++i) {
    auto& row =
        want.try_emplace(ids[i], std::vector<float>(5, 0.0f)).first->second;
    for (int j = 0; j < 5; ++j) row[j] -= grad[i * 5 + j];
  }
  worker::StepOptions step{.step_id = 1, .closure_id = 4, .push_seq = 0};
  auto first = client_->PushSparse("rows", ids, 5, grad, step);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->rows_applied, static_cast<int64_t>(want.size()));
  EXPECT_EQ(first->duplicate_pieces, 0);
  auto again = client_->PushSparse("rows", ids, 5, grad, step);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rows_applied, 0);
  // 31 distinct ids over two shards in pieces of at most 3 rows.
  EXPECT_GE(again->duplicate_pieces, 11);
  std::vector<float> out(ids.size() * 5, -99.0f);
  ASSERT_TRUE(client_->PullSparse("rows", ids, 5, absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(std::vector<float>(out.begin() + i * 5, out.begin() + i * 5 + 5),
              want[ids[i]])
        << "id " << ids[i] << " at " << i;
  }
}

// A dense push-pull in chunks: each chunk is pushed and read back in one
// call, its values landing at their offset; the same key again is a
// duplicate, chunk by chunk, that still reads; a buffer of the wrong size
// or one overlapping the gradient is refused and nothing changes.
TEST_P(PsClientChunking, DensePushPullAppliesOnceAndReadsBack) {
  ASSERT_NO_FATAL_FAILURE(StartWithVariable("pp"));
  std::vector<float> grad(37 * 5);
  for (size_t i = 0; i < grad.size(); ++i) grad[i] = static_cast<float>(i);
  std::vector<float> out(grad.size(), -7.0f);
  const worker::StepOptions step1{.step_id = 1, .closure_id = 9};
  auto first = client_->PushPullDense("pp", grad, absl::MakeSpan(out), step1);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->rows_applied, 37);
  EXPECT_EQ(first->duplicate_pieces, 0);
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], 1.0f - grad[i]) << i;
  std::fill(out.begin(), out.end(), -7.0f);
  auto again = client_->PushPullDense("pp", grad, absl::MakeSpan(out), step1);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rows_applied, 0);
  EXPECT_GE(again->duplicate_pieces, 13);
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], 1.0f - grad[i]) << i;
  auto second = client_->PushPullDense("pp", grad, absl::MakeSpan(out),
                                       {.step_id = 2, .closure_id = 10});
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->rows_applied, 37);
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], 1.0f - 2 * grad[i]) << i;
  std::vector<float> small(7);
  EXPECT_EQ(client_
                ->PushPullDense("pp", grad, absl::MakeSpan(small),
                                {.step_id = 3, .closure_id = 11})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<float> both = grad;
  EXPECT_EQ(client_
                ->PushPullDense("pp", both, absl::MakeSpan(both),
                                {.step_id = 3, .closure_id = 11})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(client_->PullDense("pp", absl::MakeSpan(out)).ok());
  for (size_t i = 0; i < out.size(); ++i)
    ASSERT_EQ(out[i], 1.0f - 2 * grad[i]) << i;
}

// PsClientOptions::min_pieces splits a shard's rows further than
// chunk_bytes does, into pieces of 128 KiB or more: a 1 MiB variable over two
// shards (512 KiB each, under the 640 KiB chunk) goes as two pieces with
// min_pieces 1, as eight with 8 (four of 128 KiB per shard), and as four
// with 2; a 64 KiB variable stays one piece per shard. Values land in place
// and the repeat of each push is a duplicate piece by piece.
TEST_P(PsClientChunking, MinPiecesSplitsLargeCallsOnly) {
  TempDir dir;
  std::vector<std::string> shards;
  auto cluster = StartShards(dir, 2, {}, &shards);
  ASSERT_NE(cluster, nullptr);
  for (int64_t rows : {2048, 128}) {  // of 512 bytes: 1 MiB, 64 KiB
    for (auto [min_pieces, pieces_1mib] :
         {std::pair{1, 2}, std::pair{8, 8}, std::pair{2, 4}}) {
      SCOPED_TRACE(absl::StrCat(rows, " rows, min_pieces ", min_pieces));
      auto client = PsClient::Connect({.shards = shards,
                                       .min_pieces = min_pieces,
                                       .direct_data_plane = GetParam()});
      ASSERT_TRUE(client.ok()) << client.status();
      v1::VariableConfig v;
      v.set_name(absl::StrCat("v", rows, "_", min_pieces));
      v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
      v.mutable_spec()->add_shape(rows);
      v.mutable_spec()->add_shape(128);
      v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1);
      v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
      ASSERT_TRUE((*client)->CreateVariable(v).ok());
      std::vector<float> grad(rows * 128);
      for (size_t i = 0; i < grad.size(); ++i)
        grad[i] = static_cast<float>(i % 977);
      // A push key of its own (the same key on another variable would be
      // a duplicate of the earlier push, piece for piece).
      const worker::StepOptions step{
          .step_id = 1, .closure_id = static_cast<uint64_t>(rows + min_pieces)};
      auto first = (*client)->PushDense(v.name(), grad, step);
      ASSERT_TRUE(first.ok()) << first.status();
      EXPECT_EQ(first->rows_applied, rows);
      auto again = (*client)->PushDense(v.name(), grad, step);
      ASSERT_TRUE(again.ok()) << again.status();
      EXPECT_EQ(again->rows_applied, 0);
      EXPECT_EQ(again->duplicate_pieces, rows == 2048 ? pieces_1mib : 2);
      std::vector<float> out(grad.size(), 5.0f);
      ASSERT_TRUE((*client)->PullDense(v.name(), absl::MakeSpan(out)).ok());
      for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], -grad[i]) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Planes, PsClientChunking, ::testing::Bool(),
                         PlaneName);

}  // namespace
}  // namespace plexus
