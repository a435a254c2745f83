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

// Starts a worker from its full command line, saved in its folder first.
absl::StatusOr<std::unique_ptr<Subprocess>> LaunchWorker(
    const std::string& root_dir, int index, std::vector<std::string> argv,
    bool kill_with_parent) {
  std::string dir = WorkerDir(root_dir, index);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", dir, ": ", ec.message()));
  }
  PLEXUS_RETURN_IF_ERROR(
      WriteFileAtomically(dir + "/argv", absl::StrJoin(argv, "\n") + "\n"));
  SubprocessOptions so;
  so.argv = std::move(argv);
  so.log_file = dir + "/log";
  so.kill_with_parent = kill_with_parent;
  so.new_session = !kill_with_parent;
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
  PLEXUS_ASSIGN_OR_RETURN(auto proc, LaunchWorker(root_dir, index, argv,
                                                  /*kill_with_parent=*/false));
  pid_t pid = proc->pid();
  self->pid = pid;
  PLEXUS_RETURN_IF_ERROR(WriteState(StatePath(root_dir), members));
  absl::Status st =
      WaitForWorker(coordinator->address, pid, timeout, proc.get());
  proc->Detach();
  PLEXUS_RETURN_IF_ERROR(
      st, absl::StrCat("worker ", index, " (log: ", dir, "/log)"));
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
  auto cluster = std::unique_ptr<LocalCluster>(new LocalCluster());
  if (!options.coordinator_watches_shards) {
    PLEXUS_RETURN_IF_ERROR(cluster->StartMember(options, "coordinator", 0,
                                                options.coordinator_flags));
  }
  for (int i = 0; i < options.num_ps; ++i) {
    PLEXUS_RETURN_IF_ERROR(
        cluster->StartMember(options, "ps", i, {absl::StrCat("--shard=", i)}));
  }
  if (options.coordinator_watches_shards) {
    std::vector<std::string> shards;
    for (const Member& m : cluster->members_) shards.push_back(m.address);
    std::vector<std::string> flags = options.coordinator_flags;
    flags.push_back("--ps_shards=" + absl::StrJoin(shards, ","));
    PLEXUS_RETURN_IF_ERROR(
        cluster->StartMember(options, "coordinator", 0, std::move(flags)));
    // The coordinator stays members()[0] (and process(0)).
    std::rotate(cluster->members_.begin(), cluster->members_.end() - 1,
                cluster->members_.end());
    std::rotate(cluster->processes_.begin(), cluster->processes_.end() - 1,
                cluster->processes_.end());
  }
  for (const Member& m : cluster->members_) {
    PLEXUS_RETURN_IF_ERROR(
        WaitUntilServing(m.address, options.start_timeout),
        absl::StrCat(m.role, " ", m.index, " (log: ", m.log_file, ")"));
  }
  PLEXUS_RETURN_IF_ERROR(cluster->StartWorkers(options));
  PLEXUS_RETURN_IF_ERROR(
      WriteState(StatePath(options.root_dir), cluster->members_));
  return cluster;
}

