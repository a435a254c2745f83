// The shard's direct data plane (plexus-ps --data_port, ps/service/
// data_plane.h) against a real plexus-ps process: who may use it, what bad
// frames get, and that the shard keeps serving after each. The client's use
// of it (every PsClient behaviour over both planes) is ps_client_test.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/data_frame.h"
#include "common/grpc_status.h"
#include "common/process.h"
#include "httplib.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::TempDir;

// A coordinator and one shard started with `data_port_flag`; the shard's
// member entry in *shard.
std::unique_ptr<local::LocalCluster> StartShard(
    const TempDir& dir, const std::string& data_port_flag,
    local::Member* shard) {
  local::LocalClusterOptions o;
  o.bin_dir = BinDir();
  o.root_dir = dir.Sub("cluster");
  o.num_ps = 1;
  o.ps_flags = {data_port_flag};
  auto c = local::LocalCluster::Start(o);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return nullptr;
  for (const auto& m : (*c)->members()) {
    if (m.role == "ps") *shard = m;
  }
  return std::move(*c);
}

class DataPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    local::Member m;
    cluster_ = StartShard(dir_, "--data_port=0", &m);
    ASSERT_NE(cluster_, nullptr);
    shard_ = m.address;
    admin_port_ = m.admin_port;
    stub_ = v1::ParameterServer::NewStub(
        grpc::CreateChannel(shard_, grpc::InsecureChannelCredentials()));
    v1::GetShardInfoRequest req;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->GetShardInfo(&ctx, req, &info_).ok());
    ASSERT_FALSE(info_.data_plane_address().empty());
    ASSERT_EQ(info_.data_plane_key().size(), 16u);
    std::string host;
    int port = 0;
    ASSERT_TRUE(SplitHostPort(shard_, &host, &port).ok());
    data_address_ = host + info_.data_plane_address();

    auto client = worker::PsClient::Connect(
        {.shards = {shard_}, .direct_data_plane = true},
        {.job_id = "j", .worker_id = 1, .worker_incarnation = 1});
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    v1::TableConfig t;
    t.set_name("t");
    t.set_dim(2);
    t.mutable_optimizer()->mutable_sgd()->set_learning_rate(1);
    t.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
    ASSERT_TRUE(client_->CreateTable(t).ok());
    // Row 7 = -(1, 2), through the direct plane.
    std::vector<uint64_t> ids = {7};
    std::vector<float> g = {1, 2};
    ASSERT_TRUE(client_->PushSparse("t", ids, 2, g, {.step_id = 1}).ok());
  }

  // Row 7 as the shard holds it, read over gRPC.
  std::vector<float> Row7() {
    v1::PullRequest req;
    req.set_value_dtype(v1::DTYPE_FLOAT32);
    v1::SparseLookup* l = req.add_sparse();
    l->set_table("t");
    l->add_ids(7);
    v1::PullResponse resp;
    grpc::ClientContext ctx;
    grpc::Status st = stub_->Pull(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    if (!st.ok() || resp.sparse_size() != 1) return {};
    const std::string& d = resp.sparse(0).values().data();
    std::vector<float> v(d.size() / 4);
    std::memcpy(v.data(), d.data(), d.size());
    return v;
  }

  // A push of (10, 10) to row 7 (step `step` of worker 1), as a raw frame.
  std::string PushBody(uint64_t step) {
    v1::PushRequest req;
    req.mutable_header()->set_job_id("j");
    req.mutable_header()->set_worker_id(1);
    req.mutable_header()->set_worker_incarnation(1);
    req.mutable_header()->set_step_id(step);
    v1::SparseUpdate* u = req.add_sparse();
    u->set_table("t");
    u->add_ids(7);
    u->mutable_grads()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    u->mutable_grads()->mutable_spec()->add_shape(1);
    u->mutable_grads()->mutable_spec()->add_shape(2);
    const float g[2] = {10, 10};
    u->mutable_grads()->set_data(g, sizeof(g));
    return req.SerializeAsString();
  }

  // Sends one frame on a fresh connection and reads the reply.
  absl::Status RoundTrip(const v1::DataFrameHeader& h, const std::string& body,
                         v1::DataFrameHeader* reply, int* fd_out = nullptr) {
    absl::Time deadline = absl::Now() + absl::Seconds(30);
    auto fd = ConnectTcp(data_address_, deadline);
    if (!fd.ok()) return fd.status();
    absl::Status st = WriteRawDataFrame(*fd, h, body, deadline);
    uint64_t bytes = 0;
    FrameReader reader(*fd);
    if (st.ok()) st = reader.ReadHeader(deadline, 1 << 20, reply, &bytes);
    if (st.ok()) st = reader.ReadBody(*reply, bytes, deadline, nullptr);
    if (fd_out != nullptr) {
      *fd_out = *fd;
    } else {
      close(*fd);
    }
    return st;
  }

  TempDir dir_;
  std::unique_ptr<local::LocalCluster> cluster_;
  std::string shard_;
  int admin_port_ = 0;
  std::unique_ptr<v1::ParameterServer::Stub> stub_;
  v1::GetShardInfoResponse info_;
  std::string data_address_;
  std::unique_ptr<worker::PsClient> client_;
};

