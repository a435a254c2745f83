// Token authentication with roles (common/auth.h), from the token file's
// parser to real processes: a LocalCluster whose coordinator and PS shard
// require tokens, raw gRPC stubs, the PS client, the worker runtime
// (golden_worker, token from the environment) and the `plexus` command.
//
// Cases of ../shared/FAULTS.md: a missing or wrong token is UNAUTHENTICATED,
// a worker token on an admin RPC is PERMISSION_DENIED; each refusal leaves the
// server serving, changes nothing and moves plexus_auth_failures_total.
#include "common/auth.h"

#include <google/protobuf/descriptor.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/stat.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/health_client.h"
#include "common/process.h"
#include "common/tls.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/integration/golden.h"
#include "tests/util/certs.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::GoldenValues;
using ::plexus::testing::GoldenVariableConfig;
using ::plexus::testing::kGoldenElements;
using ::plexus::testing::MakeTestCertificates;
using ::plexus::testing::ReadFile;
using ::plexus::testing::StartDaemon;
using ::plexus::testing::StartedDaemon;
using ::plexus::testing::TempDir;

constexpr char kAdminToken[] = "admin-4f0c9b1e7d2a";
constexpr char kWorkerToken[] = "worker-8e3d5a2c6b91";

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  chmod(path.c_str(), 0600);
}

// ---- the token file and the role table ----

TEST(TokenTableTest, ParsesRolesCommentsAndBlankLines) {
  auto t = TokenTable::Parse(
      "# tokens\n\nadmin  a1b2   # the operator\n\tworker\tw9\n", "tokens");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->size(), 2u);
  ASSERT_NE(t->Find("a1b2"), nullptr);
  EXPECT_EQ(*t->Find("a1b2"), AuthRole::kAdmin);
  ASSERT_NE(t->Find("w9"), nullptr);
  EXPECT_EQ(*t->Find("w9"), AuthRole::kWorker);
  EXPECT_EQ(t->Find("w"), nullptr);
  EXPECT_EQ(t->Find("w99"), nullptr);
  EXPECT_EQ(t->Find(""), nullptr);
}

TEST(TokenTableTest, BadFilesAreInvalidArgumentNamingTheLine) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"root abc\n", "tokens:1: unknown role \"root\""},
      {"admin\n", "tokens:1: expected \"role token\""},
      {"worker a b\n", "tokens:1: expected \"role token\""},
      {"admin a\nworker a\n", "tokens:2: token listed twice"},
      {"admin caf\xc3\xa9\n", "tokens:1: a token is printable ASCII"},
      {"# nothing\n\n", "tokens: no tokens"},
  };
  for (const Case& c : cases) {
    auto t = TokenTable::Parse(c.text, "tokens");
    ASSERT_FALSE(t.ok()) << c.text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_TRUE(absl::StrContains(t.status().message(), c.message))
        << t.status();
  }
  auto missing = TokenTable::Load("/nonexistent/plexus-tokens");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(
      absl::StrContains(missing.status().message(), "/nonexistent/plexus-"));
}

// Every RPC of both services is in the table, so a new RPC cannot silently
// fall to the default.
TEST(MethodRolesTest, CoversEveryRpcOfBothServices) {
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const char* service :
       {"plexus.v1.ParameterServer", "plexus.v1.Coordinator"}) {
    const google::protobuf::ServiceDescriptor* d =
        pool->FindServiceByName(service);
    ASSERT_NE(d, nullptr) << service;
    for (int i = 0; i < d->method_count(); ++i) {
      EXPECT_TRUE(MethodRoles().contains(d->method(i)->name()))
          << service << "/" << d->method(i)->name()
          << " has no role in common/auth.cc";
    }
  }
  EXPECT_EQ(RequiredRole("Pull"), AuthRole::kWorker);
  EXPECT_EQ(RequiredRole("Push"), AuthRole::kWorker);
  EXPECT_EQ(RequiredRole("Register"), AuthRole::kWorker);
  EXPECT_EQ(RequiredRole("Heartbeat"), AuthRole::kWorker);
  for (const char* admin :
       {"CreateTable", "DeleteTable", "CreateVariable", "DeleteVariable",
        "TriggerCheckpoint", "PrepareCheckpoint", "Restore", "CancelJob",
        "SetFailpoint", "NoSuchMethod"}) {
    EXPECT_EQ(RequiredRole(admin), AuthRole::kAdmin) << admin;
  }
}

