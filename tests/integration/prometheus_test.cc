// A real Prometheus server (Debian's `prometheus`) scrapes a local cluster:
// LocalCluster's coordinator and PS shard, two golden_worker processes
// training a job. The test writes Prometheus's configuration (every daemon's
// admin port as a target), starts it on loopback with an ephemeral port,
// and asks its HTTP API that every target is up, that the series
// ../shared/FAULTS.md and the issues name exist, and that they move as
// training proceeds: the coordinator's finished-closure counter is seen
// between 0 and N during the job and at N after it, the PS's applied pushes
// and the RPC histograms grow.
//
// Skipped, saying so, where /usr/bin/prometheus is not installed
// (scripts/setup.sh installs it).
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/process.h"
#include "plexus/worker/ps_client.h"
#include "tests/integration/golden.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus {
namespace {

using ::plexus::testing::BinDir;
using ::plexus::testing::GoldenValues;
using ::plexus::testing::GoldenVariableConfig;
using ::plexus::testing::kGoldenElements;
using ::plexus::testing::ReadFile;
using ::plexus::testing::TempDir;
using ::plexus::testing::WaitFor;

constexpr char kPrometheus[] = "/usr/bin/prometheus";

// The TCP ports process `pid` listens on (IPv4): the sockets among its file
// descriptors that /proc/net/tcp lists in state LISTEN. Lets Prometheus bind
// port 0 and still be found, without a port picked in advance.
std::vector<int> ListeningPorts(pid_t pid) {
  std::set<std::string> inodes;
  std::error_code ec;
  for (const auto& fd : std::filesystem::directory_iterator(
           absl::StrCat("/proc/", pid, "/fd"), ec)) {
    std::string target = std::filesystem::read_symlink(fd.path(), ec);
    if (!ec && target.rfind("socket:[", 0) == 0) {
      inodes.insert(target.substr(8, target.size() - 9));
    }
  }
  std::vector<int> ports;
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // header
  while (std::getline(tcp, line)) {
    std::vector<std::string> f =
        absl::StrSplit(line, ' ', absl::SkipWhitespace());
    // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
    if (f.size() < 10 || f[3] != "0A" || !inodes.contains(f[9])) continue;
    ports.push_back(std::stoi(f[1].substr(f[1].find(':') + 1), nullptr, 16));
  }
  return ports;
}

std::string UrlEncode(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

// One sample of an instant-vector result: its labels and value.
struct Sample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

class PrometheusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(kPrometheus, X_OK) != 0) {
      GTEST_SKIP() << kPrometheus
                   << " is not installed: this test needs Debian's "
                      "`prometheus` package (scripts/setup.sh, or apt-get "
                      "install prometheus)";
    }
  }

  // An instant query at the server's now. An error when Prometheus does not
  // answer or answers with an error.
  absl::StatusOr<std::vector<Sample>> Query(const std::string& promql) {
    httplib::Client http("127.0.0.1", prometheus_port_);
    http.set_read_timeout(10, 0);
    httplib::Result r =
        http.Get(("/api/v1/query?query=" + UrlEncode(promql)).c_str());
    if (!r) return absl::UnavailableError("prometheus does not answer");
    google::protobuf::Struct json;
    if (!google::protobuf::util::JsonStringToMessage(r->body, &json).ok() ||
        json.fields().at("status").string_value() != "success") {
      return absl::InternalError(absl::StrCat(promql, ": ", r->body));
    }
    std::vector<Sample> out;
    const auto& data = json.fields().at("data").struct_value();
    for (const auto& item : data.fields().at("result").list_value().values()) {
      const auto& fields = item.struct_value().fields();
      Sample s;
      for (const auto& [k, v] : fields.at("metric").struct_value().fields()) {
        s.labels[k] = v.string_value();
      }
      const auto& pair = fields.at("value").list_value().values();
      if (pair.size() != 2 ||
          !absl::SimpleAtod(pair[1].string_value(), &s.value)) {
        return absl::InternalError(absl::StrCat(promql, ": ", r->body));
      }
      out.push_back(std::move(s));
    }
    return out;
  }

  // The value of a query that yields one sample; NaN when it yields none.
  double Scalar(const std::string& promql) {
    absl::StatusOr<std::vector<Sample>> r = Query(promql);
    if (!r.ok() || r->size() != 1) return std::nan("");
    return r->front().value;
  }

  int prometheus_port_ = 0;
};