TEST_F(DataPlaneTest, AWrongKeyIsUnauthenticatedAndChangesNothing) {
  v1::DataFrameHeader h;
  h.set_method(v1::DataFrameHeader::METHOD_PUSH);
  h.set_request_id(5);
  h.set_key(std::string(16, 'x'));
  v1::DataFrameHeader reply;
  int fd = -1;
  ASSERT_TRUE(RoundTrip(h, PushBody(2), &reply, &fd).ok());
  EXPECT_EQ(reply.code(), static_cast<int>(absl::StatusCode::kUnauthenticated))
      << reply.message();
  EXPECT_EQ(reply.request_id(), 5u);
  // The shard closed the connection after saying so.
  v1::DataFrameHeader more;
  uint64_t bytes = 0;
  EXPECT_TRUE(absl::IsUnavailable(FrameReader(fd).ReadHeader(
      absl::Now() + absl::Seconds(30), 1 << 20, &more, &bytes)));
  close(fd);
  EXPECT_EQ(Row7(), (std::vector<float>{-1, -2}));
}

TEST_F(DataPlaneTest, TheRightKeyIsServedAndAReplayIsADuplicate) {
  v1::DataFrameHeader h;
  h.set_method(v1::DataFrameHeader::METHOD_PUSH);
  h.set_request_id(6);
  h.set_key(info_.data_plane_key());
  for (int attempt = 0; attempt < 2; ++attempt) {
    v1::DataFrameHeader reply;
    ASSERT_TRUE(RoundTrip(h, PushBody(2), &reply).ok());
    EXPECT_EQ(reply.code(), 0) << reply.message();
  }
  EXPECT_EQ(Row7(), (std::vector<float>{-11, -12})) << "applied twice";
}

TEST_F(DataPlaneTest, BadBodiesAndMethodsAreRefusedAndChangeNothing) {
  v1::DataFrameHeader h;
  h.set_key(info_.data_plane_key());
  h.set_method(v1::DataFrameHeader::METHOD_PUSH);
  v1::DataFrameHeader reply;
  ASSERT_TRUE(RoundTrip(h, "\xff\xff\xff not a proto", &reply).ok());
  EXPECT_EQ(reply.code(), static_cast<int>(absl::StatusCode::kInvalidArgument))
      << reply.message();
  h.set_method(static_cast<v1::DataFrameHeader::Method>(42));
  ASSERT_TRUE(RoundTrip(h, PushBody(3), &reply).ok());
  EXPECT_EQ(reply.code(), static_cast<int>(absl::StatusCode::kUnimplemented))
      << reply.message();
  // Two attachments for a push with one tensor.
  h.set_method(v1::DataFrameHeader::METHOD_PUSH);
  v1::PushRequest one;
  one.ParseFromString(PushBody(5));
  one.mutable_sparse(0)->mutable_grads()->clear_data();
  h.add_attachment_bytes(8);
  h.add_attachment_bytes(8);
  ASSERT_TRUE(
      RoundTrip(h, one.SerializeAsString() + std::string(16, '\0'), &reply)
          .ok());
  EXPECT_EQ(reply.code(), static_cast<int>(absl::StatusCode::kInvalidArgument))
      << reply.message();
  h.clear_attachment_bytes();
  // A push of an unknown table: NOT_FOUND, as over gRPC.
  v1::PushRequest bad;
  bad.ParseFromString(PushBody(4));
  bad.mutable_sparse(0)->set_table("nope");
  h.set_method(v1::DataFrameHeader::METHOD_PUSH);
  ASSERT_TRUE(RoundTrip(h, bad.SerializeAsString(), &reply).ok());
  EXPECT_EQ(reply.code(), static_cast<int>(absl::StatusCode::kNotFound))
      << reply.message();
  EXPECT_EQ(Row7(), (std::vector<float>{-1, -2}));
}