// ---- real processes ----

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_ = dir_.Sub("tokens");
    WriteFile(tokens_, absl::StrCat("# role token\nadmin ", kAdminToken,
                                    "\nworker ", kWorkerToken, "\n"));
    WriteFile(dir_.Sub("admin.token"), absl::StrCat(kAdminToken, "\n"));
    WriteFile(dir_.Sub("worker.token"), absl::StrCat(kWorkerToken, "\n"));
    local::LocalClusterOptions o;
    o.bin_dir = BinDir();
    o.root_dir = dir_.Sub("cluster");
    o.num_ps = 1;
    o.extra_flags = {"--auth_token_file=" + tokens_,
                     "--heartbeat_interval_ms=100", "--suspect_timeout_ms=600",
                     "--dead_timeout_ms=1500",
                     "--undefok=heartbeat_interval_ms,suspect_timeout_ms,"
                     "dead_timeout_ms"};
    auto c = local::LocalCluster::Start(o);
    ASSERT_TRUE(c.ok()) << c.status();
    cluster_ = std::move(*c);
    for (const auto& m : cluster_->members()) {
      if (m.role == "ps") {
        shard_ = m.address;
        ps_admin_port_ = m.admin_port;
      }
    }
    coordinator_ = v1::Coordinator::NewStub(grpc::CreateChannel(
        cluster_->coordinator_address(), grpc::InsecureChannelCredentials()));
    ps_ = v1::ParameterServer::NewStub(
        grpc::CreateChannel(shard_, grpc::InsecureChannelCredentials()));
  }

  // A client context with a deadline and, unless empty, `authorization`.
  static void Prepare(grpc::ClientContext* ctx, const std::string& auth) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    if (!auth.empty()) ctx->AddMetadata("authorization", auth);
  }

  absl::Status ListProcesses(const std::string& auth) {
    grpc::ClientContext ctx;
    Prepare(&ctx, auth);
    v1::ListProcessesRequest req;
    v1::ListProcessesResponse resp;
    return FromGrpcStatus(coordinator_->ListProcesses(&ctx, req, &resp));
  }

  absl::Status SubmitJob(const std::string& auth, uint64_t steps) {
    grpc::ClientContext ctx;
    Prepare(&ctx, auth);
    v1::SubmitJobRequest req;
    req.set_job_id("golden-job");
    req.mutable_steps()->set_function_name("golden");
    req.mutable_steps()->set_num_steps(steps);
    v1::SubmitJobResponse resp;
    return FromGrpcStatus(coordinator_->SubmitJob(&ctx, req, &resp));
  }

  absl::StatusOr<v1::JobStatus> GetJob(const std::string& auth) {
    grpc::ClientContext ctx;
    Prepare(&ctx, auth);
    v1::GetJobStatusRequest req;
    req.set_job_id("golden-job");
    v1::GetJobStatusResponse resp;
    absl::Status st =
        FromGrpcStatus(coordinator_->GetJobStatus(&ctx, req, &resp));
    if (!st.ok()) return st;
    return resp.status();
  }

  absl::Status CancelJob(const std::string& auth) {
    grpc::ClientContext ctx;
    Prepare(&ctx, auth);
    v1::CancelJobRequest req;
    req.set_job_id("golden-job");
    v1::CancelJobResponse resp;
    return FromGrpcStatus(coordinator_->CancelJob(&ctx, req, &resp));
  }

  absl::StatusOr<std::vector<std::string>> ListVariables(
      const std::string& auth) {
    grpc::ClientContext ctx;
    Prepare(&ctx, auth);
    v1::ListVariablesRequest req;
    v1::ListVariablesResponse resp;
    absl::Status st = FromGrpcStatus(ps_->ListVariables(&ctx, req, &resp));
    if (!st.ok()) return st;
    std::vector<std::string> names;
    for (const auto& v : resp.variables()) names.push_back(v.config().name());
    return names;
  }

  absl::StatusOr<std::unique_ptr<worker::PsClient>> PsClientWith(
      const std::string& token) {
    worker::PsClientOptions o;
    o.shards = {shard_};
    o.token = token;
    o.timeout = absl::Seconds(10);
    return worker::PsClient::Connect(o);
  }

  // The value of a sample line `series` in the PS's /metrics (0 if absent).
  double PsMetric(const std::string& series) {
    httplib::Client http("127.0.0.1", ps_admin_port_);
    httplib::Result r = http.Get("/metrics");
    if (!r) return -1;
    for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
      if (absl::ConsumePrefix(&line, series + " ")) {
        return std::stod(std::string(line));
      }
    }
    return 0;
  }

  TempDir dir_;
  std::string tokens_;
  std::unique_ptr<local::LocalCluster> cluster_;
  std::string shard_;
  int ps_admin_port_ = 0;
  std::unique_ptr<v1::Coordinator::Stub> coordinator_;
  std::unique_ptr<v1::ParameterServer::Stub> ps_;
};

