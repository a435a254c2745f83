// Multi-host rehearsals on one machine: every host is a network namespace,
// joined to the others by a bridge, with the cluster's DNS names resolved to
// the namespaces' addresses through /etc/netns/NS/hosts (ip netns exec mounts
// it over /etc/hosts). Processes are started by deploy/bin/plexus-launch, as
// in the containers, and listen on their spec ports on their own addresses.
//
//   * GoldenJobAcrossHosts: one host per task of the Kubernetes base's spec
//     (deploy/k8s/base/cluster-spec.yaml, read with PyYAML); the golden
//     workload (golden_worker) trains to the bit-exact golden values.
//   * GoldenJobWithLinkDelay: the same with 20 ms more each way on every
//     link between hosts: `tc netem` on each host's interface where the
//     kernel has sch_netem, else, in user space, a delaying TCP relay
//     (delay_relay) on a host of its own, to which iptables DNAT rules in
//     every host send the connections for the other hosts' spec addresses.
//     Either way processes and spec are unchanged. A gRPC health check
//     timed from a worker's host (health_rtt) shows the delay is there;
//     the test's output names the mechanism used.
//   * TfJobChiefEndsWithTheJob: hosts and TF_CONFIG as Kubeflow gives
//     deploy/kubeflow/tfjob.yaml's pods; the chief runs the driver.
//   * SlurmScriptRunsTheGoldenJob: deploy/slurm/plexus.sbatch on a fake
//     allocation whose nodes are namespaces.
//
// Needs root and `ip netns`; skips, saying why, where namespaces cannot be
// made; the delay test skips only where it has neither netem nor iptables.
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
#include <iostream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
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
using ::plexus::testing::GoldenVariableConfig;
using ::plexus::testing::kGoldenElements;
using ::plexus::testing::ReadFile;
using ::plexus::testing::TempDir;

constexpr char kVariable[] = "golden";
constexpr int kSteps = 40;

