#include "tools/local/local_cluster.h"

#include <signal.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/grpc_status.h"
#include "common/health_client.h"
#include "common/status.h"
#include "plexus/v1/coordinator.grpc.pb.h"

namespace plexus::local {

std::string StatePath(const std::string& root_dir) {
  return root_dir + "/cluster.state";
}

namespace {

std::string WorkerDir(const std::string& root_dir, int index) {
  return absl::StrCat(root_dir, "/worker-", index);
}

// Starts `so` after creating `dir` and, for a worker (`save_argv`), saving
// its command line there, one argument a line (RestartWorker reads it).
absl::StatusOr<std::unique_ptr<Subprocess>> StartIn(
    const std::string& dir, bool save_argv, const SubprocessOptions& so) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  if (save_argv) {
    PLEXUS_RETURN_IF_ERROR(WriteFileAtomically(
        dir + "/argv", absl::StrJoin(so.argv, "\n") + "\n"));
  }
  return Subprocess::Start(so);
}

}  // namespace

absl::Status WaitForWorker(const std::string& coordinator, pid_t pid,
                           absl::Duration timeout, Subprocess* process) {
  auto stub = v1::Coordinator::NewStub(
      grpc::CreateChannel(coordinator, grpc::InsecureChannelCredentials()));
  absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(10);
  absl::Status last = absl::OkStatus();
  while (true) {
    v1::ListProcessesRequest req;
    req.set_role(v1::ROLE_WORKER);
    v1::ListProcessesResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(
        absl::ToChronoTime(std::min(deadline, absl::Now() + absl::Seconds(2))));
    last = FromGrpcStatus(stub->ListProcesses(&ctx, req, &resp));
    if (last.ok()) {
      for (const auto& p : resp.processes()) {
        if (p.pid() == pid && (p.state() == v1::PROCESS_STATE_IDLE ||
                               p.state() == v1::PROCESS_STATE_BUSY)) {
          return absl::OkStatus();
        }
      }
    }
    if (process != nullptr && !process->Running()) {
      return absl::UnavailableError(
          absl::StrCat("worker (pid ", pid, ") exited before it registered"));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "worker (pid ", pid, ") not registered with the coordinator at ",
          coordinator, " after ", absl::FormatDuration(timeout),
          last.ok() ? ""
                    : absl::StrCat(" (last error: ", last.message(), ")")));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Milliseconds(200));
  }
}

absl::StatusOr<pid_t> RestartWorker(const std::string& root_dir, int index,
                                    absl::Duration timeout) {
  std::string dir = WorkerDir(root_dir, index);
  std::ifstream in(dir + "/argv");
  std::vector<std::string> argv;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) argv.push_back(line);
  }
  if (argv.empty()) {
    return absl::NotFoundError(
        absl::StrCat("no saved command line in ", dir, "/argv"));
  }
  PLEXUS_ASSIGN_OR_RETURN(std::vector<Member> members,
                          ReadState(StatePath(root_dir)));
  auto coordinator = std::find_if(members.begin(), members.end(), [](auto& m) {
    return m.role == "coordinator";
  });
  auto self = std::find_if(members.begin(), members.end(), [&](auto& m) {
    return m.role == "worker" && m.index == index;
  });
  if (coordinator == members.end() || self == members.end()) {
    return absl::NotFoundError(absl::StrCat("worker ", index,
                                            " or the coordinator is not in ",
                                            StatePath(root_dir)));
  }
  SubprocessOptions so;
  so.argv = std::move(argv);
  so.log_file = self->log_file;
  so.kill_with_parent = false;
  so.new_session = true;
  PLEXUS_ASSIGN_OR_RETURN(auto proc, StartIn(dir, /*save_argv=*/true, so));
  pid_t pid = proc->pid();
  self->pid = pid;
  PLEXUS_RETURN_IF_ERROR(WriteState(StatePath(root_dir), members));
  absl::Status st =
      WaitForWorker(coordinator->address, pid, timeout, proc.get());
  proc->Detach();
  PLEXUS_RETURN_IF_ERROR(
      st, absl::StrCat("worker ", index, " (log: ", self->log_file, ")"));
  return pid;
}