const std::string kAdmin = absl::StrCat("Bearer ", kAdminToken);
const std::string kWorker = absl::StrCat("Bearer ", kWorkerToken);

TEST_F(AuthTest, CoordinatorRefusesMissingAndWrongTokensAndChecksRoles) {
  EXPECT_EQ(ListProcesses("").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ListProcesses("Bearer nope").code(),
            absl::StatusCode::kUnauthenticated);
  // The token without its scheme, and another token's prefix, are wrong too.
  EXPECT_EQ(ListProcesses(kAdminToken).code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ListProcesses("Bearer admin-4f0c").code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(ListProcesses(kWorker).ok());
  EXPECT_TRUE(ListProcesses(kAdmin).ok());

  // A worker may read a job but not submit or cancel one; nothing changes.
  absl::Status denied = SubmitJob(kWorker, 5);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied) << denied;
  EXPECT_TRUE(absl::StrContains(denied.message(), "admin")) << denied;
  EXPECT_EQ(GetJob(kAdmin).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(SubmitJob(kAdmin, 5).ok());
  EXPECT_EQ(CancelJob(kWorker).code(), absl::StatusCode::kPermissionDenied);
  absl::StatusOr<v1::JobStatus> job = GetJob(kWorker);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_NE(job->state(), v1::JOB_STATE_CANCELLED);
  EXPECT_TRUE(CancelJob(kAdmin).ok());
  job = GetJob(kWorker);
  ASSERT_TRUE(job.ok()) << job.status();
  EXPECT_EQ(job->state(), v1::JOB_STATE_CANCELLED);

  // Health probes need no token.
  absl::StatusOr<Health> health =
      CheckHealth(cluster_->coordinator_address(), absl::Seconds(10));
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, Health::kServing);
}

TEST_F(AuthTest, PsRefusesMissingAndWrongTokensAndChecksRoles) {
  const double before =
      PsMetric("plexus_auth_failures_total{reason=\"unauthenticated\"}");
  // Raw calls.
  EXPECT_EQ(ListVariables("").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ListVariables("Bearer worker-8e3d5a2c6b9").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_GE(PsMetric("plexus_auth_failures_total{reason=\"unauthenticated\"}"),
            before + 2);
  // The PS client: no token, a wrong one.
  auto none = PsClientWith("");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnauthenticated)
      << none.status();
  auto wrong = PsClientWith("not-a-token");
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kUnauthenticated)
      << wrong.status();

  // A worker connects, reads and pushes, but may not create or delete.
  auto worker = PsClientWith(kWorkerToken);
  ASSERT_TRUE(worker.ok()) << worker.status();
  absl::Status denied = (*worker)->CreateVariable(GoldenVariableConfig());
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied) << denied;
  EXPECT_GE(
      PsMetric("plexus_auth_failures_total{reason=\"permission_denied\"}"), 1);
  auto names = ListVariables(kWorker);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_TRUE(names->empty()) << absl::StrJoin(*names, ",");

  auto admin = PsClientWith(kAdminToken);
  ASSERT_TRUE(admin.ok()) << admin.status();
  ASSERT_TRUE((*admin)->CreateVariable(GoldenVariableConfig()).ok());
  std::vector<float> g(kGoldenElements, -0.5f);
  auto pushed = (*worker)->PushDense("golden", g);
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  std::vector<float> w(kGoldenElements);
  ASSERT_TRUE((*worker)->PullDense("golden", absl::MakeSpan(w)).ok());
  EXPECT_EQ(w[0], 0.5f);

  grpc::ClientContext ctx;
  Prepare(&ctx, kWorker);
  v1::DeleteVariableRequest del;
  del.set_name("golden");
  v1::DeleteVariableResponse del_resp;
  EXPECT_EQ(ps_->DeleteVariable(&ctx, del, &del_resp).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  names = ListVariables(kAdmin);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, std::vector<std::string>{"golden"});
}

