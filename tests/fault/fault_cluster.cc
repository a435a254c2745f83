#include "tests/fault/fault_cluster.h"

#include <signal.h>
#include <unistd.h>

#include <cstring>
#include <sstream>

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/status.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "tests/integration/golden.h"
#include "tests/util/test_env.h"

namespace plexus::fault {

size_t CountOf(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + 1)) {
    ++n;
  }
  return n;
}

int RunCommand(const std::vector<std::string>& argv, std::string* out,
               absl::Duration timeout) {
  char tmpl[] = "/tmp/plexus-fault-cmd-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) return -1;
  close(fd);
  int code = testing::RunProgram(argv, tmpl, timeout, out);
  unlink(tmpl);
  return code;
}

// --- NetHost ----------------------------------------------------------------

namespace {

std::string FindTool(const std::string& name) {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    std::string path = absl::StrCat(dir, "/", name);
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<NetHost>> NetHost::Create() {
  if (geteuid() != 0) {
    return absl::FailedPreconditionError(
        "needs root to create network namespaces");
  }
  if (FindTool("ip").empty() || FindTool("iptables").empty()) {
    return absl::FailedPreconditionError("needs `ip` and `iptables`");
  }
  static int counter = 0;
  const int n = ++counter;
  // Names and a /30 from the pid and a counter: runs never meet what an
  // earlier crashed run left behind (each run removes its own).
  const int id = (getpid() % 4000) * 8 + n % 8;
  auto h = std::unique_ptr<NetHost>(new NetHost());
  h->ns_ = absl::StrCat("plxf", getpid(), "-", n);
  h->outer_dev_ = absl::StrCat("plxfo", id);
  std::string inner_dev = absl::StrCat("plxfi", id);
  // 10.214.0.0/15: /30 subnets, .1 outside, .2 inside.
  const int a = (id * 4) / 256, b = (id * 4) % 256;
  h->outer_ip_ = absl::StrCat("10.", 214 + a / 256, ".", a % 256, ".", b + 1);
  h->inner_ip_ = absl::StrCat("10.", 214 + a / 256, ".", a % 256, ".", b + 2);
  const std::string ip = FindTool("ip");
  std::string out;
  if (RunCommand({ip, "netns", "add", h->ns_}, &out) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create a network namespace here: ", out));
  }
  std::vector<std::vector<std::string>> steps = {
      {ip, "link", "add", h->outer_dev_, "type", "veth", "peer", "name",
       inner_dev},
      {ip, "link", "set", inner_dev, "netns", h->ns_},
      {ip, "addr", "add", h->outer_ip_ + "/30", "dev", h->outer_dev_},
      {ip, "link", "set", h->outer_dev_, "up"},
      {ip, "-n", h->ns_, "addr", "add", h->inner_ip_ + "/30", "dev", inner_dev},
      {ip, "-n", h->ns_, "link", "set", inner_dev, "up"},
      {ip, "-n", h->ns_, "link", "set", "lo", "up"},
  };
  for (const auto& argv : steps) {
    if (RunCommand(argv, &out) != 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "setting up the test host failed: ", absl::StrJoin(argv, " "), ": ",
          out));
    }
  }
  // The namespace's iptables must work (nf_tables or legacy).
  PLEXUS_RETURN_IF_ERROR(h->Iptables({"-L", "OUTPUT", "-n"}));
  return h;
}

NetHost::~NetHost() {
  const std::string ip = FindTool("ip");
  std::string pids;
  RunCommand({ip, "netns", "pids", ns_}, &pids);
  std::stringstream ss(pids);
  for (int pid; ss >> pid;) {
    if (pid > 0) kill(pid, SIGKILL);
  }
  RunCommand({ip, "link", "del", outer_dev_});
  RunCommand({ip, "netns", "del", ns_});
}

std::vector<std::string> NetHost::Wrap(
    const std::vector<std::string>& argv) const {
  std::vector<std::string> w = {FindTool("ip"), "netns", "exec", ns_};
  w.insert(w.end(), argv.begin(), argv.end());
  return w;
}

