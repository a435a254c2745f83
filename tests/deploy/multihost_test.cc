// Multi-host rehearsals on one machine: every host is a network namespace,
// joined to the others by a bridge, with the cluster's DNS names resolved to
// the namespaces' addresses through /etc/netns/NS/hosts (ip netns exec mounts
// it over /etc/hosts). Processes are started by deploy/bin/plexus-launch, as
// in the containers, and listen on their spec ports on their own addresses.
//
//   * GoldenJobAcrossHosts: one host per task of the Kubernetes base's spec
//     (deploy/k8s/base/cluster-spec.yaml, read with PyYAML); the golden
//     workload (golden_worker) trains to the bit-exact golden values.
//   * GoldenJobWithLinkDelay: the same with a tc netem delay on every link.
//   * TfJobChiefEndsWithTheJob: hosts and TF_CONFIG as Kubeflow gives
//     deploy/kubeflow/tfjob.yaml's pods; the chief runs the driver.
//   * SlurmScriptRunsTheGoldenJob: deploy/slurm/plexus.sbatch on a fake
//     allocation whose nodes are namespaces.
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

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
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
  }

  void TearDown() override {
    batch_.reset();
    for (Host& h : hosts_) h.process.reset();  // SIGKILL, reaped
    for (Host& h : hosts_) {
      // Whatever still runs inside (started by a script under test).
      std::string pids;
      RunCommand({ip_, "netns", "pids", h.ns}, dir_.Sub("pids.log"), &pids);
      for (absl::string_view pid : absl::StrSplit(pids, '\n')) {
        int n = 0;
        if (absl::SimpleAtoi(pid, &n) && n > 0) kill(n, SIGKILL);
      }
      RunCommand({ip_, "netns", "del", h.ns}, dir_.Sub("teardown.log"));
      std::error_code ec;
      std::filesystem::remove_all("/etc/netns/" + h.ns, ec);
    }
    if (!bridge_.empty()) {
      RunCommand({ip_, "link", "del", bridge_}, dir_.Sub("teardown.log"));
    }
    if (lock_fd_ >= 0) close(lock_fd_);  // releases the lock
  }

  // One host per task of the Kubernetes base's spec, and the network.
  void PrepareSpecHosts() {
    ReadSpec();
    if (HasFatalFailure()) return;
    MakeNetwork();
  }

  // The cluster spec of the Kubernetes base, through PyYAML, parsed the way
  // the coordinator parses it.
  void ReadSpec() {
    FromYaml(
        "/deploy/k8s/base/cluster-spec.yaml",
        "doc = yaml.safe_load(open(sys.argv[1]))\n"
        "open(sys.argv[2], 'w').write(doc['data']['cluster_spec.json'])\n");
  }

  // The cluster that Kubeflow's training-operator puts in the TF_CONFIG of
  // deploy/kubeflow/tfjob.yaml's pods: <job>-<type>-<i>.<namespace>.svc on
  // the tfjob-port.
  void ReadTfJob() {
    FromYaml("/deploy/kubeflow/tfjob.yaml",
             "docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]\n"
             "job = next(d for d in docs if d['kind'] == 'TFJob')\n"
             "cluster = {}\n"
             "for rtype, r in job['spec']['tfReplicaSpecs'].items():\n"
             "    c = r['template']['spec']['containers'][0]\n"
             "    port = next(p['containerPort'] for p in c['ports']\n"
             "                if p['name'] == 'tfjob-port')\n"
             "    t = rtype.lower()\n"
             "    cluster[t] = ['%s-%s-%d.default.svc:%d' % (\n"
             "        job['metadata']['name'], t, i, port)\n"
             "        for i in range(r['replicas'])]\n"
             "open(sys.argv[2], 'w').write(json.dumps(cluster))\n");
    tf_cluster_ = ReadFile(spec_file_);
  }

  // Runs `python` (PyYAML; sys.argv[1] the manifest under the repository,
  // sys.argv[2] where to write the cluster JSON), then one host per task.
  void FromYaml(const std::string& manifest, const std::string& python) {
    spec_file_ = dir_.Sub("cluster_spec.json");
    std::string out;
    ASSERT_EQ(
        RunCommand(
            {"/usr/bin/python3", "-c", "import json, sys, yaml\n" + python,
             std::string(PLEXUS_SOURCE_DIR) + manifest, spec_file_},
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
    so.env = {{"PLEXUS_BIN_DIR", BinDir()},
              {"PLEXUS_STATE_DIR", dir_.Sub("data-" + h.ns)},
              {"PLEXUS_WORKER", BinDir() + "/golden_worker"}};
    if (tf_cluster_.empty()) {
      so.env.push_back({"PLEXUS_CLUSTER_SPEC", spec_file_});
      so.env.push_back({"PLEXUS_TASK_TYPE", std::string(m::RoleName(h.role))});
      so.env.push_back({"PLEXUS_TASK_INDEX", absl::StrCat(h.index)});
    } else {
      // Only TF_CONFIG, as TFJob gives it.
      so.env.push_back(
          {"TF_CONFIG",
           absl::StrCat("{\"cluster\": ", tf_cluster_,
                        ", \"task\": {\"type\": \"", m::RoleName(h.role),
                        "\", \"index\": ", h.index,
                        "}, \"environment\": \"cloud\"}")});
    }
    if (h.role == m::Role::kChief) {
      so.env.insert(so.env.end(), chief_env_.begin(), chief_env_.end());
    }
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
    // Every worker registered before the job starts, so that each can be
    // seen to run steps (one alone runs 40 golden steps in milliseconds).
    const size_t num_workers = Addresses(m::Role::kWorker).size();
    size_t registered = 0;
    for (absl::Time deadline = absl::Now() + absl::Seconds(60);
         registered < num_workers && absl::Now() < deadline;) {
      v1::ListProcessesRequest lreq;
      lreq.set_role(v1::ROLE_WORKER);
      v1::ListProcessesResponse lresp;
      grpc::ClientContext lctx;
      lctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
      if (stub->ListProcesses(&lctx, lreq, &lresp).ok()) {
        // Spec entries nobody registered yet have incarnation 0.
        registered = 0;
        for (const v1::ProcessInfo& p : lresp.processes()) {
          if (p.incarnation() != 0) ++registered;
        }
      }
      if (registered < num_workers) {
        absl::SleepFor(absl::Milliseconds(20));  // polling interval
      }
    }
    ASSERT_EQ(registered, num_workers) << Logs();
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
  std::unique_ptr<Subprocess> batch_;  // the Slurm test's batch script
  int lock_fd_ = -1;
  std::string ip_;
  std::string tc_;
  std::string tag_;
  std::string subnet_;
  std::string bridge_;
  std::string spec_file_;
  // The TFJob rehearsal: the cluster JSON for TF_CONFIG (else empty), and
  // what the chief's environment adds.
  std::string tf_cluster_;
  std::vector<std::pair<std::string, std::string>> chief_env_;
  std::vector<Host> hosts_;
};

TEST_F(MultiHostTest, GoldenJobAcrossHosts) {
  PrepareSpecHosts();
  ASSERT_FALSE(HasFatalFailure());
  StartAll();
  ASSERT_FALSE(HasFatalFailure());
  TrainGolden();
  ASSERT_FALSE(HasFatalFailure());
  StopAll();
}

TEST_F(MultiHostTest, GoldenJobWithLinkDelay) {
  PrepareSpecHosts();
  ASSERT_FALSE(HasFatalFailure());
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

// The Kubeflow TFJob route: each process gets only the TF_CONFIG the
// training-operator would give deploy/kubeflow/tfjob.yaml's pods (names
// resolved to the namespaces), the chief runs golden_driver beside the
// coordinator, and the chief's exit code, which decides the TFJob, is 0
// once the job is golden; the coordinator has drained by then.
TEST_F(MultiHostTest, TfJobChiefEndsWithTheJob) {
  ReadTfJob();
  ASSERT_FALSE(HasFatalFailure());
  MakeNetwork();
  ASSERT_FALSE(HasFatalFailure());
  chief_env_ = {{"PLEXUS_DRIVER", BinDir() + "/golden_driver --steps=40"},
                {"PLEXUS_WAIT_S", "60"}};
  for (Host& h : hosts_) Start(h);
  ASSERT_FALSE(HasFatalFailure());
  Host& chief = hosts_.front();
  ASSERT_EQ(chief.role, m::Role::kChief);
  absl::StatusOr<int> code = chief.process->Wait(absl::Seconds(120));
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << Logs();
  EXPECT_EQ(*code, 0) << Logs();
  std::string log = ReadFile(chief.log);
  EXPECT_NE(log.find("golden_driver: 40 steps applied exactly once"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("plexus-coordinator: stopped"), std::string::npos) << log;
  // cleanPodPolicy then stops the rest, all at once: shards drain (0),
  // workers hand back (143).
  for (Host& h : hosts_) {
    if (h.role != m::Role::kChief) {
      ASSERT_TRUE(h.process->Signal(SIGTERM).ok());
    }
  }
  for (Host& h : hosts_) {
    if (h.role == m::Role::kChief) continue;
    absl::StatusOr<int> c = h.process->Wait(absl::Seconds(20));
    ASSERT_TRUE(c.ok()) << h.ns << ": " << c.status();
    EXPECT_EQ(*c, h.role == m::Role::kWorker ? 143 : 0) << h.ns;
  }
}

// The Slurm route end to end: deploy/slurm/plexus.sbatch on a fake
// three-node allocation whose nodes are namespaces named like the hosts. A
// stand-in srun runs task i of a step in the namespace of line i of
// SLURM_HOSTFILE with SLURM_PROCID=i, as Slurm's arbitrary distribution does;
// scontrol expands the node list. The script writes the spec, starts the
// coordinator, 2 shards and 3 workers, runs golden_driver as the driver
// (it checks the result bit for bit), then stops everything: its exit code
// is the driver's.
TEST_F(MultiHostTest, SlurmScriptRunsTheGoldenJob) {
  for (int i = 0; i < 3; ++i) {
    Host node;
    node.ns = absl::StrCat("plx", tag_, "-node", i);
    node.ip = absl::StrCat(subnet_, 10 + i);
    node.spec_address = node.ns + ":1";  // the hosts file names the node
    hosts_.push_back(std::move(node));
  }
  MakeNetwork();
  ASSERT_FALSE(HasFatalFailure());

  const std::string fake = dir_.Sub("fakebin");
  const std::string home = dir_.Sub("home");
  std::filesystem::create_directories(fake);
  std::filesystem::create_directories(home + "/bin");
  std::ofstream(fake + "/scontrol")
      << "#!/bin/sh\n[ \"$1 $2\" = \"show hostnames\" ] || exit 2\n"
         "echo \"$3\" | tr , '\\n'\n";
  std::ofstream(fake + "/srun")
      << R"(#!/bin/bash
# srun for tests: task i runs in the namespace named by line i of
# SLURM_HOSTFILE, with SLURM_PROCID=i and the --export'ed variables.
set -u
ntasks=1 output=/dev/null exports=ALL
while [ $# -gt 0 ]; do
  case "$1" in
    --ntasks=*) ntasks=${1#*=} ;;
    --output=*) output=${1#*=} ;;
    --export=*) exports=${1#*=} ;;
    --*) ;;
    *) break ;;
  esac
  shift
done
mapfile -t hosts <"$SLURM_HOSTFILE"
IFS=, read -r -a kv <<<"$exports"
envs=()
for e in "${kv[@]}"; do [ "$e" = ALL ] || envs+=("$e"); done
pids=()
for ((i = 0; i < ntasks; i++)); do
  )" << ip_
      << R"( netns exec "${hosts[$i]}" env SLURM_PROCID=$i "${envs[@]}" "$@" \
    >>"${output//%t/$i}" 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
code=0
for p in "${pids[@]}"; do
  while :; do
    wait "$p"
    rc=$?
    kill -0 "$p" 2>/dev/null || break
  done
  [ "$rc" -eq 0 ] || code=$rc
done
exit "$code"
)";
  std::filesystem::permissions(fake + "/scontrol",
                               std::filesystem::perms::owner_all);
  std::filesystem::permissions(fake + "/srun",
                               std::filesystem::perms::owner_all);
  std::filesystem::create_symlink(
      std::string(PLEXUS_SOURCE_DIR) + "/deploy/bin/plexus-launch",
      home + "/bin/plexus-launch");
  std::filesystem::create_symlink(BinDir() + "/plexus", home + "/bin/plexus");

  std::vector<std::string> nodes;
  for (const Host& h : hosts_) nodes.push_back(h.ns);
  const std::string job_dir = dir_.Sub("job");
  SubprocessOptions so;
  so.argv = {ip_,
             "netns",
             "exec",
             hosts_[0].ns,
             "/bin/bash",
             std::string(PLEXUS_SOURCE_DIR) + "/deploy/slurm/plexus.sbatch"};
  const char* path = std::getenv("PATH");
  so.env = {{"PATH", fake + ":" + (path ? path : "/usr/bin:/bin")},
            {"SLURM_JOB_NODELIST", absl::StrJoin(nodes, ",")},
            {"SLURM_JOB_ID", "1"},
            {"PLEXUS_PS", "2"},
            {"PLEXUS_WORKERS", "3"},
            {"PLEXUS_HOME", home},
            {"PLEXUS_BIN_DIR", BinDir()},
            {"PLEXUS_JOB_DIR", job_dir},
            {"PLEXUS_WAIT_S", "60"},
            {"PLEXUS_WORKER", BinDir() + "/golden_worker"},
            {"PLEXUS_DRIVER", BinDir() + "/golden_driver --steps=40"}};
  so.log_file = dir_.Sub("sbatch.log");
  auto batch = Subprocess::Start(so);
  ASSERT_TRUE(batch.ok()) << batch.status();
  batch_ = std::move(*batch);
  absl::StatusOr<int> code = batch_->Wait(absl::Seconds(150));
  std::string logs = ReadFile(so.log_file);
  for (const char* role :
       {"chief-0", "ps-0", "ps-1", "worker-0", "worker-1", "worker-2"}) {
    absl::StrAppend(&logs, "---- ", role, "\n",
                    ReadFile(job_dir + "/" + role + ".log"));
  }
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << logs;
  EXPECT_EQ(*code, 0) << logs;
  // Exactly one driver ran: the batch script's, not one in the chief too.
  const std::string done = "golden_driver: 40 steps applied exactly once";
  size_t at = logs.find(done);
  EXPECT_NE(at, std::string::npos) << logs;
  if (at != std::string::npos) {
    EXPECT_EQ(logs.find(done, at + 1), std::string::npos) << logs;
  }
  // Shard 1 and worker 1 ran on the second node, as the spec says.
  EXPECT_NE(ReadFile(job_dir + "/cluster_spec.json")
                .find("\"" + hosts_[1].ns + ":2224\""),
            std::string::npos);
  // The script stopped every process it started.
  for (const Host& h : hosts_) {
    std::string pids;
    RunCommand({ip_, "netns", "pids", h.ns}, dir_.Sub("pids.log"), &pids);
    EXPECT_EQ(pids, "") << h.ns << " still runs processes";
  }
}

}  // namespace
}  // namespace plexus