TEST_F(PrometheusTest, ScrapesALocalClusterAndSeriesMoveAsTrainingProceeds) {
  TempDir dir;
  local::LocalClusterOptions o;
  o.bin_dir = BinDir();
  o.root_dir = dir.Sub("cluster");
  o.num_ps = 1;
  o.extra_flags = {"--heartbeat_interval_ms=100",
                   "--undefok=heartbeat_interval_ms"};
  auto cluster = local::LocalCluster::Start(o);
  ASSERT_TRUE(cluster.ok()) << cluster.status();
  std::string shard;
  std::vector<std::string> targets;
  for (const auto& m : (*cluster)->members()) {
    if (m.role == "ps") shard = m.address;
    targets.push_back(absl::StrCat("{targets: ['127.0.0.1:", m.admin_port,
                                   "'], labels: {role: '", m.role, "'}}"));
  }

  // Scrape every 250 ms so that a job of a few seconds is seen in motion.
  const std::string config = dir.Sub("prometheus.yml");
  std::ofstream(config) << "global:\n"
                        << "  scrape_interval: 250ms\n"
                        << "  scrape_timeout: 200ms\n"
                        << "scrape_configs:\n"
                        << "  - job_name: plexus\n"
                        << "    static_configs: ["
                        << absl::StrJoin(targets, ", ") << "]\n";
  SubprocessOptions po;
  po.argv = {kPrometheus, "--config.file=" + config,
             "--storage.tsdb.path=" + dir.Sub("tsdb"),
             "--web.listen-address=127.0.0.1:0", "--log.level=warn"};
  po.log_file = dir.Sub("prometheus.log");
  auto prometheus = Subprocess::Start(po);
  ASSERT_TRUE(prometheus.ok()) << prometheus.status();
  ASSERT_TRUE(WaitFor(
      [&] {
        std::vector<int> ports = ListeningPorts((*prometheus)->pid());
        if (ports.size() == 1) prometheus_port_ = ports[0];
        return prometheus_port_ != 0 || !(*prometheus)->Running();
      },
      absl::Seconds(60)));
  ASSERT_NE(prometheus_port_, 0) << ReadFile(po.log_file);
  ASSERT_TRUE(WaitFor(
      [&] {
        httplib::Client http("127.0.0.1", prometheus_port_);
        httplib::Result r = http.Get("/-/ready");
        return r && r->status == 200;
      },
      absl::Seconds(60)))
      << ReadFile(po.log_file);
  // Both targets are scraped and up.
  ASSERT_TRUE(WaitFor([&] { return Scalar("sum(up{job=\"plexus\"})") == 2; },
                      absl::Seconds(30)))
      << Query("up").status() << ReadFile(po.log_file);

  // A job of kSteps golden steps on two workers, ~50 ms of compute each.
  worker::PsClientOptions pco;
  pco.shards = {shard};
  auto ps = worker::PsClient::Connect(pco);
  ASSERT_TRUE(ps.ok()) << ps.status();
  v1::VariableConfig v = GoldenVariableConfig();
  ASSERT_TRUE((*ps)->CreateVariable(v).ok());
  std::vector<std::unique_ptr<Subprocess>> workers;
  for (int i = 0; i < 2; ++i) {
    SubprocessOptions so;
    so.argv = {BinDir() + "/golden_worker",
               "--coordinator=" + (*cluster)->coordinator_address(),
               "--ps=" + shard, absl::StrCat("--task_index=", i),
               "--pause_after_pull_ms=50"};
    so.log_file = dir.Sub(absl::StrCat("worker-", i, ".log"));
    auto p = Subprocess::Start(so);
    ASSERT_TRUE(p.ok()) << p.status();
    workers.push_back(std::move(*p));
  }
  constexpr int kSteps = 80;
  SubprocessOptions submit;
  submit.argv = {BinDir() + "/plexus",
                 "job",
                 "submit",
                 "--coordinator=" + (*cluster)->coordinator_address(),
                 "--function=golden",
                 absl::StrCat("--steps=", kSteps),
                 "--job=golden-job"};
  submit.log_file = dir.Sub("submit.log");
  auto submitted = Subprocess::Start(submit);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  absl::StatusOr<int> code = (*submitted)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok() && *code == 0) << ReadFile(submit.log_file);

  // While the job runs, Prometheus sees the finished counter part-way; at
  // the end, at kSteps.
  const std::string finished =
      "plexus_coordinator_finished_total{job=\"plexus\"}";
  std::vector<double> seen;
  ASSERT_TRUE(WaitFor(
      [&] {
        double f = Scalar(finished);
        if (!std::isnan(f) && (seen.empty() || seen.back() != f)) {
          seen.push_back(f);
        }
        return f == kSteps;
      },
      absl::Seconds(120)))
      << "finished_total as scraped: " << absl::StrJoin(seen, ", ")
      << "\nworker 0:\n"
      << ReadFile(dir.Sub("worker-0.log"));
  RecordProperty("finished_total_as_scraped", absl::StrJoin(seen, ","));
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()))
      << absl::StrJoin(seen, ", ");
  EXPECT_TRUE(std::any_of(seen.begin(), seen.end(),
                          [&](double f) { return f > 0 && f < kSteps; }))
      << "never scraped mid-job: " << absl::StrJoin(seen, ", ");

  // The named series exist, on the right process.
  for (const char* series : {
           "plexus_build_info{role=\"coordinator\"}",
           "plexus_build_info{role=\"ps\"}",
           "plexus_process_start_time_seconds{role=\"ps\"}",
           "plexus_coordinator_workers_alive",
           "plexus_coordinator_restarts_total",
           "plexus_coordinator_requeued_total",
           "plexus_coordinator_steps_dispatched_total",
           "plexus_coordinator_dispatch_latency_seconds_bucket",
           "plexus_ps_pushes_total{outcome=\"applied\"}",
           "plexus_ps_pushes_total{outcome=\"duplicate\"}",
           "plexus_ps_applied_keys",
           "plexus_ps_variable_memory_bytes{variable=\"golden\"}",
           "plexus_rpc_requests_total{role=\"ps\",method=~\".*/Push\"}",
           "plexus_rpc_duration_seconds_bucket{role=\"coordinator\"}",
           "plexus_rpc_in_flight",
       }) {
    absl::StatusOr<std::vector<Sample>> r = Query(series);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_FALSE(r->empty()) << series << " is not in Prometheus";
  }
  EXPECT_GT(Scalar("plexus_ps_variable_last_applied_step{variable=\"golden\"}"),
            0);
  EXPECT_EQ(Scalar("plexus_coordinator_workers_alive"), 2);
  EXPECT_EQ(Scalar("plexus_coordinator_restarts_total"), 0);
  EXPECT_EQ(Scalar("plexus_ps_pushes_total{outcome=\"duplicate\"}"), 0);
  // Every step's push reached the PS once (the PS is scraped after its last
  // push within a scrape interval or two).
  EXPECT_TRUE(WaitFor(
      [&] {
        return Scalar("plexus_ps_pushes_total{outcome=\"applied\"}") == kSteps;
      },
      absl::Seconds(10)))
      << Scalar("plexus_ps_pushes_total{outcome=\"applied\"}");
  // Rates and quantiles over the run are positive and finite.
  EXPECT_GT(Scalar("sum(increase(plexus_rpc_requests_total{role=\"ps\","
                   "code=\"OK\"}[1m]))"),
            0);
  double p99 = Scalar(
      "histogram_quantile(0.99, sum by (le) "
      "(rate(plexus_rpc_duration_seconds_bucket{role=\"ps\"}[1m])))");
  EXPECT_TRUE(std::isfinite(p99) && p99 > 0) << p99;

  std::vector<float> w(kGoldenElements);
  ASSERT_TRUE((*ps)->PullDense("golden", absl::MakeSpan(w)).ok());
  std::vector<float> golden = GoldenValues(kSteps, kGoldenElements);
  EXPECT_EQ(0, std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)));
}