absl::Status LocalCluster::StartMember(const LocalClusterOptions& options,
                                       const std::string& role, int index,
                                       std::vector<std::string> args) {
  Member m;
  m.role = role;
  m.index = index;
  m.dir = role == "ps" ? absl::StrCat(options.root_dir, "/ps-", index)
                       : absl::StrCat(options.root_dir, "/", role);
  m.log_file = m.dir + "/log";
  std::string port_file = m.dir + "/port";
  std::string admin_file = m.dir + "/admin_port";
  std::error_code ec;
  std::filesystem::create_directories(m.dir, ec);
  std::filesystem::remove(port_file, ec);
  std::filesystem::remove(admin_file, ec);
  std::string binary = options.bin_dir + "/plexus-" + role;
  SubprocessOptions so;
  so.argv = {binary,           "--data_dir=" + m.dir + "/data",
             "--port=0",       "--port_file=" + port_file,
             "--admin_port=0", "--admin_port_file=" + admin_file};
  so.argv.insert(so.argv.end(), args.begin(), args.end());
  so.argv.insert(so.argv.end(), options.extra_flags.begin(),
                 options.extra_flags.end());
  so.log_file = m.log_file;
  so.kill_with_parent = options.kill_with_parent;
  so.new_session = !options.kill_with_parent;
  PLEXUS_ASSIGN_OR_RETURN(auto proc, Subprocess::Start(so),
                          absl::StrCat("starting ", role, " ", index));
  PLEXUS_ASSIGN_OR_RETURN(
      int port, WaitForPortFile(port_file, options.start_timeout, proc.get()),
      absl::StrCat(role, " ", index, " (log: ", m.log_file, ")"));
  // The admin port file is written before the gRPC one.
  PLEXUS_ASSIGN_OR_RETURN(
      m.admin_port, WaitForPortFile(admin_file, absl::Seconds(1), proc.get()),
      absl::StrCat(role, " ", index, " admin port"));
  m.pid = proc->pid();
  m.address = absl::StrCat("127.0.0.1:", port);
  members_.push_back(m);
  processes_.push_back(std::move(proc));
  return absl::OkStatus();
}

absl::Status LocalCluster::StartWorkers(const LocalClusterOptions& options) {
  if (options.num_workers < 0 || options.num_workers > 1024) {
    return absl::InvalidArgumentError(absl::StrCat(
        "number of workers must be 0..1024, got ", options.num_workers));
  }
  if (options.num_workers > 0 && options.worker_argv.empty()) {
    return absl::InvalidArgumentError("workers need a program (worker_argv)");
  }
  std::vector<std::string> shards;
  for (const Member& m : members_) {
    if (m.role == "ps") shards.push_back(m.address);
  }
  const std::string coordinator = coordinator_address();
  size_t first = members_.size();
  for (int i = 0; i < options.num_workers; ++i) {
    std::vector<std::string> argv = options.worker_argv;
    argv.push_back("--coordinator=" + coordinator);
    argv.push_back("--ps=" + absl::StrJoin(shards, ","));
    argv.push_back(absl::StrCat("--task_index=", i));
    PLEXUS_ASSIGN_OR_RETURN(
        auto proc,
        LaunchWorker(options.root_dir, i, argv, options.kill_with_parent),
        absl::StrCat("starting worker ", i));
    Member m;
    m.role = "worker";
    m.index = i;
    m.pid = proc->pid();
    m.address = "-";
    m.dir = WorkerDir(options.root_dir, i);
    m.log_file = m.dir + "/log";
    members_.push_back(m);
    processes_.push_back(std::move(proc));
  }
  for (size_t i = first; i < members_.size(); ++i) {
    PLEXUS_RETURN_IF_ERROR(
        WaitForWorker(coordinator, members_[i].pid, options.start_timeout,
                      processes_[i].get()),
        absl::StrCat("worker ", members_[i].index,
                     " (log: ", members_[i].log_file, ")"));
  }
  return absl::OkStatus();
}

LocalCluster::~LocalCluster() = default;  // ~Subprocess kills what still runs

void LocalCluster::Detach() {
  for (auto& p : processes_) p->Detach();
}

absl::Status LocalCluster::Stop(absl::Duration grace) {
  for (auto& p : processes_) {
    if (p->Running()) p->Signal(SIGTERM).IgnoreError();
  }
  std::vector<std::string> failures;
  absl::Time deadline = absl::Now() + grace;
  for (size_t i = 0; i < processes_.size(); ++i) {
    auto code = processes_[i]->Wait(
        std::max(absl::ZeroDuration(), deadline - absl::Now()));
    if (!code.ok()) {
      processes_[i]->Signal(SIGKILL).IgnoreError();
      processes_[i]->Wait(absl::Seconds(10)).IgnoreError();
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