absl::Status NetHost::Iptables(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {FindTool("ip"),       "netns", "exec", ns_,
                                   FindTool("iptables"), "-w"};
  argv.insert(argv.end(), args.begin(), args.end());
  std::string out;
  if (RunCommand(argv, &out) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(absl::StrJoin(argv, " "), " failed: ", out));
  }
  return absl::OkStatus();
}

absl::Status NetHost::Partition(const std::vector<int>& ports, bool outbound,
                                bool inbound) {
  for (int port : ports) {
    const std::string p = absl::StrCat(port);
    if (outbound) {
      PLEXUS_RETURN_IF_ERROR(Iptables({"-A", "OUTPUT", "-p", "tcp", "-d",
                                       outer_ip_, "--dport", p, "-j", "DROP"}));
    }
    if (inbound) {
      PLEXUS_RETURN_IF_ERROR(Iptables({"-A", "INPUT", "-p", "tcp", "-s",
                                       outer_ip_, "--sport", p, "-j", "DROP"}));
    }
  }
  return absl::OkStatus();
}

absl::Status NetHost::Heal() {
  PLEXUS_RETURN_IF_ERROR(Iptables({"-F", "OUTPUT"}));
  return Iptables({"-F", "INPUT"});
}

// --- FaultCluster -----------------------------------------------------------

absl::StatusOr<std::unique_ptr<FaultCluster>> FaultCluster::Start(
    const FaultClusterOptions& options) {
  if (options.root_dir.empty() || options.num_ps < 1) {
    return absl::InvalidArgumentError("root_dir and num_ps >= 1 are required");
  }
  local::LocalClusterOptions lo;
  lo.bin_dir = testing::BinDir();
  lo.root_dir = options.root_dir;
  lo.num_ps = options.num_ps;
  lo.kill_with_parent = true;
  lo.log_per_run = true;
  lo.coordinator_watches_shards = options.coordinator_knows_shards;
  // The harness's flags first: the test's own come later and win.
  const std::vector<std::string> daemon = {
      "--host=" + options.bind_host, "--failpoint_rpc", "--shutdown_grace_s=5"};
  lo.ps_flags = daemon;
  lo.ps_flags.insert(lo.ps_flags.end(), options.ps_flags.begin(),
                     options.ps_flags.end());
  lo.coordinator_flags = daemon;
  lo.coordinator_flags.insert(
      lo.coordinator_flags.end(),
      {"--heartbeat_interval_ms=100", "--suspect_timeout_ms=600",
       "--dead_timeout_ms=1500"});
  lo.coordinator_flags.insert(lo.coordinator_flags.end(),
                              options.coordinator_flags.begin(),
                              options.coordinator_flags.end());
  auto c = std::unique_ptr<FaultCluster>(new FaultCluster());
  PLEXUS_ASSIGN_OR_RETURN(c->local_, local::LocalCluster::Start(lo));
  PLEXUS_ASSIGN_OR_RETURN(c->coordinator_.member,
                          c->local_->Find("coordinator", 0));
  c->Sync(c->coordinator_);
  c->shards_.resize(options.num_ps);
  for (int i = 0; i < options.num_ps; ++i) {
    Proc& ps = c->shards_[i];
    PLEXUS_ASSIGN_OR_RETURN(ps.member, c->local_->Find("ps", i));
    c->Sync(ps);
    // The direct data plane's port (a free one at the first start), kept
    // for restarts so that a partition of this shard's ports stays whole.
    v1::GetShardInfoRequest req;
    v1::GetShardInfoResponse info;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    PLEXUS_RETURN_IF_ERROR(
        FromGrpcStatus(v1::ParameterServer::NewStub(
                           grpc::CreateChannel(
                               ps.address, grpc::InsecureChannelCredentials()))
                           ->GetShardInfo(&ctx, req, &info)),
        absl::StrCat("asking shard ", i, " for its data plane"));
    const std::string& dp = info.data_plane_address();
    if (!dp.empty() &&
        absl::SimpleAtoi(dp.substr(dp.rfind(':') + 1), &ps.data_port)) {
      ps.argv.push_back(absl::StrCat("--data_port=", ps.data_port));
      c->local_->command_line(ps.member) = ps.argv;
    }
  }
  c->stub_ = v1::Coordinator::NewStub(grpc::CreateChannel(
      c->coordinator_.address, grpc::InsecureChannelCredentials()));
  worker::PsClientOptions po;
  po.shards = c->ps_addresses();
  po.timeout = absl::Seconds(20);
  PLEXUS_ASSIGN_OR_RETURN(c->ps_, worker::PsClient::Connect(po));
  if (options.create_golden_variable) {
    v1::VariableConfig v = testing::GoldenVariableConfig(kGoldenVariable);
    PLEXUS_RETURN_IF_ERROR(c->ps_->CreateVariable(v),
                           "creating the golden variable");
  }
  return c;
}

