// Starts each daemon as a real process on a free port of 127.0.0.1, checks its
// gRPC health, and stops it with SIGTERM.
#include <signal.h>

#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <sstream>

#include "common/health_client.h"
#include "common/process.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::ReadFile;
using ::plexus::testing::RunProgram;
using ::plexus::testing::TempDir;

struct Started {
  std::unique_ptr<Subprocess> proc;
  std::string address;
  std::string log;
};

Started StartDaemon(const std::string& binary, const TempDir& dir,
                    const std::string& name,
                    std::vector<std::string> extra = {}) {
  Started s;
  s.log = dir.Sub(name + ".log");
  std::string port_file = dir.Sub(name + ".port");
  SubprocessOptions o;
  o.argv = {BinDir() + "/" + binary, "--data_dir=" + dir.Sub(name + "-data"),
            "--port=0", "--port_file=" + port_file};
  o.argv.insert(o.argv.end(), extra.begin(), extra.end());
  o.log_file = s.log;
  auto p = Subprocess::Start(o);
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return s;
  s.proc = std::move(*p);
  auto port = WaitForPortFile(port_file, absl::Seconds(30), s.proc.get());
  EXPECT_TRUE(port.ok()) << port.status() << "\n" << ReadFile(s.log);
  if (port.ok()) s.address = "127.0.0.1:" + std::to_string(*port);
  return s;
}

class DaemonTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DaemonTest, ServesHealthAndExitsCleanlyOnSigterm) {
  TempDir dir;
  // A long grace period: the drain must end when the last call does, not
  // when the grace period runs out (this test's client keeps its channel).
  Started d = StartDaemon(GetParam(), dir, "d", {"--shutdown_grace_s=120"});
  ASSERT_FALSE(d.address.empty());
  ASSERT_TRUE(WaitUntilServing(d.address, absl::Seconds(30)).ok());
  EXPECT_NE(ReadFile(d.log).find("listening on " + d.address),
            std::string::npos)
      << ReadFile(d.log);

  // Watch the health stream: SERVING now, NOT_SERVING once SIGTERM arrives.
  auto channel =
      grpc::CreateChannel(d.address, grpc::InsecureChannelCredentials());
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  auto stream = stub->Watch(&ctx, grpc::health::v1::HealthCheckRequest());
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  ASSERT_TRUE(d.proc->Signal(SIGTERM).ok());
  ASSERT_TRUE(stream->Read(&resp));
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  // The drain ends the stream rather than holding it open.
  EXPECT_FALSE(stream->Read(&resp));
  EXPECT_TRUE(stream->Finish().ok());
  auto code = d.proc->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << ReadFile(d.log);
  EXPECT_EQ(*code, 0) << ReadFile(d.log);
  EXPECT_NE(ReadFile(d.log).find("draining (SIGTERM)"), std::string::npos)
      << ReadFile(d.log);
  // Gone: new calls fail.
  EXPECT_FALSE(CheckHealth(d.address, absl::Seconds(2)).ok());
}

TEST_P(DaemonTest, ServesMetricsAndHealthzOnTheAdminPort) {
  TempDir dir;
  std::string admin_file = dir.Sub("admin.port");
  Started d =
      StartDaemon(GetParam(), dir, "d", {"--admin_port_file=" + admin_file});
  ASSERT_FALSE(d.address.empty());
  auto admin = WaitForPortFile(admin_file, absl::Seconds(30), d.proc.get());
  ASSERT_TRUE(admin.ok()) << admin.status();
  ASSERT_TRUE(WaitUntilServing(d.address, absl::Seconds(30)).ok());
  httplib::Client http("127.0.0.1", *admin);
  auto healthz = http.Get("/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(healthz->status, 200);
  EXPECT_EQ(healthz->body, "SERVING\n");
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(
      metrics->body.find("plexus_build_info{binary=\"" + GetParam() + "\""),
      std::string::npos)
      << metrics->body;
  // The health check above is an RPC, so it was counted.
  EXPECT_NE(metrics->body.find("plexus_rpc_requests_total{method=\"/"
                               "grpc.health.v1.Health/Check\",code=\"OK\"}"),
            std::string::npos)
      << metrics->body;
  EXPECT_EQ(http.Get("/nothing")->status, 404);
}

TEST_P(DaemonTest, HelpAndVersionExitZero) {
  TempDir dir;
  for (const char* flag : {"--help", "--version"}) {
    SubprocessOptions o;
    o.argv = {BinDir() + "/" + GetParam(), flag};
    o.log_file = dir.Sub(std::string("out") + flag);
    auto p = Subprocess::Start(o);
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*(*p)->Wait(absl::Seconds(30)), 0) << flag;
    std::string out = ReadFile(o.log_file);
    EXPECT_NE(out.find(GetParam()), std::string::npos) << out;
    if (std::string(flag) == "--help") {
      EXPECT_NE(out.find("--data_dir"), std::string::npos) << out;
      EXPECT_NE(out.find("--port_file"), std::string::npos) << out;
    }
  }
}