// Runs argv to completion (bounded); its exit code, its output in *out.
int RunCommand(const std::vector<std::string>& argv, const std::string& log,
               std::string* out = nullptr) {
  return ::plexus::testing::RunProgram(argv, log, absl::Seconds(30), out);
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
    BinDir();  // aborts without PLEXUS_BIN_DIR: before any namespace exists
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
    relay_.reset();
    for (Host& h : hosts_) h.process.reset();  // SIGKILL, reaped
    std::vector<std::string> namespaces;
    for (const Host& h : hosts_) namespaces.push_back(h.ns);
    if (!relay_ns_.empty()) namespaces.push_back(relay_ns_);
    for (const std::string& ns : namespaces) {
      // Whatever still runs inside (started by a script under test).
      std::string pids;
      RunCommand({ip_, "netns", "pids", ns}, dir_.Sub("pids.log"), &pids);
      for (absl::string_view pid : absl::StrSplit(pids, '\n')) {
        int n = 0;
        if (absl::SimpleAtoi(pid, &n) && n > 0) kill(n, SIGKILL);
      }
      RunCommand({ip_, "netns", "del", ns}, dir_.Sub("teardown.log"));
      std::error_code ec;
      std::filesystem::remove_all("/etc/netns/" + ns, ec);
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
      AttachHost(hosts_[i].ns, hosts_[i].ip, absl::StrCat("h", i));
      if (HasFatalFailure()) return;
      std::filesystem::create_directories("/etc/netns/" + hosts_[i].ns);
      std::ofstream("/etc/netns/" + hosts_[i].ns + "/hosts") << hosts_file;
    }
  }

  // A namespace `ns` with `address` on eth0, a veth joined to the bridge.
  void AttachHost(const std::string& ns, const std::string& address,
                  const std::string& suffix) {
    const std::string& ip = ip_;
    std::string outer = absl::StrCat("plxv", tag_, suffix);
    std::string inner = absl::StrCat("plxi", tag_, suffix);
    Sh({ip, "netns", "add", ns});
    Sh({ip, "link", "add", outer, "type", "veth", "peer", "name", inner});
    Sh({ip, "link", "set", outer, "master", bridge_, "up"});
    Sh({ip, "link", "set", inner, "netns", ns});
    Sh({ip, "-n", ns, "link", "set", inner, "name", "eth0"});
    Sh({ip, "-n", ns, "addr", "add", address + "/24", "dev", "eth0"});
    Sh({ip, "-n", ns, "link", "set", "eth0", "up"});
    Sh({ip, "-n", ns, "link", "set", "lo", "up"});
  }

  // Adds `delay` each way to every link between the spec hosts, without
  // touching processes or spec: `tc netem` on every host's eth0 where the
  // kernel has sch_netem (a packet leaving a host waits `delay`), else the
  // user-space relay (below). Sets mechanism_ to what was used; skips where
  // neither can be had.
  void AddLinkDelay(absl::Duration delay) {
    const std::string ms = absl::StrCat(absl::ToInt64Milliseconds(delay));
    std::string netem_out = "no `tc` (iproute2) here";
    if (!tc_.empty() &&
        RunCommand({ip_, "netns", "exec", hosts_[0].ns, tc_, "qdisc", "add",
                    "dev", "eth0", "root", "netem", "delay", ms + "ms"},
                   dir_.Sub("tc.log"), &netem_out) == 0) {
      for (size_t i = 1; i < hosts_.size(); ++i) {
        Sh({ip_, "netns", "exec", hosts_[i].ns, tc_, "qdisc", "add", "dev",
            "eth0", "root", "netem", "delay", ms + "ms"});
        if (HasFatalFailure()) return;
      }
      mechanism_ = "tc netem: " + ms + " ms on every host's eth0";
      return;
    }
    netem_out = std::string(absl::StripAsciiWhitespace(netem_out));
    AddRelayDelay(delay);
    if (IsSkipped()) {
      GTEST_SKIP() << "and tc netem is not available either (" << netem_out
                   << ")";
    }
    if (HasFatalFailure()) return;
    mechanism_ =
        absl::StrCat("user-space relay (tc netem unavailable: ", netem_out,
                     "): ", ms, " ms each way through delay_relay on ",
                     relay_ip_, ", iptables DNAT in every host");
  }

  // The user-space delay: delay_relay on a host of its own (relay_ns_,
  // relay_ip_), one listening port per daemon (chief, ps) forwarding to the
  // daemon's real address, and in every spec host a nat OUTPUT rule per
  // other host's daemon sending its connections to that port. Each chunk is
  // held `delay` in each direction: a round trip between hosts gains
  // 2 * delay, as with netem on both ends. (A daemon's connections seem to
  // come from the relay's address; nothing in Plexus looks at peers'
  // addresses. The relay accepts before it reaches the daemon, so a bare
  // TCP connect, as plexus-launch's wait makes, succeeds while the daemon is
  // down: the daemons here serve before the workers start.)
  void AddRelayDelay(absl::Duration delay) {
    const std::string iptables = FindTool("iptables");
    if (iptables.empty()) GTEST_SKIP() << "no `iptables` here for the relay";
    relay_ns_ = absl::StrCat("plx", tag_, "-relay");
    relay_ip_ = subnet_ + "2";
    AttachHost(relay_ns_, relay_ip_, "r");
    if (HasFatalFailure()) return;
    std::vector<std::string> argv = {ip_, "netns", "exec", relay_ns_,
                                     BinDir() + "/delay_relay"};
    argv.push_back(
        absl::StrCat("--delay_ms=", absl::ToInt64Milliseconds(delay)));
    argv.push_back("--ready_file=" + dir_.Sub("relay.ready"));
    std::map<std::string, int> relay_port;  // daemon address -> relay port
    for (const Host& t : hosts_) {
      if (t.role == m::Role::kWorker) continue;  // workers serve nothing
      int port = 20000 + static_cast<int>(relay_port.size());
      relay_port[t.address()] = port;
      argv.push_back(absl::StrCat(port, "=", t.address()));
    }
    SubprocessOptions so;
    so.argv = argv;
    so.log_file = relay_log_ = dir_.Sub("relay.log");
    auto p = Subprocess::Start(so);
    ASSERT_TRUE(p.ok()) << p.status();
    relay_ = std::move(*p);
    absl::StatusOr<int> ready = WaitForPortFile(
        dir_.Sub("relay.ready"), absl::Seconds(10), relay_.get());
    ASSERT_TRUE(ready.ok()) << ready.status() << "\n" << ReadFile(relay_log_);
    bool first = true;
    for (const Host& h : hosts_) {
      for (const Host& t : hosts_) {
        if (&t == &h || t.role == m::Role::kWorker) continue;
        std::string port = t.address().substr(t.address().rfind(':') + 1);
        std::vector<std::string> rule = {ip_,  "netns",  "exec",
                                         h.ns, iptables, "-w"};
        for (absl::string_view a : absl::StrSplit(
                 absl::StrCat("-t nat -A OUTPUT -p tcp -d ", t.ip, " --dport ",
                              port, " -j DNAT --to-destination ", relay_ip_,
                              ":", relay_port[t.address()]),
                 ' ')) {
          rule.emplace_back(a);
        }
        if (first) {
          // Whether this kernel does NAT in a namespace at all.
          std::string out;
          if (RunCommand(rule, dir_.Sub("iptables.log"), &out) != 0) {
            GTEST_SKIP() << "iptables DNAT does not work here ("
                         << absl::StripAsciiWhitespace(out) << ")";
          }
          first = false;
          continue;
        }
        Sh(rule);
        if (HasFatalFailure()) return;
      }
    }
  }

  // Times gRPC health checks of every daemon from the first worker's host,
  // through its spec names as the workers reach them, and checks each round
  // trip takes at least 2 * delay; prints them beside the same checks from
  // the test's own namespace (no relay; with netem, one delayed direction).
  void CheckDelay(absl::Duration delay) {
    const Host* worker = nullptr;
    std::vector<std::string> names, direct;
    for (const Host& h : hosts_) {
      if (h.role == m::Role::kWorker) {
        if (worker == nullptr) worker = &h;
      } else {
        names.push_back(h.spec_address);
        direct.push_back(h.address());
      }
    }
    ASSERT_NE(worker, nullptr);
    std::vector<std::string> argv = {
        ip_,        "netns", "exec", worker->ns, BinDir() + "/health_rtt",
        "--count=5"};
    argv.insert(argv.end(), names.begin(), names.end());
    std::string from_worker, from_test;
    ASSERT_EQ(RunCommand(argv, dir_.Sub("rtt.log"), &from_worker), 0)
        << from_worker;
    argv = {BinDir() + "/health_rtt", "--count=5"};
    argv.insert(argv.end(), direct.begin(), direct.end());
    ASSERT_EQ(RunCommand(argv, dir_.Sub("rtt0.log"), &from_test), 0)
        << from_test;
    std::cout << "[ delay    ] mechanism: " << mechanism_ << "\n"
              << "[ delay    ] from " << worker->ns << ":\n"
              << from_worker << "[ delay    ] from the test's namespace:\n"
              << from_test << std::flush;
    RecordProperty("link_delay_mechanism", mechanism_);
    int seen = 0;
    for (absl::string_view line : absl::StrSplit(from_worker, '\n')) {
      size_t at = line.find(" min=");
      if (!absl::StartsWith(line, "health_rtt: ") || at == line.npos) continue;
      double min_ms = 0;
      ASSERT_TRUE(absl::SimpleAtod(
          line.substr(at + 5, line.find(' ', at + 1) - at - 5), &min_ms))
          << line;
      EXPECT_GE(min_ms, 2 * absl::ToDoubleMilliseconds(delay)) << line;
      ++seen;
    }
    EXPECT_EQ(seen, static_cast<int>(names.size())) << from_worker;
  }

  // Relay only: every worker's connections to every daemon went through it.
  void CheckRelayCarried() {
    if (relay_ == nullptr) return;
    std::string log = ReadFile(relay_log_);
    std::vector<absl::string_view> lines = absl::StrSplit(log, '\n');
    // "... ended: A bytes there, B back"
    int connections = 0;
    uint64_t bytes = 0;
    for (absl::string_view line : lines) {
      size_t at = line.find(" ended: ");
      if (at == line.npos) continue;
      ++connections;
      std::vector<absl::string_view> w =
          absl::StrSplit(line.substr(at + 8), ' ');
      uint64_t there = 0, back = 0;
      if (w.size() == 5 && absl::SimpleAtoi(w[0], &there) &&
          absl::SimpleAtoi(w[3], &back)) {
        bytes += there + back;
      }
    }
    std::cout << "[ delay    ] the relay carried " << connections
              << " connections, " << bytes << " bytes" << std::endl;
    for (const Host& w : hosts_) {
      if (w.role != m::Role::kWorker) continue;
      for (const Host& t : hosts_) {
        if (t.role == m::Role::kWorker) continue;
        bool found = false;
        for (absl::string_view line : lines) {
          found |= absl::StrContains(line, " from " + w.ip + ":") &&
                   absl::EndsWith(line, " to " + t.address());
        }
        EXPECT_TRUE(found) << w.ns << " -> " << t.ns
                           << " did not go through the relay:\n"
                           << log;
      }
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
    v1::VariableConfig v = GoldenVariableConfig(kVariable);
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
  // The delay test: what adds the delay, and the relay's host and process
  // where it is the relay.
  std::string mechanism_;
  std::string relay_ns_;
  std::string relay_ip_;
  std::string relay_log_;
  std::unique_ptr<Subprocess> relay_;
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
  // 20 ms each way on every link: a 40 ms round trip between hosts.
  const absl::Duration delay = absl::Milliseconds(20);
  AddLinkDelay(delay);
  if (IsSkipped() || HasFatalFailure()) return;
  StartAll();
  ASSERT_FALSE(HasFatalFailure());
  CheckDelay(delay);
  ASSERT_FALSE(HasFatalFailure());
  TrainGolden();
  ASSERT_FALSE(HasFatalFailure());
  StopAll();
  CheckRelayCarried();
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