absl::StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::Start(
    const LocalClusterOptions& options) {
  if (options.bin_dir.empty() || options.root_dir.empty()) {
    return absl::InvalidArgumentError("bin_dir and root_dir are required");
  }
  if (options.num_ps < 1 || options.num_ps > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "number of PS shards must be 1..256, got ", options.num_ps));
  }
  std::error_code ec;
  std::filesystem::create_directories(options.root_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", options.root_dir, ": ", ec.message()));
  }
  auto cluster = std::unique_ptr<LocalCluster>(new LocalCluster(options));
  if (!options.coordinator_watches_shards) {
    PLEXUS_RETURN_IF_ERROR(
        cluster->StartDaemon("coordinator", 0, options.coordinator_flags));
  }
  for (int i = 0; i < options.num_ps; ++i) {
    std::vector<std::string> flags = {absl::StrCat("--shard=", i)};
    flags.insert(flags.end(), options.ps_flags.begin(), options.ps_flags.end());
    PLEXUS_RETURN_IF_ERROR(cluster->StartDaemon("ps", i, std::move(flags)));
  }
  if (options.coordinator_watches_shards) {
    std::vector<std::string> shards;
    for (const Member& m : cluster->members_) shards.push_back(m.address);
    std::vector<std::string> flags = options.coordinator_flags;
    flags.push_back("--ps_shards=" + absl::StrJoin(shards, ","));
    PLEXUS_RETURN_IF_ERROR(
        cluster->StartDaemon("coordinator", 0, std::move(flags)));
    // The coordinator stays members()[0] (and process(0)).
    std::rotate(cluster->members_.begin(), cluster->members_.end() - 1,
                cluster->members_.end());
    std::rotate(cluster->runs_.begin(), cluster->runs_.end() - 1,
                cluster->runs_.end());
  }
  for (const Member& m : cluster->members_) {
    PLEXUS_RETURN_IF_ERROR(
        WaitUntilServing(m.address, options.start_timeout),
        absl::StrCat(m.role, " ", m.index, " (log: ", m.log_file, ")"));
  }
  PLEXUS_RETURN_IF_ERROR(cluster->StartWorkers());
  PLEXUS_RETURN_IF_ERROR(
      WriteState(StatePath(options.root_dir), cluster->members_));
  return cluster;
}

absl::StatusOr<size_t> LocalCluster::Find(const std::string& role,
                                          int index) const {
  for (size_t i = 0; i < members_.size(); ++i) {
    if (members_[i].role == role && members_[i].index == index) return i;
  }
  return absl::NotFoundError(
      absl::StrCat("no ", role, " ", index, " in the local cluster"));
}

absl::Status LocalCluster::Launch(size_t i) {
  Member& m = members_[i];
  Run& r = runs_[i];
  if (r.process != nullptr && r.process->Running()) {
    return absl::FailedPreconditionError(absl::StrCat(
        m.role, " ", m.index, " (pid ", m.pid, ") is still running"));
  }
  const int run = r.runs + 1;
  SubprocessOptions so;
  so.argv = r.argv;
  so.env = r.env;
  so.log_file =
      options_.log_per_run ? absl::StrCat(m.dir, "/log-", run) : m.dir + "/log";
  so.kill_with_parent = options_.kill_with_parent;
  so.new_session = !options_.kill_with_parent;
  PLEXUS_ASSIGN_OR_RETURN(r.process,
                          StartIn(m.dir, /*save_argv=*/m.role == "worker", so),
                          absl::StrCat("starting ", m.role, " ", m.index));
  r.runs = run;
  m.pid = r.process->pid();
  m.log_file = so.log_file;
  return absl::OkStatus();
}

absl::Status LocalCluster::StartDaemon(const std::string& role, int index,
                                       std::vector<std::string> args) {
  Member m;
  m.role = role;
  m.index = index;
  m.dir = role == "ps" ? absl::StrCat(options_.root_dir, "/ps-", index)
                       : absl::StrCat(options_.root_dir, "/", role);
  m.log_file = m.dir + "/log";
  Run r;
  r.argv = {options_.bin_dir + "/plexus-" + role,
            "--data_dir=" + m.dir + "/data",
            "--port=0",
            "--port_file=" + m.dir + "/port",
            "--admin_port=0",
            "--admin_port_file=" + m.dir + "/admin_port"};
  r.argv.insert(r.argv.end(), args.begin(), args.end());
  r.argv.insert(r.argv.end(), options_.extra_flags.begin(),
                options_.extra_flags.end());
  members_.push_back(std::move(m));
  runs_.push_back(std::move(r));
  return LaunchDaemon(members_.size() - 1);
}

