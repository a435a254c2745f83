// FAULTS.md's bad-input table against a real plexus-ps: every case gets the
// exact status code, changes nothing, moves an error counter, and leaves the
// shard serving.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>

#include <cmath>
#include <limits>

#include "absl/synchronization/notification.h"
#include "common/error_info.h"
#include "common/grpc_status.h"
#include "common/health_client.h"
#include "common/process.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "tests/util/test_env.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::TempDir;

constexpr int kMaxMessageBytes = 1 << 20;
// PushSparse's default row count: as many rows as ids.
constexpr int64_t kIdsRows = std::numeric_limits<int64_t>::min();

class PsBadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SubprocessOptions o;
    o.argv = {BinDir() + "/plexus-ps", "--data_dir=" + dir_.Sub("data"),
              "--port_file=" + dir_.Sub("port"),
              "--admin_port_file=" + dir_.Sub("admin"),
              "--max_message_bytes=" + std::to_string(kMaxMessageBytes)};
    o.log_file = dir_.Sub("log");
    auto p = Subprocess::Start(o);
    ASSERT_TRUE(p.ok()) << p.status();
    ps_ = std::move(*p);
    auto port = WaitForPortFile(dir_.Sub("port"), absl::Seconds(30), ps_.get());
    ASSERT_TRUE(port.ok()) << port.status();
    admin_port_ =
        *WaitForPortFile(dir_.Sub("admin"), absl::Seconds(5), ps_.get());
    address_ = "127.0.0.1:" + std::to_string(*port);
    grpc::ChannelArguments args;
    args.SetMaxSendMessageSize(64 << 20);
    stub_ = v1::ParameterServer::NewStub(grpc::CreateCustomChannel(
        address_, grpc::InsecureChannelCredentials(), args));
    // A table and a variable that the bad requests must not change.
    v1::CreateTableRequest t;
    *t.mutable_config() = Table("emb", 4);
    v1::CreateTableResponse tr;
    ASSERT_EQ(Code([&](auto* c) { return stub_->CreateTable(c, t, &tr); }),
              absl::StatusCode::kOk);
    v1::CreateVariableRequest v;
    v.mutable_config()->set_name("w");
    v.mutable_config()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    v.mutable_config()->mutable_spec()->add_shape(4);
    v.mutable_config()->mutable_spec()->add_shape(2);
    v.mutable_config()->mutable_optimizer()->mutable_sgd()->set_learning_rate(
        1);
    v.mutable_config()->mutable_consistency()->set_mode(
        v1::CONSISTENCY_MODE_ASYNC);
    v1::CreateVariableResponse vr;
    ASSERT_EQ(Code([&](auto* c) { return stub_->CreateVariable(c, v, &vr); }),
              absl::StatusCode::kOk);
    // Touch rows 1..3 so they exist.
    ASSERT_EQ(PushSparse({1, 2, 3}, std::vector<float>(12, 1.0f)),
              absl::StatusCode::kOk);
    baseline_ = Snapshot();
  }

  void TearDown() override {
    // Every case leaves the shard serving and its state unchanged.
    auto h = CheckHealth(address_, absl::Seconds(5));
    ASSERT_TRUE(h.ok()) << h.status();
    EXPECT_EQ(*h, Health::kServing);
    EXPECT_EQ(Snapshot(), baseline_) << "a refused request changed state";
  }

  static v1::TableConfig Table(const std::string& name, int64_t dim) {
    v1::TableConfig t;
    t.set_name(name);
    t.set_dim(dim);
    t.mutable_optimizer()->mutable_sgd()->set_learning_rate(0.5);
    t.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
    return t;
  }

  template <typename F>
  absl::StatusCode Code(F rpc) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(30));
    return FromGrpcStatus(rpc(&ctx)).code();
  }

  absl::StatusCode PushSparse(std::vector<uint64_t> ids,
                              std::vector<float> grads, int64_t rows = kIdsRows,
                              int64_t dim = 4,
                              const std::string& table = "emb") {
    v1::PushRequest req;
    auto* u = req.add_sparse();
    u->set_table(table);
    for (uint64_t id : ids) u->add_ids(id);
    u->mutable_grads()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    u->mutable_grads()->mutable_spec()->add_shape(
        rows == kIdsRows ? static_cast<int64_t>(ids.size()) : rows);
    u->mutable_grads()->mutable_spec()->add_shape(dim);
    u->mutable_grads()->set_data(grads.data(), grads.size() * sizeof(float));
    v1::PushResponse resp;
    return Code([&](auto* c) { return stub_->Push(c, req, &resp); });
  }

  // Everything a refused request could have changed: rows 1..3 and 99 of
  // "emb", the variable "w", and the list of tables and variables.
  std::string Snapshot() {
    v1::PullRequest req;
    auto* l = req.add_sparse();
    l->set_table("emb");
    for (uint64_t id : {1, 2, 3, 99}) l->add_ids(id);
    req.add_dense()->set_variable("w");
    v1::PullResponse resp;
    EXPECT_EQ(Code([&](auto* c) { return stub_->Pull(c, req, &resp); }),
              absl::StatusCode::kOk);
    v1::ListVariablesRequest lr;
    v1::ListVariablesResponse list;
    EXPECT_EQ(Code([&](auto* c) { return stub_->ListVariables(c, lr, &list); }),
              absl::StatusCode::kOk);
    std::string names;
    for (const auto& v : list.variables())
      names += "v:" + v.config().name() + ";";
    for (const auto& t : list.tables()) {
      names += "t:" + t.config().name() + ":" +
               std::to_string(t.rows_in_memory()) + ";";
    }
    return resp.sparse(0).values().data() + resp.dense(0).tensor().data() +
           names;
  }

  // The value of one counter line in /metrics ("" labels for none), 0 if
  // absent.
  double MetricValue(const std::string& series) {
    httplib::Client http("127.0.0.1", admin_port_);
    auto r = http.Get("/metrics");
    if (!r) return -1;
    size_t at = r->body.find(series + " ");
    if (at == std::string::npos) return 0;
    return std::stod(r->body.substr(at + series.size() + 1));
  }

  double Rejected(const std::string& code) {
    return MetricValue("plexus_ps_rejected_pushes_total{code=\"" + code +
                       "\"}");
  }
  double RpcErrors(const std::string& method, const std::string& code) {
    return MetricValue(
        "plexus_rpc_requests_total{method=\"/plexus.v1.ParameterServer/" +
        method + "\",code=\"" + code + "\"}");
  }

  TempDir dir_;
  std::unique_ptr<Subprocess> ps_;
  std::string address_;
  int admin_port_ = 0;
  std::unique_ptr<v1::ParameterServer::Stub> stub_;
  std::string baseline_;
};