// The checkpoint series, read from the daemons' /metrics (no Prometheus
// needed): a coordinator that knows its PS shard (--ps_shards) takes a global
// checkpoint every 10 steps of a golden job. LocalCluster's coordinator is
// not told its shards, so this test starts the processes itself.
TEST(CheckpointMetricsTest, PeriodicCheckpointsShowInMetrics) {
  TempDir dir;
  const double start_time = absl::ToUnixMillis(absl::Now()) / 1e3;
  auto start = [&](const std::string& name, std::vector<std::string> argv)
      -> std::tuple<std::unique_ptr<Subprocess>, std::string, int> {
    argv.push_back("--data_dir=" + dir.Sub(name + "-data"));
    argv.push_back("--port_file=" + dir.Sub(name + ".port"));
    argv.push_back("--admin_port_file=" + dir.Sub(name + ".admin_port"));
    SubprocessOptions so;
    so.argv = argv;
    so.log_file = dir.Sub(name + ".log");
    auto p = Subprocess::Start(so);
    EXPECT_TRUE(p.ok()) << p.status();
    if (!p.ok()) return {nullptr, "", 0};
    absl::StatusOr<int> port =
        WaitForPortFile(dir.Sub(name + ".port"), absl::Seconds(30), p->get());
    absl::StatusOr<int> admin = WaitForPortFile(dir.Sub(name + ".admin_port"),
                                                absl::Seconds(30), p->get());
    EXPECT_TRUE(port.ok() && admin.ok()) << ReadFile(so.log_file);
    if (!port.ok() || !admin.ok()) return {nullptr, "", 0};
    return {std::move(*p), absl::StrCat("127.0.0.1:", *port), *admin};
  };
  auto [ps, shard, ps_admin] = start("ps", {BinDir() + "/plexus-ps"});
  ASSERT_NE(ps, nullptr);
  auto [coordinator, coordinator_address, coordinator_admin] =
      start("coordinator",
            {BinDir() + "/plexus-coordinator", "--heartbeat_interval_ms=100",
             "--ps_shards=" + shard, "--checkpoint_every_steps=10"});
  ASSERT_NE(coordinator, nullptr);

  worker::PsClientOptions pco;
  pco.shards = {shard};
  auto client = worker::PsClient::Connect(pco);
  ASSERT_TRUE(client.ok()) << client.status();
  v1::VariableConfig v = GoldenVariableConfig();
  ASSERT_TRUE((*client)->CreateVariable(v).ok());
  SubprocessOptions wo;
  wo.argv = {BinDir() + "/golden_worker",
             "--coordinator=" + coordinator_address, "--ps=" + shard,
             "--task_index=0", "--pause_after_pull_ms=20"};
  wo.log_file = dir.Sub("worker.log");
  auto worker = Subprocess::Start(wo);
  ASSERT_TRUE(worker.ok()) << worker.status();
  SubprocessOptions submit;
  submit.argv = {BinDir() + "/plexus",
                 "job",
                 "submit",
                 "--coordinator=" + coordinator_address,
                 "--function=golden",
                 "--steps=40",
                 "--job=golden-job"};
  submit.log_file = dir.Sub("submit.log");
  auto submitted = Subprocess::Start(submit);
  ASSERT_TRUE(submitted.ok()) << submitted.status();
  absl::StatusOr<int> code = (*submitted)->Wait(absl::Seconds(30));
  ASSERT_TRUE(code.ok() && *code == 0) << ReadFile(submit.log_file);

  // The value of `series` in a daemon's /metrics; NaN when absent.
  auto metric = [](int port, const std::string& series) {
    httplib::Client http("127.0.0.1", port);
    httplib::Result r = http.Get("/metrics");
    if (!r) return std::nan("");
    for (absl::string_view line : absl::StrSplit(r->body, '\n')) {
      double v;
      if (absl::ConsumePrefix(&line, series + " ") &&
          absl::SimpleAtod(line, &v)) {
        return v;
      }
    }
    return std::nan("");
  };
  EXPECT_TRUE(WaitFor(
      [&] {
        return metric(coordinator_admin,
                      "plexus_coordinator_checkpoint_last_step") >= 10;
      },
      absl::Seconds(60)))
      << ReadFile(dir.Sub("coordinator.log"));
  EXPECT_GT(metric(coordinator_admin,
                   "plexus_coordinator_checkpoint_last_success_time_seconds"),
            start_time);
  EXPECT_GE(metric(coordinator_admin,
                   "plexus_coordinator_checkpoint_last_duration_seconds"),
            0);
  EXPECT_GE(
      metric(coordinator_admin, "plexus_coordinator_checkpoints_retained"), 1);
  EXPECT_GT(metric(ps_admin, "plexus_ps_checkpoint_last_success_time_seconds"),
            start_time);
  EXPECT_GE(metric(ps_admin, "plexus_ps_checkpoint_write_seconds_count"), 1);
  EXPECT_GE(metric(ps_admin, "plexus_ps_checkpoint_cut_pause_seconds_count"),
            1);
  EXPECT_GT(metric(ps_admin, "plexus_ps_checkpoint_written_bytes_total"), 0);
}

}  // namespace
}  // namespace plexus
