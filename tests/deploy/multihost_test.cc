// A multi-host rehearsal on one machine: every task of the Kubernetes base's
// cluster spec (deploy/k8s/base/cluster-spec.yaml, read with PyYAML) gets its
// own network namespace, joined to the others by a bridge, with the spec's
// DNS names resolved to the namespaces' addresses through /etc/netns/NS/hosts
// (ip netns exec mounts it over /etc/hosts). Each process is started by
// deploy/bin/plexus-launch from that spec, as in the containers, and listens
// on its spec port on its own address. The golden workload (golden_worker)
// then trains to the bit-exact golden values; a second test adds a link
// delay with tc netem and the job still completes.
//
// Needs root and `ip netns`; skips, saying why, where namespaces cannot be
// made, and the delay test skips where netem is missing from the kernel.
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/process.h"
#include "coordinator/membership/cluster_spec.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/integration/golden.h"
#include "tests/util/test_env.h"

#ifndef PLEXUS_SOURCE_DIR
#error "PLEXUS_SOURCE_DIR must name the repository root"
#endif

namespace plexus {
namespace {

namespace m = ::plexus::coordinator::membership;
using ::plexus::testing::BinDir;
using ::plexus::testing::GoldenValues;
using ::plexus::testing::kGoldenElements;
using ::plexus::testing::TempDir;

constexpr char kVariable[] = "golden";
constexpr int kSteps = 40;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs argv to completion (bounded); its exit code, its output in *out.
int RunCommand(const std::vector<std::string>& argv, const std::string& log,
               std::string* out = nullptr) {
  SubprocessOptions so;
  so.argv = argv;
  so.log_file = log;
  std::filesystem::remove(log);
  auto p = Subprocess::Start(so);
  if (!p.ok()) return -1;
  absl::StatusOr<int> code = (*p)->Wait(absl::Seconds(30));
  if (out != nullptr) *out = ReadFile(log);
  return code.ok() ? *code : -1;
}

// The first of /usr/sbin, /sbin, /usr/bin, /bin that holds `tool`; empty if
// none does (iproute2's tools live in different ones across distributions).
std::string FindTool(const std::string& tool) {
  for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
    if (access((dir + tool).c_str(), X_OK) == 0) return dir + tool;
  }
  return "";
}

// One task of the spec on its own host (namespace).
struct Host {
  m::Role role;
  int index;
  std::string spec_address;  // as in the spec: "plexus-ps-0.plexus-ps:2222"
  std::string ns;
  std::string ip;
  std::string address() const {  // ip:port
    return ip + spec_address.substr(spec_address.rfind(':'));
  }
  std::unique_ptr<Subprocess> process;
  std::string log;
};

class MultiHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    // One rehearsal at a time on this machine (ctest -j runs both tests at
    // once): their subnets and interface names must not meet.
    lock_fd_ = open("/tmp/plexus-multihost-test.lock", O_CREAT | O_RDWR, 0644);
    ASSERT_GE(lock_fd_, 0) << "cannot open the rehearsal lock file";
    ASSERT_EQ(flock(lock_fd_, LOCK_EX), 0);
    ip_ = FindTool("ip");
    tc_ = FindTool("tc");
    if (ip_.empty()) GTEST_SKIP() << "no `ip` (iproute2) here";
    tag_ = absl::StrCat(getpid() % 100000);
    // 10.213.X.0/24 and names from the pid: a run never meets what a
    // crashed earlier run left behind.
    subnet_ = absl::StrCat("10.213.", getpid() % 250, ".");
    std::string probe = "plx" + tag_ + "-probe";
    if (RunCommand({ip_, "netns", "add", probe}, dir_.Sub("probe.log")) != 0) {
      GTEST_SKIP() << "cannot create network namespaces here: "
                   << ReadFile(dir_.Sub("probe.log"));
    }
    RunCommand({ip_, "netns", "del", probe}, dir_.Sub("probe.log"));
    ReadSpec();
    if (HasFatalFailure()) return;
    MakeNetwork();
  }

  void TearDown() override {
    for (Host& h : hosts_) h.process.reset();  // SIGKILL, reaped
    for (Host& h : hosts_) {
      RunCommand({ip_, "netns", "del", h.ns}, dir_.Sub("teardown.log"));
      std::error_code ec;
      std::filesystem::remove_all("/etc/netns/" + h.ns, ec);
    }
    if (!bridge_.empty()) {
      RunCommand({ip_, "link", "del", bridge_}, dir_.Sub("teardown.log"));
    }
    if (lock_fd_ >= 0) close(lock_fd_);  // releases the lock
  }

  // The cluster spec of the Kubernetes base, through PyYAML, parsed the way
  // the coordinator parses it.
  void ReadSpec() {
    spec_file_ = dir_.Sub("cluster_spec.json");
    std::string out;
    ASSERT_EQ(RunCommand({"/usr/bin/python3", "-c",
                          "import sys, yaml\n"
                          "doc = yaml.safe_load(open(sys.argv[1]))\n"
                          "open(sys.argv[2], 'w').write(doc['data']"
                          "['cluster_spec.json'])\n",
                          std::string(PLEXUS_SOURCE_DIR) +
                              "/deploy/k8s/base/cluster-spec.yaml",
                          spec_file_},
                         dir_.Sub("yaml.log"), &out),
              0)
        << out;
    absl::StatusOr<m::TfConfig> spec = m::ReadClusterSpecFile(spec_file_);
    ASSERT_TRUE(spec.ok()) << spec.status();
    ASSERT_EQ(spec->cluster.chief.size(), 1u);
    ASSERT_GE(spec->cluster.ps.size(), 1u);
    ASSERT_GE(spec->cluster.worker.size(), 1u);
    int n = 0;
    for (m::Role role : m::kAllRoles) {
      const std::vector<std::string>& tasks = spec->cluster.tasks(role);
      for (size_t i = 0; i < tasks.size(); ++i) {
        Host h;
        h.role = role;
        h.index = static_cast<int>(i);
        h.spec_address = tasks[i];
        h.ns = absl::StrCat("plx", tag_, "-", m::RoleName(role), i);
        h.ip = absl::StrCat(subnet_, 10 + n++);
        hosts_.push_back(std::move(h));
      }
    }
  }

  void Sh(const std::vector<std::string>& argv) {
    std::string out;
    ASSERT_EQ(RunCommand(argv, dir_.Sub("net.log"), &out), 0)
        << absl::StrJoin(argv, " ") << ": " << out;
  }

  // A bridge in this namespace (address .1: the test reaches every host),
  // one veth per host, /etc/netns/NS/hosts with every spec name.
  void MakeNetwork() {
    const std::string& ip = ip_;
    bridge_ = "plxbr" + tag_;
    Sh({ip, "link", "add", bridge_, "type", "bridge"});
    Sh({ip, "addr", "add", subnet_ + "1/24", "dev", bridge_});
    Sh({ip, "link", "set", bridge_, "up"});
    std::string hosts_file = "127.0.0.1 localhost\n";
    for (const Host& h : hosts_) {
      hosts_file += absl::StrCat(
          h.ip, " ", h.spec_address.substr(0, h.spec_address.rfind(':')), "\n");
    }
    for (size_t i = 0; i < hosts_.size(); ++i) {
      const Host& h = hosts_[i];
      std::string outer = absl::StrCat("plxv", tag_, "h", i);
      std::string inner = absl::StrCat("plxi", tag_, "h", i);
      Sh({ip, "netns", "add", h.ns});
      Sh({ip, "link", "add", outer, "type", "veth", "peer", "name", inner});
      Sh({ip, "link", "set", outer, "master", bridge_, "up"});
      Sh({ip, "link", "set", inner, "netns", h.ns});
      Sh({ip, "-n", h.ns, "link", "set", inner, "name", "eth0"});
      Sh({ip, "-n", h.ns, "addr", "add", h.ip + "/24", "dev", "eth0"});
      Sh({ip, "-n", h.ns, "link", "set", "eth0", "up"});
      Sh({ip, "-n", h.ns, "link", "set", "lo", "up"});
      std::filesystem::create_directories("/etc/netns/" + h.ns);
      std::ofstream("/etc/netns/" + h.ns + "/hosts") << hosts_file;
    }
  }

  // Starts every host's process through plexus-launch, daemons first, and
  // waits until they serve.
  void StartAll() {
    for (m::Role role : {m::Role::kChief, m::Role::kPs}) {
      for (Host& h : hosts_) {
        if (h.role == role) Start(h);
      }
    }
    for (Host& h : hosts_) {
      if (h.role == m::Role::kWorker) continue;
      absl::StatusOr<int> port = WaitForPortFile(
          dir_.Sub(h.ns + ".port"), absl::Seconds(30), h.process.get());
      ASSERT_TRUE(port.ok()) << h.ns << ": " << port.status() << "\n"
                             << ReadFile(h.log);
      EXPECT_EQ(absl::StrCat(":", *port),
                h.spec_address.substr(h.spec_address.rfind(':')));
      // The probes' endpoint answers from another host, as the kubelet's.
      httplib::Client http(h.ip, 8080);
      http.set_connection_timeout(5);
      httplib::Result r = http.Get("/healthz");
      ASSERT_TRUE(r) << h.ns << ": no /healthz answer";
      EXPECT_EQ(r->status, 200) << h.ns;
    }
    for (Host& h : hosts_) {
      if (h.role == m::Role::kWorker) Start(h);
    }
  }

  void Start(Host& h) {
    h.log = dir_.Sub(h.ns + ".log");
    SubprocessOptions so;
    so.argv = {ip_, "netns", "exec", h.ns,
               std::string(PLEXUS_SOURCE_DIR) + "/deploy/bin/plexus-launch"};
    if (h.role == m::Role::kChief) {
      for (const char* f :
           {"--heartbeat_interval_ms=100", "--suspect_timeout_ms=1000",
            "--dead_timeout_ms=3000", "--no_worker_timeout_ms=20000"}) {
        so.argv.push_back(f);
      }
    }
    if (h.role != m::Role::kWorker) {
      so.argv.push_back("--admin_port=8080");
      so.argv.push_back("--shutdown_grace_s=2");
      so.argv.push_back("--port_file=" + dir_.Sub(h.ns + ".port"));
    }
    so.env = {{"PLEXUS_CLUSTER_SPEC", spec_file_},
              {"PLEXUS_TASK_TYPE", std::string(m::RoleName(h.role))},
              {"PLEXUS_TASK_INDEX", absl::StrCat(h.index)},
              {"PLEXUS_BIN_DIR", BinDir()},
              {"PLEXUS_DATA_DIR", dir_.Sub("data-" + h.ns)},
              {"PLEXUS_WORKER", BinDir() + "/golden_worker"}};
    so.log_file = h.log;
    auto p = Subprocess::Start(so);
    ASSERT_TRUE(p.ok()) << p.status();
    h.process = std::move(*p);
  }

  std::vector<std::string> Addresses(m::Role role) const {
    std::vector<std::string> out;
    for (const Host& h : hosts_) {
      if (h.role == role) out.push_back(h.address());
    }
    return out;
  }

  // Creates the golden variable, submits kSteps golden steps, waits for the
  // job and checks the variable bit for bit.
  void TrainGolden() {
    worker::PsClientOptions po;
    po.shards = Addresses(m::Role::kPs);
    auto ps = worker::PsClient::Connect(po);
    ASSERT_TRUE(ps.ok()) << ps.status();
    v1::VariableConfig v;
    v.set_name(kVariable);
    v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
    v.mutable_spec()->add_shape(kGoldenElements);
    v.mutable_spec()->add_shape(1);
    v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1.0);
    v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
    ASSERT_TRUE((*ps)->CreateVariable(v).ok());

    auto stub = v1::Coordinator::NewStub(
        grpc::CreateChannel(Addresses(m::Role::kChief).front(),
                            grpc::InsecureChannelCredentials()));
    v1::SubmitJobRequest req;
    req.set_job_id("golden-job");
    req.mutable_steps()->set_function_name("golden");
    req.mutable_steps()->set_num_steps(kSteps);
    v1::SubmitJobResponse submitted;
    grpc::ClientContext sctx;
    sctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    absl::Status st = FromGrpcStatus(stub->SubmitJob(&sctx, req, &submitted));
    ASSERT_TRUE(st.ok()) << st;

    const absl::Duration timeout = absl::Seconds(90);
    v1::JoinRequest join;
    join.set_job_id("golden-job");
    join.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
    v1::JoinResponse done;
    grpc::ClientContext jctx;
    jctx.set_deadline(
        absl::ToChronoTime(absl::Now() + timeout + absl::Seconds(5)));
    st = FromGrpcStatus(stub->Join(&jctx, join, &done));
    ASSERT_TRUE(st.ok()) << st << "\n" << Logs();
    EXPECT_EQ(done.status().state(), v1::JOB_STATE_SUCCEEDED) << Logs();
    EXPECT_EQ(done.status().closures_succeeded(), kSteps);

    std::vector<float> w(kGoldenElements);
    ASSERT_TRUE((*ps)->PullDense(kVariable, absl::MakeSpan(w)).ok());
    std::vector<float> golden = GoldenValues(kSteps, kGoldenElements);
    EXPECT_EQ(0, std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)))
        << "element 0: " << w[0] << " vs golden " << golden[0];

    // Every worker ran steps: the work really crossed the hosts.
    for (const Host& h : hosts_) {
      if (h.role != m::Role::kWorker) continue;
      EXPECT_NE(ReadFile(h.log).find(" pushed"), std::string::npos)
          << h.ns << " ran no step:\n"
          << ReadFile(h.log);
    }
  }

  // SIGTERM to everyone: workers exit 143, daemons drain and exit 0.
  void StopAll() {
    for (m::Role role : {m::Role::kWorker, m::Role::kPs, m::Role::kChief}) {
      for (Host& h : hosts_) {
        if (h.role != role) continue;
        ASSERT_TRUE(h.process->Signal(SIGTERM).ok());
        absl::StatusOr<int> code = h.process->Wait(absl::Seconds(20));
        ASSERT_TRUE(code.ok()) << h.ns << ": " << code.status();
        EXPECT_EQ(*code, role == m::Role::kWorker ? 143 : 0) << h.ns;
      }
    }
  }

  std::string Logs() const {
    std::string out;
    for (const Host& h : hosts_) {
      absl::StrAppend(&out, "---- ", h.ns, "\n", ReadFile(h.log));
    }
    return out;
  }

  TempDir dir_;
  int lock_fd_ = -1;
  std::string ip_;
  std::string tc_;
  std::string tag_;
  std::string subnet_;
  std::string bridge_;
  std::string spec_file_;
  std::vector<Host> hosts_;
};

TEST_F(MultiHostTest, GoldenJobAcrossHosts) {
  StartAll();
  ASSERT_FALSE(HasFatalFailure());
  TrainGolden();
  ASSERT_FALSE(HasFatalFailure());
  StopAll();
}

TEST_F(MultiHostTest, GoldenJobWithLinkDelay) {
  // 20 ms each way on every host's link: a 40 ms round trip between hosts.
  if (tc_.empty()) GTEST_SKIP() << "no `tc` (iproute2) here";
  for (const Host& h : hosts_) {
    std::string out;
    if (RunCommand({ip_, "netns", "exec", h.ns, tc_, "qdisc", "add", "dev",
                    "eth0", "root", "netem", "delay", "20ms"},
                   dir_.Sub("tc.log"), &out) != 0) {
      GTEST_SKIP() << "tc netem is not available here (" << out
                   << "); the delayed-link rehearsal needs the sch_netem "
                      "kernel module";
    }
  }
  StartAll();
  ASSERT_FALSE(HasFatalFailure());
  TrainGolden();
  ASSERT_FALSE(HasFatalFailure());
  StopAll();
}

}  // namespace
}  // namespace plexus