TEST_F(PsBadInputTest, BadNamesAreInvalidArgument) {
  for (std::string name :
       {std::string(""), std::string(300, 'a'), std::string("../etc"),
        std::string("a/../b"), std::string("sp ace")}) {
    v1::CreateTableRequest req;
    *req.mutable_config() = Table(name, 4);
    v1::CreateTableResponse resp;
    EXPECT_EQ(Code([&](auto* c) { return stub_->CreateTable(c, req, &resp); }),
              absl::StatusCode::kInvalidArgument)
        << "'" << name << "'";
  }
  EXPECT_GE(RpcErrors("CreateTable", "INVALID_ARGUMENT"), 5);
}

TEST_F(PsBadInputTest, UnknownNamesAreNotFound) {
  double before = Rejected("NOT_FOUND");
  EXPECT_EQ(PushSparse({1}, std::vector<float>(4, 1.0f), kIdsRows, 4, "nope"),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Rejected("NOT_FOUND"), before + 1);
  v1::DescribeRequest d;
  d.set_name("nope");
  v1::DescribeResponse dr;
  EXPECT_EQ(Code([&](auto* c) { return stub_->Describe(c, d, &dr); }),
            absl::StatusCode::kNotFound);
  v1::DeleteTableRequest del;
  del.set_name("nope");
  v1::DeleteTableResponse delr;
  EXPECT_EQ(Code([&](auto* c) { return stub_->DeleteTable(c, del, &delr); }),
            absl::StatusCode::kNotFound);
  // A variable name is not a table.
  del.set_name("w");
  EXPECT_EQ(Code([&](auto* c) { return stub_->DeleteTable(c, del, &delr); }),
            absl::StatusCode::kNotFound);
}