absl::Status LocalCluster::LaunchDaemon(size_t i) {
  const std::string port_file = members_[i].dir + "/port";
  const std::string admin_file = members_[i].dir + "/admin_port";
  std::error_code ec;
  std::filesystem::remove(port_file, ec);
  std::filesystem::remove(admin_file, ec);
  PLEXUS_RETURN_IF_ERROR(Launch(i));
  Member& m = members_[i];
  Run& r = runs_[i];
  PLEXUS_ASSIGN_OR_RETURN(
      int port,
      WaitForPortFile(port_file, options_.start_timeout, r.process.get()),
      absl::StrCat(m.role, " ", m.index, " (log: ", m.log_file, ")"));
  // The admin port file is written before the gRPC one.
  PLEXUS_ASSIGN_OR_RETURN(
      m.admin_port,
      WaitForPortFile(admin_file, absl::Seconds(1), r.process.get()),
      absl::StrCat(m.role, " ", m.index, " admin port"));
  r.port = port;
  m.address = absl::StrCat("127.0.0.1:", port);
  // Later runs bind the same ports.
  for (std::string& a : r.argv) {
    if (a == "--port=0") a = absl::StrCat("--port=", port);
    if (a == "--admin_port=0") a = absl::StrCat("--admin_port=", m.admin_port);
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> LocalCluster::LaunchWorker(
    int index, const WorkerOptions& options) {
  if (index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker index must be >= 0, got ", index));
  }
  if (options.argv.empty()) {
    return absl::InvalidArgumentError("workers need a program (argv)");
  }
  std::vector<std::string> shards;
  std::string coordinator;
  for (size_t i = 0; i < members_.size(); ++i) {
    std::string address = absl::StrCat(options.daemon_host, ":", runs_[i].port);
    if (members_[i].role == "ps") shards.push_back(address);
    if (members_[i].role == "coordinator") coordinator = address;
  }
  Run r;
  r.argv = options.wrapper;
  r.argv.insert(r.argv.end(), options.argv.begin(), options.argv.end());
  r.argv.push_back("--coordinator=" + coordinator);
  r.argv.push_back("--ps=" + absl::StrJoin(shards, ","));
  r.argv.push_back(absl::StrCat("--task_index=", index));
  r.env = options.env;
  r.wait_until_registered = options.wait_until_registered;
  absl::StatusOr<size_t> slot = Find("worker", index);
  if (slot.ok()) {  // the next run of a worker that ran before
    Run& old = runs_[*slot];
    if (old.process != nullptr && old.process->Running()) {
      return absl::FailedPreconditionError(
          absl::StrCat("worker ", index, " (pid ", members_[*slot].pid,
                       ") is still running"));
    }
    r.runs = old.runs;
    r.process = std::move(old.process);
    old = std::move(r);
    PLEXUS_RETURN_IF_ERROR(Launch(*slot));
    return *slot;
  }
  Member m;
  m.role = "worker";
  m.index = index;
  m.address = "-";
  m.dir = WorkerDir(options_.root_dir, index);
  m.log_file = m.dir + "/log";
  members_.push_back(std::move(m));
  runs_.push_back(std::move(r));
  if (absl::Status st = Launch(members_.size() - 1); !st.ok()) {
    members_.pop_back();  // never ran: not a member
    runs_.pop_back();
    return st;
  }
  return members_.size() - 1;
}

absl::Status LocalCluster::WaitForRegistration(size_t i) {
  const Member& m = members_[i];
  return Annotate(WaitForWorker(coordinator_address(), m.pid,
                                options_.start_timeout, runs_[i].process.get()),
                  absl::StrCat("worker ", m.index, " (log: ", m.log_file, ")"));
}

absl::StatusOr<size_t> LocalCluster::StartWorker(int index,
                                                 const WorkerOptions& options) {
  PLEXUS_ASSIGN_OR_RETURN(size_t i, LaunchWorker(index, options));
  absl::Status st = WriteState(StatePath(options_.root_dir), members_);
  if (st.ok() && options.wait_until_registered) st = WaitForRegistration(i);
  PLEXUS_RETURN_IF_ERROR(st);
  return i;
}

absl::Status LocalCluster::StartWorkers() {
  if (options_.num_workers < 0 || options_.num_workers > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "number of workers must be 0..1024, got ", options_.num_workers));
  }
  if (options_.num_workers > 0 && options_.worker_argv.empty()) {
    return absl::InvalidArgumentError("workers need a program (worker_argv)");
  }
  // Every worker starts, then each must register.
  WorkerOptions w;
  w.argv = options_.worker_argv;
  std::vector<size_t> started;
  for (int i = 0; i < options_.num_workers; ++i) {
    PLEXUS_ASSIGN_OR_RETURN(size_t slot, LaunchWorker(i, w),
                            absl::StrCat("starting worker ", i));
    started.push_back(slot);
  }
  for (size_t slot : started) {
    PLEXUS_RETURN_IF_ERROR(WaitForRegistration(slot));
  }
  return absl::OkStatus();
}