TEST_F(DataPlaneTest, GarbageAndOversizedFramesCloseOnlyTheirConnection) {
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  {
    // A prefix announcing a 1 TiB body: refused before any is read.
    auto fd = ConnectTcp(data_address_, deadline);
    ASSERT_TRUE(fd.ok()) << fd.status();
    char prefix[12] = {};
    uint64_t huge = uint64_t{1} << 40;
    std::memcpy(prefix + 4, &huge, 8);
    ASSERT_EQ(write(*fd, prefix, sizeof(prefix)), 12);
    v1::DataFrameHeader reply;
    uint64_t bytes = 0;
    EXPECT_TRUE(absl::IsUnavailable(
        FrameReader(*fd).ReadHeader(deadline, 1 << 20, &reply, &bytes)));
    close(*fd);
  }
  {
    // A connection that hangs up mid-frame.
    auto fd = ConnectTcp(data_address_, deadline);
    ASSERT_TRUE(fd.ok()) << fd.status();
    ASSERT_EQ(write(*fd, "\x05\x00", 2), 2);
    close(*fd);
  }
  // The shard still serves, on both planes.
  EXPECT_EQ(Row7(), (std::vector<float>{-1, -2}));
  std::vector<uint64_t> ids = {7};
  std::vector<float> out(2);
  ASSERT_TRUE(client_->PullSparse("t", ids, 2, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out, (std::vector<float>{-1, -2}));
}

TEST_F(DataPlaneTest, CallsAreCountedOnTheMetricsPage) {
  // The value of a series on the metrics page (0 if absent).
  auto count = [&](const std::string& series) -> double {
    httplib::Client http("127.0.0.1", admin_port_);
    auto res = http.Get("/metrics");
    EXPECT_TRUE(res) << "no answer from the admin port";
    if (!res) return -1;
    for (absl::string_view line : absl::StrSplit(res->body, '\n')) {
      if (absl::ConsumePrefix(&line, series + " ")) {
        double v = 0;
        EXPECT_TRUE(absl::SimpleAtod(line, &v)) << line;
        return v;
      }
    }
    return 0;
  };
  const std::string ok =
      "plexus_ps_data_plane_requests_total{method=\"Pull\",code=\"OK\"}";
  const std::string not_found =
      "plexus_ps_data_plane_requests_total{method=\"Pull\",code=\"NOT_FOUND\"}";
  const std::string rpc_not_found =
      "plexus_rpc_requests_total{method=\"/plexus.v1.ParameterServer/Pull\","
      "code=\"NOT_FOUND\"}";
  const double ok_before = count(ok);
  std::vector<uint64_t> ids = {7};
  std::vector<float> out(2);
  // Two pulls that succeed and one that does not, on the same connection:
  // each is counted under its own code.
  ASSERT_TRUE(client_->PullSparse("t", ids, 2, absl::MakeSpan(out)).ok());
  EXPECT_TRUE(absl::IsNotFound(
      client_->PullSparse("nope", ids, 2, absl::MakeSpan(out))));
  ASSERT_TRUE(client_->PullSparse("t", ids, 2, absl::MakeSpan(out)).ok());
  EXPECT_EQ(count(ok), ok_before + 2);
  EXPECT_EQ(count(not_found), 1);
  EXPECT_EQ(count(rpc_not_found), 1);
  EXPECT_GT(count("plexus_ps_data_plane_requests_total{method=\"Push\","
                  "code=\"OK\"}"),
            0);
}

// With --data_port=-1 a shard offers no direct plane, and a client that asks
// for one uses gRPC.
TEST(DataPlaneOff, AClientAskingForItFallsBackToGrpc) {
  TempDir dir;
  local::Member m;
  auto cluster = StartShard(dir, "--data_port=-1", &m);
  ASSERT_NE(cluster, nullptr);
  const std::string shard = m.address;
  auto client =
      worker::PsClient::Connect({.shards = {shard}, .direct_data_plane = true});
  ASSERT_TRUE(client.ok()) << client.status();
  auto info = (*client)->ShardInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_TRUE((*info)[0].data_plane_address().empty());
  EXPECT_TRUE((*info)[0].data_plane_key().empty());
  v1::TableConfig t;
  t.set_name("t");
  t.set_dim(1);
  t.mutable_optimizer()->mutable_sgd()->set_learning_rate(1);
  t.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  absl::Status created = (*client)->CreateTable(t);
  ASSERT_TRUE(created.ok()) << created;
  std::vector<uint64_t> ids = {1};
  std::vector<float> g = {3};
  ASSERT_TRUE((*client)->PushSparse("t", ids, 1, g).ok());
  std::vector<float> out(1);
  ASSERT_TRUE((*client)->PullSparse("t", ids, 1, absl::MakeSpan(out)).ok());
  EXPECT_EQ(out[0], -3.0f);
}

// The frames are plaintext: a shard with TLS refuses an explicit --data_port
// (and, by default, runs without the plane: tls_test).
TEST(DataPlaneOff, PlexusPsRefusesDataPortWithTls) {
  TempDir dir;
  SubprocessOptions o;
  o.argv = {BinDir() + "/plexus-ps", "--data_dir=" + dir.Sub("data"),
            "--data_port=0", "--tls_cert_file=" + dir.Sub("cert.pem"),
            "--tls_key_file=" + dir.Sub("key.pem")};
  o.log_file = dir.Sub("log");
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.ok()) << p.status();
  auto rc = (*p)->Wait(absl::Seconds(30));
  ASSERT_TRUE(rc.ok()) << rc.status();
  EXPECT_EQ(*rc, 1);
  std::string log = ::plexus::testing::ReadFile(dir.Sub("log"));
  EXPECT_NE(log.find("cannot be used with --tls_cert_file"), std::string::npos)
      << log;
}

}  // namespace
}  // namespace plexus