FaultCluster::~FaultCluster() {
  ps_.reset();
  local_.reset();  // SIGKILLs and reaps what still runs
}

void FaultCluster::Sync(Proc& p) {
  const local::Member& m = local_->members()[p.member];
  p.role = m.role;
  p.index = m.index;
  p.dir = m.dir;
  p.log = m.log_file;
  p.port = local_->port(p.member);
  p.admin_port = m.admin_port;
  p.address = m.role == "worker" ? "" : m.address;
  p.process = local_->process(p.member);
  p.argv = local_->command_line(p.member);
  p.runs = local_->runs(p.member);
}

std::vector<std::string> FaultCluster::ps_addresses() const {
  std::vector<std::string> a;
  for (const Proc& p : shards_) a.push_back(p.address);
  return a;
}

absl::Status FaultCluster::Restart(Proc& p) {
  local_->command_line(p.member) = p.argv;
  absl::Status st = local_->RestartMember(p.member);
  Sync(p);  // also after a failed wait: p.process is the new run's
  return st;
}

absl::Status FaultCluster::Signal(Proc& p, int sig) {
  return local_->Signal(p.member, sig);
}

absl::Status FaultCluster::StartWorker(int index,
                                       std::vector<std::string> argv_extra,
                                       const std::string& failpoints,
                                       const NetHost* host) {
  local::WorkerOptions w;
  w.argv = {testing::BinDir() + "/golden_worker"};
  w.argv.insert(w.argv.end(), argv_extra.begin(), argv_extra.end());
  if (!failpoints.empty()) w.env.push_back({"PLEXUS_FAILPOINTS", failpoints});
  if (host != nullptr) {
    w.daemon_host = host->outer_ip();
    w.wrapper = host->Wrap({});
  }
  // The tests wait for what they need (a worker may be meant to crash).
  w.wait_until_registered = false;
  absl::StatusOr<size_t> member = local_->StartWorker(index, w);
  // Also after an error: a new run may have started, p.process must be its.
  absl::StatusOr<size_t> slot =
      member.ok() ? member : local_->Find("worker", index);
  if (slot.ok()) {
    Proc* p = nullptr;
    for (auto& q : workers_) {
      if (q->member == *slot) p = q.get();
    }
    if (p == nullptr) {
      workers_.push_back(std::make_unique<Proc>());
      p = workers_.back().get();
      p->member = *slot;
    }
    Sync(*p);
  }
  return member.status();
}

absl::Status FaultCluster::SetFailpoint(const Proc& daemon,
                                        const std::string& name,
                                        const std::string& action) {
  v1::SetFailpointRequest req;
  req.set_name(name);
  req.set_action(action);
  v1::SetFailpointResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  auto channel =
      grpc::CreateChannel(daemon.address, grpc::InsecureChannelCredentials());
  if (daemon.role == "ps") {
    return FromGrpcStatus(
        v1::ParameterServer::NewStub(channel)->SetFailpoint(&ctx, req, &resp));
  }
  return FromGrpcStatus(
      v1::Coordinator::NewStub(channel)->SetFailpoint(&ctx, req, &resp));
}

absl::Status FaultCluster::Submit(uint64_t steps, int64_t no_worker_timeout_ms,
                                  uint32_t max_restarts) {
  v1::SubmitJobRequest req;
  req.set_job_id(kGoldenJob);
  req.set_max_restarts_per_worker(max_restarts);
  req.mutable_steps()->set_function_name("golden");
  req.mutable_steps()->set_num_steps(steps);
  req.set_no_worker_timeout_ms(no_worker_timeout_ms);
  v1::SubmitJobResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  return FromGrpcStatus(stub_->SubmitJob(&ctx, req, &resp));
}