TEST_P(DaemonTest, MissingDataDirIsAClearError) {
  TempDir dir;
  SubprocessOptions o;
  o.argv = {BinDir() + "/" + GetParam(), "--port=0"};
  o.log_file = dir.Sub("log");
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*(*p)->Wait(absl::Seconds(30)), 1);
  EXPECT_NE(ReadFile(o.log_file).find("--data_dir is required"),
            std::string::npos);
}

TEST_P(DaemonTest,
       SecondDaemonOnTheSameDataDirExitsOneAndLeavesTheFirstServing) {
  TempDir dir;
  Started first = StartDaemon(GetParam(), dir, "d");
  ASSERT_FALSE(first.address.empty());
  SubprocessOptions o;
  o.argv = {BinDir() + "/" + GetParam(), "--data_dir=" + dir.Sub("d-data"),
            "--port=0"};
  o.log_file = dir.Sub("second.log");
  auto second = Subprocess::Start(o);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*(*second)->Wait(absl::Seconds(30)), 1);
  EXPECT_NE(ReadFile(o.log_file).find("is in use by another process"),
            std::string::npos)
      << ReadFile(o.log_file);
  auto h = CheckHealth(first.address, absl::Seconds(5));
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(*h, Health::kServing);
}

TEST_P(DaemonTest, BadFailpointSpecExitsOne) {
  TempDir dir;
  SubprocessOptions o;
  o.argv = {BinDir() + "/" + GetParam(), "--data_dir=" + dir.Sub("data"),
            "--failpoints=x=explode"};
  o.log_file = dir.Sub("log");
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*(*p)->Wait(absl::Seconds(30)), 1);
  EXPECT_NE(ReadFile(o.log_file).find("unknown action"), std::string::npos)
      << ReadFile(o.log_file);
}

// Calls SetFailpoint on whichever service `binary` serves.
grpc::Status SetFailpointOn(const std::string& binary,
                            const std::string& address, const std::string& name,
                            const std::string& action,
                            v1::SetFailpointResponse* resp) {
  auto channel =
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  v1::SetFailpointRequest req;
  req.set_name(name);
  req.set_action(action);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (binary == "plexus-ps") {
    return v1::ParameterServer::NewStub(channel)->SetFailpoint(&ctx, req, resp);
  }
  return v1::Coordinator::NewStub(channel)->SetFailpoint(&ctx, req, resp);
}

TEST_P(DaemonTest, FailpointRpcIsOffUnlessEnabled) {
  TempDir dir;
  Started d = StartDaemon(GetParam(), dir, "d");
  ASSERT_FALSE(d.address.empty());
  v1::SetFailpointResponse resp;
  EXPECT_EQ(
      SetFailpointOn(GetParam(), d.address, "x.y", "crash", &resp).error_code(),
      grpc::StatusCode::UNIMPLEMENTED);
}