absl::Status LocalCluster::RestartMember(size_t i) {
  if (i >= members_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("no member ", i, " (", members_.size(), " members)"));
  }
  absl::Status st = members_[i].role == "worker" ? Launch(i) : LaunchDaemon(i);
  if (st.ok() && members_[i].role == "worker" &&
      runs_[i].wait_until_registered) {
    st = WaitForRegistration(i);
  }
  absl::Status written = WriteState(StatePath(options_.root_dir), members_);
  PLEXUS_RETURN_IF_ERROR(st);
  return written;
}

absl::Status LocalCluster::Signal(size_t i, int sig) {
  if (i >= members_.size() || runs_[i].process == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("no member ", i));
  }
  Subprocess* p = runs_[i].process.get();
  PLEXUS_RETURN_IF_ERROR(
      p->Signal(sig), absl::StrCat(members_[i].role, " ", members_[i].index));
  if (sig == SIGKILL) {
    PLEXUS_RETURN_IF_ERROR(p->Wait(absl::Seconds(10)).status());
  }
  return absl::OkStatus();
}

LocalCluster::~LocalCluster() = default;  // ~Subprocess kills what still runs

void LocalCluster::Detach() {
  for (Run& r : runs_) r.process->Detach();
}

absl::Status LocalCluster::Stop(absl::Duration grace) {
  for (Run& r : runs_) {
    if (r.process->Running()) r.process->Signal(SIGTERM).IgnoreError();
  }
  std::vector<std::string> failures;
  absl::Time deadline = absl::Now() + grace;
  for (size_t i = 0; i < runs_.size(); ++i) {
    Subprocess* p = runs_[i].process.get();
    auto code = p->Wait(std::max(absl::ZeroDuration(), deadline - absl::Now()));
    if (!code.ok()) {
      p->Signal(SIGKILL).IgnoreError();
      p->Wait(absl::Seconds(10)).IgnoreError();
      failures.push_back(absl::StrCat(members_[i].role, " ", members_[i].index,
                                      " did not exit within grace; killed"));
    } else if (*code != 0 &&
               !(members_[i].role == "worker" && *code == 128 + SIGTERM)) {
      // (A worker told to stop drains its step and exits 143, as on a
      // preemption notice.)
      failures.push_back(absl::StrCat(members_[i].role, " ", members_[i].index,
                                      " exited with status ", *code,
                                      " (log: ", members_[i].log_file, ")"));
    }
  }
  if (!failures.empty()) {
    return absl::InternalError(absl::StrJoin(failures, "; "));
  }
  return absl::OkStatus();
}

absl::Status WriteState(const std::string& path,
                        const std::vector<Member>& members) {
  std::string out;
  for (const Member& m : members) {
    absl::StrAppend(&out, m.role, " ", m.index, " ", m.pid, " ", m.address, " ",
                    m.admin_port, " ", m.dir, " ", m.log_file, "\n");
  }
  return WriteFileAtomically(path, out);
}

absl::StatusOr<std::vector<Member>> ReadState(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("no local cluster state at ", path,
                     " (was `plexus local up` run with this --dir?)"));
  }
  std::vector<Member> members;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream ss(line);
    Member m;
    if (!(ss >> m.role >> m.index >> m.pid >> m.address >> m.admin_port >>
          m.dir >> m.log_file)) {
      return absl::DataLossError(
          absl::StrCat("malformed line in ", path, ": '", line, "'"));
    }
    members.push_back(m);
  }
  return members;
}

}  // namespace plexus::local