// golden_worker takes its token from PLEXUS_TOKEN_FILE: it registers, runs
// every step of a job an admin submitted, and the variable is golden.
TEST_F(AuthTest, WorkerRuntimeTrainsWithAToken) {
  auto admin = PsClientWith(kAdminToken);
  ASSERT_TRUE(admin.ok()) << admin.status();
  ASSERT_TRUE((*admin)->CreateVariable(GoldenVariableConfig()).ok());
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int i = 0; i < 2; ++i) {
    SubprocessOptions so;
    so.argv = {BinDir() + "/golden_worker",
               "--coordinator=" + cluster_->coordinator_address(),
               "--ps=" + shard_, absl::StrCat("--task_index=", i)};
    so.env = {{"PLEXUS_TOKEN_FILE", dir_.Sub("worker.token")}};
    so.log_file = dir_.Sub(absl::StrCat("worker-", i, ".log"));
    auto p = Subprocess::Start(so);
    ASSERT_TRUE(p.ok()) << p.status();
    workers.push_back(std::move(*p));
  }
  constexpr uint64_t kSteps = 20;
  ASSERT_TRUE(SubmitJob(kAdmin, kSteps).ok());
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(70)));
  ctx.AddMetadata("authorization", kWorker);
  v1::JoinRequest join;
  join.set_job_id("golden-job");
  join.set_timeout_ms(60000);
  v1::JoinResponse joined;
  absl::Status st = FromGrpcStatus(coordinator_->Join(&ctx, join, &joined));
  ASSERT_TRUE(st.ok()) << st << ReadFile(dir_.Sub("worker-0.log"));
  EXPECT_EQ(joined.status().state(), v1::JOB_STATE_SUCCEEDED)
      << ReadFile(dir_.Sub("worker-0.log"));
  EXPECT_EQ(joined.status().closures_succeeded(), kSteps);
  std::vector<float> w(kGoldenElements);
  ASSERT_TRUE((*admin)->PullDense("golden", absl::MakeSpan(w)).ok());
  std::vector<float> golden = GoldenValues(kSteps, kGoldenElements);
  EXPECT_EQ(0, std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)));
}

// `plexus status` sends the token from --token-file or PLEXUS_TOKEN_FILE;
// without one it fails with the server's message.
TEST_F(AuthTest, CommandLineSendsItsToken) {
  auto run = [&](std::vector<std::string> args,
                 std::vector<std::pair<std::string, std::string>> env,
                 const std::string& log) -> std::pair<int, std::string> {
    SubprocessOptions so;
    so.argv = {BinDir() + "/plexus"};
    so.argv.insert(so.argv.end(), args.begin(), args.end());
    so.env = std::move(env);
    so.log_file = dir_.Sub(log);
    auto p = Subprocess::Start(so);
    if (!p.ok()) return {-1, std::string(p.status().message())};
    absl::StatusOr<int> code = (*p)->Wait(absl::Seconds(30));
    return {code.ok() ? *code : -1, ReadFile(so.log_file)};
  };
  const std::string at = "--coordinator=" + cluster_->coordinator_address();
  auto [code, out] = run({"status", at}, {}, "cli-none.log");
  EXPECT_EQ(code, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "requires a token")) << out;
  std::tie(code, out) =
      run({"status", at}, {{"PLEXUS_TOKEN_FILE", dir_.Sub("worker.token")}},
          "cli-env.log");
  EXPECT_EQ(code, 0) << out;
  std::tie(code, out) = run({"--token-file", dir_.Sub("worker.token"), "job",
                             "cancel", at, "--job=golden-job"},
                            {}, "cli-cancel.log");
  EXPECT_EQ(code, 1) << out;
  EXPECT_TRUE(absl::StrContains(out, "needs the admin role")) << out;
  std::tie(code, out) =
      run({"--token-file", dir_.Sub("admin.token"), "job", "submit", at,
           "--function=golden", "--steps=3", "--job=cli-job"},
          {}, "cli-submit.log");
  EXPECT_EQ(code, 0) << out;
}