TEST_P(DaemonTest, FailpointRpcArmsAndClearsPoints) {
  TempDir dir;
  Started d = StartDaemon(GetParam(), dir, "d", {"--failpoint_rpc"});
  ASSERT_FALSE(d.address.empty());
  v1::SetFailpointResponse resp;
  ASSERT_TRUE(
      SetFailpointOn(GetParam(), d.address, "x.y", "2*error(ABORTED)", &resp)
          .ok());
  ASSERT_EQ(resp.active_size(), 1);
  EXPECT_EQ(resp.active(0), "x.y=2*error(ABORTED)");
  // A bad action is refused and changes nothing.
  resp.Clear();
  EXPECT_EQ(SetFailpointOn(GetParam(), d.address, "x.y", "explode", &resp)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  resp.Clear();
  ASSERT_TRUE(SetFailpointOn(GetParam(), d.address, "x.y", "", &resp).ok());
  EXPECT_EQ(resp.active_size(), 0);
  // Still serving.
  auto h = CheckHealth(d.address, absl::Seconds(5));
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(*h, Health::kServing);
}

INSTANTIATE_TEST_SUITE_P(Daemons, DaemonTest,
                         ::testing::Values("plexus-ps", "plexus-coordinator"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(PsDaemon, NegativeEngineThreadsExitsOne) {
  TempDir dir;
  SubprocessOptions o;
  o.argv = {BinDir() + "/plexus-ps", "--data_dir=" + dir.Sub("data"),
            "--engine_threads=-2"};
  o.log_file = dir.Sub("log");
  auto p = Subprocess::Start(o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*(*p)->Wait(absl::Seconds(30)), 1);
  EXPECT_NE(ReadFile(o.log_file).find("--engine_threads must be >= -1"),
            std::string::npos)
      << ReadFile(o.log_file);
}

TEST(LocalCluster, StartsEveryProcessAndStopsThemCleanly) {
  TempDir dir;
  local::LocalClusterOptions o;
  o.bin_dir = BinDir();
  o.root_dir = dir.Sub("cluster");
  o.num_ps = 2;
  auto cluster = local::LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  ASSERT_EQ((*cluster)->members().size(), 3u);
  for (const auto& m : (*cluster)->members()) {
    auto h = CheckHealth(m.address, absl::Seconds(5));
    ASSERT_TRUE(h.ok()) << m.role << " " << h.status();
    EXPECT_EQ(*h, Health::kServing);
    httplib::Client http("127.0.0.1", m.admin_port);
    auto healthz = http.Get("/healthz");
    ASSERT_TRUE(healthz) << m.role << " admin port " << m.admin_port;
    EXPECT_EQ(healthz->status, 200);
  }
  auto state = local::ReadState(local::StatePath(o.root_dir));
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_EQ(state->size(), 3u);
  EXPECT_EQ((*state)[2].role, "ps");
  EXPECT_EQ((*state)[2].index, 1);
  EXPECT_EQ((*state)[2].address, (*cluster)->members()[2].address);
  EXPECT_EQ((*state)[2].admin_port, (*cluster)->members()[2].admin_port);
  EXPECT_TRUE((*cluster)->Stop(absl::Seconds(30)).ok());
}

// Runs the `plexus` command with `args`, its output into dir/<log>; its exit
// status.
int RunPlexus(const TempDir& dir, std::vector<std::string> args,
              const std::string& log) {
  args.insert(args.begin(), BinDir() + "/plexus");
  return RunProgram(args, dir.Sub(log), absl::Seconds(60));
}

TEST(PlexusCli, LocalUpStatusDown) {
  TempDir dir;
  auto run = [&](std::vector<std::string> args, const std::string& log) {
    return RunPlexus(dir, std::move(args), log);
  };
  std::string root = dir.Sub("c");
  ASSERT_EQ(run({"local", "up", "--dir", root, "--ps", "1"}, "up"), 0)
      << ReadFile(dir.Sub("up"));
  EXPECT_EQ(run({"local", "status", "--dir", root}, "status"), 0)
      << ReadFile(dir.Sub("status"));
  EXPECT_NE(ReadFile(dir.Sub("status")).find("SERVING"), std::string::npos);
  // A second `up` on the same folder refuses while the first runs.
  EXPECT_EQ(run({"local", "up", "--dir", root}, "up2"), 1);
  EXPECT_NE(ReadFile(dir.Sub("up2")).find("already runs"), std::string::npos);
  // Jobs through the local cluster's coordinator.
  EXPECT_EQ(run({"status", "--dir", root}, "cstatus"), 0)
      << ReadFile(dir.Sub("cstatus"));
  EXPECT_NE(ReadFile(dir.Sub("cstatus")).find("INCARNATION"),
            std::string::npos);
  EXPECT_EQ(run({"job", "submit", "--dir", root, "--function", "train",
                 "--steps", "5", "--job", "j1"},
                "submit"),
            0)
      << ReadFile(dir.Sub("submit"));
  EXPECT_EQ(run({"job", "status", "--dir", root, "--job", "j1"}, "jstatus"), 0);
  EXPECT_NE(ReadFile(dir.Sub("jstatus")).find("job j1: running, 0/5 closures"),
            std::string::npos)
      << ReadFile(dir.Sub("jstatus"));
  EXPECT_EQ(run({"job", "cancel", "--dir", root, "--job", "j1"}, "cancel"), 0);
  EXPECT_EQ(
      run({"job", "status", "--dir", root, "--job", "j1", "--json"}, "json"),
      0);
  EXPECT_NE(ReadFile(dir.Sub("json")).find("\"state\":\"JOB_STATE_CANCELLED\""),
            std::string::npos)
      << ReadFile(dir.Sub("json"));
  EXPECT_EQ(run({"job", "status", "--dir", root, "--job", "nope"}, "nope"), 1);
  EXPECT_NE(ReadFile(dir.Sub("nope")).find("unknown job nope"),
            std::string::npos);
  EXPECT_EQ(run({"local", "down", "--dir", root}, "down"), 0)
      << ReadFile(dir.Sub("down"));
  EXPECT_EQ(run({"local", "status", "--dir", root}, "status2"), 1);
}

// `plexus bench NAME ...` runs that benchmark with the rest of the arguments;
// an unknown name or none is refused, listing the names.
TEST(PlexusCli, BenchRunsABenchmarkByName) {
  TempDir dir;
  auto run = [&](std::vector<std::string> args, const std::string& log) {
    return RunPlexus(dir, std::move(args), log);
  };
  EXPECT_EQ(
      run({"bench", "engine", "--seconds", "0.01", "--ids", "1000"}, "bench"),
      0)
      << ReadFile(dir.Sub("bench"));
  EXPECT_NE(ReadFile(dir.Sub("bench")).find("adam sparse:"), std::string::npos)
      << ReadFile(dir.Sub("bench"));
  EXPECT_EQ(run({"bench", "nosuch"}, "bench2"), 2);
  EXPECT_NE(ReadFile(dir.Sub("bench2"))
                .find("no benchmark 'nosuch' (ps, collectives, checkpoint"),
            std::string::npos)
      << ReadFile(dir.Sub("bench2"));
  EXPECT_EQ(run({"bench"}, "bench3"), 2);
  EXPECT_NE(ReadFile(dir.Sub("bench3")).find("engine       engine_bench"),
            std::string::npos)
      << ReadFile(dir.Sub("bench3"));
}

// `plexus local up --workers`: worker processes are started, counted as up
// once registered, shown by `local status` (and a dead one as down), and
// `local down` stops them with the daemons.
TEST(PlexusCli, LocalUpWithWorkers) {
  TempDir dir;
  auto run = [&](std::vector<std::string> args, const std::string& log) {
    return RunPlexus(dir, std::move(args), log);
  };
  std::string root = dir.Sub("c");
  ASSERT_EQ(run({"local", "up", "--dir", root, "--ps", "1", "--workers", "2",
                 "--worker", BinDir() + "/golden_worker"},
                "up"),
            0)
      << ReadFile(dir.Sub("up"));
  auto state = local::ReadState(local::StatePath(root));
  ASSERT_TRUE(state.ok()) << state.status();
  std::vector<pid_t> pids;
  for (const auto& m : *state) {
    if (m.role == "worker") pids.push_back(m.pid);
    EXPECT_EQ(kill(m.pid, 0), 0) << m.role << " " << m.index;
  }
  ASSERT_EQ(pids.size(), 2u);
  EXPECT_EQ(run({"local", "status", "--dir", root}, "status"), 0)
      << ReadFile(dir.Sub("status"));
  EXPECT_NE(ReadFile(dir.Sub("status")).find("RUNNING"), std::string::npos);
  // Each worker's command line is saved for restarts.
  EXPECT_NE(ReadFile(root + "/worker-1/argv").find("--task_index=1"),
            std::string::npos);
  // A dead worker shows as down, and `status` says something is wrong. The
  // workers are not our children (`up` detached them): a killed one may
  // linger as a zombie, which does not count as running.
  auto running = [](pid_t pid) {
    return kill(pid, 0) == 0 &&
           ReadFile("/proc/" + std::to_string(pid) + "/stat").find(") Z") ==
               std::string::npos;
  };
  ASSERT_EQ(kill(pids[0], SIGKILL), 0);
  for (int i = 0; i < 2000 && running(pids[0]); ++i) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  EXPECT_EQ(run({"local", "status", "--dir", root}, "status2"), 1);
  EXPECT_NE(ReadFile(dir.Sub("status2")).find("down"), std::string::npos);
  EXPECT_EQ(run({"local", "down", "--dir", root}, "down"), 0)
      << ReadFile(dir.Sub("down"));
  EXPECT_FALSE(running(pids[1])) << "worker 1 still runs after `local down`";
}

}  // namespace
}  // namespace plexus