absl::StatusOr<v1::JobStatus> FaultCluster::Join(absl::Duration timeout) {
  v1::JoinRequest req;
  req.set_job_id(kGoldenJob);
  req.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  v1::JoinResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(
      absl::ToChronoTime(absl::Now() + timeout + absl::Seconds(5)));
  PLEXUS_RETURN_IF_ERROR(FromGrpcStatus(stub_->Join(&ctx, req, &resp)));
  return resp.status();
}

absl::StatusOr<v1::GetJobStatusResponse> FaultCluster::JobStatus() {
  v1::GetJobStatusRequest req;
  req.set_job_id(kGoldenJob);
  v1::GetJobStatusResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  PLEXUS_RETURN_IF_ERROR(FromGrpcStatus(stub_->GetJobStatus(&ctx, req, &resp)));
  return resp;
}

uint64_t FaultCluster::Succeeded() {
  auto s = JobStatus();
  return s.ok() ? s->status().closures_succeeded() : 0;
}

absl::StatusOr<std::vector<float>> FaultCluster::Values(
    absl::Duration timeout) {
  std::vector<float> w(testing::kGoldenElements, -1.0f);
  absl::Status st;
  WaitFor(
      [&] {
        st = ps_->PullDense(kGoldenVariable, absl::MakeSpan(w));
        return st.ok();
      },
      timeout);
  PLEXUS_RETURN_IF_ERROR(st, "pulling the golden variable");
  return w;
}

absl::Status FaultCluster::CheckGolden(uint64_t steps) {
  PLEXUS_ASSIGN_OR_RETURN(std::vector<float> w, Values());
  std::vector<float> golden =
      testing::GoldenValues(steps, testing::kGoldenElements);
  if (std::memcmp(w.data(), golden.data(), w.size() * sizeof(float)) == 0) {
    return absl::OkStatus();
  }
  std::string diff;
  for (size_t i = 0; i < w.size(); ++i) {
    absl::StrAppend(&diff, " [", i, "] ", w[i], " vs ", golden[i]);
  }
  return absl::DataLossError(absl::StrCat(
      "parameters differ from the golden run of ", steps, " steps:", diff));
}

absl::Status FaultCluster::CheckJobGolden(uint64_t steps,
                                          absl::Duration timeout) {
  PLEXUS_ASSIGN_OR_RETURN(v1::JobStatus done, Join(timeout));
  if (done.state() != v1::JOB_STATE_SUCCEEDED ||
      done.closures_total() != steps || done.closures_succeeded() != steps) {
    return absl::InternalError(
        absl::StrCat("job ended ", v1::JobState_Name(done.state()), " with ",
                     done.closures_succeeded(), "/", done.closures_total(),
                     " closures, want ", steps));
  }
  return CheckGolden(steps);
}

double FaultCluster::Metric(const Proc& daemon, const std::string& series) {
  httplib::Client http("127.0.0.1", daemon.admin_port);
  http.set_connection_timeout(2);
  http.set_read_timeout(5);
  httplib::Result r = http.Get("/metrics");
  if (!r) return -1;
  std::stringstream ss(r->body);
  for (std::string line; std::getline(ss, line);) {
    if (line.size() > series.size() &&
        line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ') {
      return std::stod(line.substr(series.size() + 1));
    }
  }
  return -1;
}

std::string FaultCluster::Logs(size_t tail_bytes) const {
  std::string out;
  auto add = [&](const Proc& p) {
    std::string log = ReadFile(p.log);
    if (log.size() > tail_bytes) log = log.substr(log.size() - tail_bytes);
    absl::StrAppend(&out, "\n==== ", p.role, " ", p.index, " (", p.log,
                    ") ====\n", log);
  };
  add(coordinator_);
  for (const Proc& p : shards_) add(p);
  for (const auto& w : workers_) add(*w);
  return out;
}

}  // namespace plexus::fault