TEST_F(PsBadInputTest, ShapeDtypeAndLengthMismatchesAreInvalidArgument) {
  double before = Rejected("INVALID_ARGUMENT");
  // Rows in the shape do not match the ids.
  EXPECT_EQ(PushSparse({1, 2}, std::vector<float>(12, 1.0f), 3),
            absl::StatusCode::kInvalidArgument);
  // Wrong row width.
  EXPECT_EQ(PushSparse({1, 2}, std::vector<float>(6, 1.0f), 2, 3),
            absl::StatusCode::kInvalidArgument);
  // Byte length does not match the shape.
  EXPECT_EQ(PushSparse({1, 2}, std::vector<float>(7, 1.0f), 2, 4),
            absl::StatusCode::kInvalidArgument);
  // Negative and overflowing dims, rejected before any allocation.
  EXPECT_EQ(PushSparse({1}, std::vector<float>(4, 1.0f), -5, 4),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PushSparse({1}, std::vector<float>(4, 1.0f),
                       std::numeric_limits<int64_t>::max(), 4),
            absl::StatusCode::kInvalidArgument);
  // An integer dtype for a gradient.
  v1::PushRequest req;
  auto* u = req.add_sparse();
  u->set_table("emb");
  u->add_ids(1);
  u->mutable_grads()->mutable_spec()->set_dtype(v1::DTYPE_INT32);
  u->mutable_grads()->mutable_spec()->add_shape(1);
  u->mutable_grads()->mutable_spec()->add_shape(4);
  u->mutable_grads()->set_data(std::string(16, '\0'));
  v1::PushResponse resp;
  EXPECT_EQ(Code([&](auto* c) { return stub_->Push(c, req, &resp); }),
            absl::StatusCode::kInvalidArgument);
  // A dense gradient outside the variable's rows.
  v1::PushRequest dreq;
  auto* d = dreq.add_dense();
  d->set_variable("w");
  d->mutable_rows()->set_row_begin(3);
  d->mutable_rows()->set_row_end(6);
  d->mutable_tensor()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  d->mutable_tensor()->mutable_spec()->add_shape(3);
  d->mutable_tensor()->mutable_spec()->add_shape(2);
  d->mutable_tensor()->set_data(std::string(24, '\0'));
  EXPECT_EQ(Code([&](auto* c) { return stub_->Push(c, dreq, &resp); }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_GE(Rejected("INVALID_ARGUMENT"), before + 5);
}

TEST_F(PsBadInputTest, NonFiniteGradientsAreRejectedWholeRequest) {
  double before = Rejected("INVALID_ARGUMENT");
  std::vector<float> g(8, 1.0f);
  g[5] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(PushSparse({1, 99}, g), absl::StatusCode::kInvalidArgument);
  g[5] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(PushSparse({2, 3}, g), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Rejected("INVALID_ARGUMENT"), before + 2);
}

TEST_F(PsBadInputTest, OptimizerOutOfRangeIsRefusedAtCreation) {
  for (double lr : {0.0, -1.0, std::nan("")}) {
    v1::CreateTableRequest req;
    *req.mutable_config() = Table("new_table", 4);
    req.mutable_config()->mutable_optimizer()->mutable_sgd()->set_learning_rate(
        lr);
    v1::CreateTableResponse resp;
    EXPECT_EQ(Code([&](auto* c) { return stub_->CreateTable(c, req, &resp); }),
              absl::StatusCode::kInvalidArgument)
        << lr;
  }
  v1::CreateTableRequest req;
  *req.mutable_config() = Table("new_table", 4);
  req.mutable_config()->clear_optimizer();
  v1::CreateTableResponse resp;
  EXPECT_EQ(Code([&](auto* c) { return stub_->CreateTable(c, req, &resp); }),
            absl::StatusCode::kInvalidArgument);
  // Re-creating an existing table with another config.
  *req.mutable_config() = Table("emb", 8);
  EXPECT_EQ(Code([&](auto* c) { return stub_->CreateTable(c, req, &resp); }),
            absl::StatusCode::kAlreadyExists);
}

TEST_F(PsBadInputTest, MessageOverTheLimitIsResourceExhausted) {
  std::vector<uint64_t> ids(kMaxMessageBytes / 16 + 10);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = 1000000 + i;
  EXPECT_EQ(PushSparse(ids, std::vector<float>(ids.size() * 4, 1.0f)),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(PsBadInputTest, StaleIncarnationIsFailedPrecondition) {
  auto push = [&](uint64_t incarnation, uint64_t step) {
    v1::PushRequest req;
    req.mutable_header()->set_worker_id(7);
    req.mutable_header()->set_worker_incarnation(incarnation);
    req.mutable_header()->set_step_id(step);
    auto* u = req.add_sparse();
    u->set_table("emb");
    u->add_ids(1);
    u->mutable_grads()->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    u->mutable_grads()->mutable_spec()->add_shape(1);
    u->mutable_grads()->mutable_spec()->add_shape(4);
    u->mutable_grads()->set_data(std::string(16, '\0'));
    v1::PushResponse resp;
    grpc::ClientContext ctx;
    return FromGrpcStatus(stub_->Push(&ctx, req, &resp));
  };
  // Incarnation 5 pushes a zero gradient, which changes no value.
  ASSERT_TRUE(push(5, 1).ok());
  double before = Rejected("FAILED_PRECONDITION");
  absl::Status st = push(4, 2);
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Rejected("FAILED_PRECONDITION"), before + 1);
}

TEST_F(PsBadInputTest, RandomBytesAreAnErrorNotACrash) {
  // Bytes that are not a valid PushRequest, sent on the Push method.
  auto channel =
      grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
  grpc::GenericStub generic(channel);
  std::string junk;
  uint32_t x = 12345;
  for (int i = 0; i < 4096; ++i) {
    x = x * 1103515245 + 12345;
    junk.push_back(static_cast<char>(x >> 24));
  }
  grpc::Slice slice(junk);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  absl::Notification done;
  grpc::Status status;
  generic.UnaryCall(&ctx, "/plexus.v1.ParameterServer/Push",
                    grpc::StubOptions(), &request, &response,
                    [&](grpc::Status s) {
                      status = s;
                      done.Notify();
                    });
  done.WaitForNotification();
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(ps_->Running());
}

// SIGTERM while a pull waits for a synchronous step: the waiting call ends
// UNAVAILABLE (the client retries elsewhere or later), the shard exits 0
// without sitting out its grace period, and later calls are UNAVAILABLE.
TEST(PsShutdown, CallsDuringShutdownAreUnavailable) {
  TempDir dir;
  SubprocessOptions o;
  o.argv = {BinDir() + "/plexus-ps", "--data_dir=" + dir.Sub("data"),
            "--port_file=" + dir.Sub("port"),
            "--admin_port_file=" + dir.Sub("admin"), "--shutdown_grace_s=120"};
  o.log_file = dir.Sub("log");
  auto ps = Subprocess::Start(o);
  ASSERT_TRUE(ps.ok()) << ps.status();
  auto port = WaitForPortFile(dir.Sub("port"), absl::Seconds(30), ps->get());
  ASSERT_TRUE(port.ok());
  int admin_port =
      *WaitForPortFile(dir.Sub("admin"), absl::Seconds(5), ps->get());
  std::string address = "127.0.0.1:" + std::to_string(*port);
  auto stub = v1::ParameterServer::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  v1::CreateTableRequest t;
  t.mutable_config()->set_name("s");
  t.mutable_config()->set_dim(2);
  t.mutable_config()->mutable_optimizer()->mutable_sgd()->set_learning_rate(1);
  t.mutable_config()->mutable_consistency()->set_mode(
      v1::CONSISTENCY_MODE_SYNC);
  t.mutable_config()->mutable_consistency()->set_num_workers(2);
  v1::CreateTableResponse tr;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->CreateTable(&ctx, t, &tr).ok());
  }
  // A pull for step 2 waits until step 1 is applied, which never happens.
  v1::PullRequest pull;
  pull.mutable_header()->set_step_id(2);
  auto* l = pull.add_sparse();
  l->set_table("s");
  l->add_ids(1);
  v1::PullResponse resp;
  grpc::ClientContext pull_ctx;
  pull_ctx.set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(60));
  absl::Notification done;
  grpc::Status pull_status;
  stub->async()->Pull(&pull_ctx, &pull, &resp, [&](grpc::Status s) {
    pull_status = s;
    done.Notify();
  });
  // Wait until the shard counts the pull as in flight.
  httplib::Client http("127.0.0.1", admin_port);
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (true) {
    auto r = http.Get("/metrics");
    if (r && r->body.find("plexus_rpc_in_flight 1\n") != std::string::npos)
      break;
    ASSERT_LT(absl::Now(), deadline) << "the pull never reached the shard";
    ASSERT_FALSE(done.HasBeenNotified()) << pull_status.error_message();
  }
  ASSERT_TRUE((*ps)->Signal(SIGTERM).ok());
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(pull_status.error_code(), grpc::StatusCode::UNAVAILABLE)
      << pull_status.error_message();
  auto code = (*ps)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << "the shard sat out its 120 s grace period";
  EXPECT_EQ(*code, 0);
  grpc::ClientContext after;
  after.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::seconds(5));
  EXPECT_EQ(stub->CreateTable(&after, t, &tr).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace plexus
