#include "tools/local/local_cluster.h"

#include <signal.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/health_client.h"
#include "common/status.h"

namespace plexus::local {

std::string StatePath(const std::string& root_dir) {
  return root_dir + "/cluster.state";
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
  PLEXUS_RETURN_IF_ERROR(cluster->StartMember(options, "coordinator", 0, {}));
  for (int i = 0; i < options.num_ps; ++i) {
    PLEXUS_RETURN_IF_ERROR(
        cluster->StartMember(options, "ps", i, {absl::StrCat("--shard=", i)}));
  }
  for (const Member& m : cluster->members_) {
    PLEXUS_RETURN_IF_ERROR(
        WaitUntilServing(m.address, options.start_timeout),
        absl::StrCat(m.role, " ", m.index, " (log: ", m.log_file, ")"));
  }
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
    } else if (*code != 0) {
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