// Mutual TLS and tokens together, end to end through a training run: a
// coordinator and a PS shard that require both, golden_worker processes with
// client certificates (--tls_* flags) and a worker token (environment), a job
// an admin submits over TLS. A plaintext client is refused by the shard.
TEST(SecureClusterTest, MutualTlsAndTokensThroughATrainingRun) {
  TempDir dir;
  absl::Status made_certs = MakeTestCertificates(dir.path());
  ASSERT_TRUE(made_certs.ok()) << made_certs;
  WriteFile(dir.Sub("tokens"), absl::StrCat("admin ", kAdminToken, "\nworker ",
                                            kWorkerToken, "\n"));
  WriteFile(dir.Sub("worker.token"), kWorkerToken);
  const std::vector<std::string> secure = {
      "--admin_port=-1", "--tls_cert_file=" + dir.Sub("server.pem"),
      "--tls_key_file=" + dir.Sub("server.key"),
      "--tls_client_ca_file=" + dir.Sub("ca.pem"),
      "--auth_token_file=" + dir.Sub("tokens")};
  auto start = [&](const std::string& name, std::vector<std::string> argv)
      -> std::pair<std::unique_ptr<Subprocess>, std::string> {
    argv.insert(argv.end(), secure.begin(), secure.end());
    absl::StatusOr<StartedDaemon> d = StartDaemon(dir, name, argv);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return {nullptr, ""};
    return {std::move(d->process), d->address};
  };
  auto [coordinator, coordinator_address] =
      start("coordinator",
            {BinDir() + "/plexus-coordinator", "--heartbeat_interval_ms=100"});
  ASSERT_NE(coordinator, nullptr);
  auto [ps, shard] = start("ps", {BinDir() + "/plexus-ps"});
  ASSERT_NE(ps, nullptr);

  worker::PsClientOptions plain;
  plain.shards = {shard};
  plain.token = kAdminToken;
  plain.timeout = absl::Seconds(2);
  EXPECT_FALSE(worker::PsClient::Connect(plain).ok());
  worker::PsClientOptions tls = plain;
  tls.timeout = absl::Seconds(10);
  tls.tls_ca_file = dir.Sub("ca.pem");
  tls.tls_cert_file = dir.Sub("client.pem");
  tls.tls_key_file = dir.Sub("client.key");
  auto admin = worker::PsClient::Connect(tls);
  ASSERT_TRUE(admin.ok()) << admin.status();
  v1::VariableConfig v = GoldenVariableConfig();
  ASSERT_TRUE((*admin)->CreateVariable(v).ok());

  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int i = 0; i < 2; ++i) {
    SubprocessOptions so;
    so.argv = {BinDir() + "/golden_worker",
               "--coordinator=" + coordinator_address,
               "--ps=" + shard,
               absl::StrCat("--task_index=", i),
               "--tls_ca_file=" + dir.Sub("ca.pem"),
               "--tls_client_cert_file=" + dir.Sub("client.pem"),
               "--tls_client_key_file=" + dir.Sub("client.key")};
    so.env = {{"PLEXUS_TOKEN_FILE", dir.Sub("worker.token")}};
    so.log_file = dir.Sub(absl::StrCat("worker-", i, ".log"));
    auto p = Subprocess::Start(so);
    ASSERT_TRUE(p.ok()) << p.status();
    workers.push_back(std::move(*p));
  }
  auto credentials =
      MakeChannelCredentials({.ca_file = dir.Sub("ca.pem"),
                              .cert_file = dir.Sub("client.pem"),
                              .key_file = dir.Sub("client.key")});
  ASSERT_TRUE(credentials.ok()) << credentials.status();
  auto stub = v1::Coordinator::NewStub(
      grpc::experimental::CreateCustomChannelWithInterceptors(
          coordinator_address, *credentials, grpc::ChannelArguments(),
          TokenInterceptors(kAdminToken)));
  constexpr uint64_t kSteps = 20;
  {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::SubmitJobRequest req;
    req.set_job_id("secure-job");
    req.mutable_steps()->set_function_name("golden");
    req.mutable_steps()->set_num_steps(kSteps);
    v1::SubmitJobResponse resp;
    absl::Status st = FromGrpcStatus(stub->SubmitJob(&ctx, req, &resp));
    ASSERT_TRUE(st.ok()) << st;
  }
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(70)));
  v1::JoinRequest join;
  join.set_job_id("secure-job");
  join.set_timeout_ms(60000);
  v1::JoinResponse joined;
  absl::Status st = FromGrpcStatus(stub->Join(&ctx, join, &joined));
  ASSERT_TRUE(st.ok()) << st << ReadFile(dir.Sub("worker-0.log"));
  EXPECT_EQ(joined.status().state(), v1::JOB_STATE_SUCCEEDED)
      << ReadFile(dir.Sub("worker-0.log"));
  std::vector<float> w(kGoldenElements);
  ASSERT_TRUE((*admin)->PullDense("golden", absl::MakeSpan(w)).ok());
  std::vector<float> golden = GoldenValues(kSteps, kGoldenElements);
  EXPECT_EQ(0, std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)));
}

// The coordinator's own calls to the PS shards (global checkpoints) carry its
// token (--token_file): with an admin token a checkpoint is published; with
// a worker token the shard refuses it, naming the role. The RPC itself needs
// an admin caller.
TEST(AuthCheckpointTest, CoordinatorCallsTheShardsWithItsToken) {
  TempDir dir;
  WriteFile(dir.Sub("tokens"), absl::StrCat("admin ", kAdminToken, "\nworker ",
                                            kWorkerToken, "\n"));
  WriteFile(dir.Sub("admin.token"), kAdminToken);
  WriteFile(dir.Sub("worker.token"), kWorkerToken);
  auto start = [&](const std::string& name, std::vector<std::string> argv)
      -> std::pair<std::unique_ptr<Subprocess>, std::string> {
    argv.push_back("--admin_port=-1");
    argv.push_back("--auth_token_file=" + dir.Sub("tokens"));
    absl::StatusOr<StartedDaemon> d = StartDaemon(dir, name, argv);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) return {nullptr, ""};
    return {std::move(d->process), d->address};
  };
  auto [ps, shard] = start("ps", {BinDir() + "/plexus-ps"});
  ASSERT_NE(ps, nullptr);
  auto [good, good_address] = start(
      "coordinator", {BinDir() + "/plexus-coordinator", "--ps_shards=" + shard,
                      "--token_file=" + dir.Sub("admin.token")});
  ASSERT_NE(good, nullptr);
  auto [weak, weak_address] =
      start("weak", {BinDir() + "/plexus-coordinator", "--ps_shards=" + shard,
                     "--token_file=" + dir.Sub("worker.token")});
  ASSERT_NE(weak, nullptr);

  auto trigger = [](const std::string& address, const std::string& token) {
    auto stub = v1::Coordinator::NewStub(
        grpc::experimental::CreateCustomChannelWithInterceptors(
            address, grpc::InsecureChannelCredentials(),
            grpc::ChannelArguments(), TokenInterceptors(token)));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    v1::TriggerCheckpointRequest req;
    v1::TriggerCheckpointResponse resp;
    return FromGrpcStatus(stub->TriggerCheckpoint(&ctx, req, &resp));
  };
  auto published = [](const std::string& address) -> int {
    auto stub = v1::Coordinator::NewStub(
        grpc::experimental::CreateCustomChannelWithInterceptors(
            address, grpc::InsecureChannelCredentials(),
            grpc::ChannelArguments(), TokenInterceptors(kWorkerToken)));
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::ListCheckpointsRequest req;
    v1::ListCheckpointsResponse resp;
    grpc::Status st = stub->ListCheckpoints(&ctx, req, &resp);
    return st.ok() ? resp.manifests_size() : -1;
  };

  absl::Status denied = trigger(good_address, kWorkerToken);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied) << denied;
  EXPECT_EQ(published(good_address), 0);
  absl::Status ok = trigger(good_address, kAdminToken);
  EXPECT_TRUE(ok.ok()) << ok << ReadFile(dir.Sub("coordinator.log"));
  EXPECT_EQ(published(good_address), 1);

  absl::Status refused = trigger(weak_address, kAdminToken);
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.message(), "needs the admin role"))
      << refused;
  EXPECT_EQ(published(weak_address), 0);
}

// A daemon given a bad token file does not start, and says why.
TEST(AuthDaemonTest, BadTokenFileStopsTheDaemonWithAClearMessage) {
  TempDir dir;
  WriteFile(dir.Sub("tokens"), "superuser abc\n");
  SubprocessOptions so;
  so.argv = {BinDir() + "/plexus-ps", "--data_dir=" + dir.Sub("data"),
             "--port_file=" + dir.Sub("port"), "--admin_port=-1",
             "--auth_token_file=" + dir.Sub("tokens")};
  so.log_file = dir.Sub("ps.log");
  auto p = Subprocess::Start(so);
  ASSERT_TRUE(p.ok()) << p.status();
  absl::StatusOr<int> code = (*p)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_NE(*code, 0);
  std::string log = ReadFile(so.log_file);
  EXPECT_TRUE(absl::StrContains(log, "unknown role \"superuser\"")) << log;
}

}  // namespace
}  // namespace plexus
