// A Plexus cluster of real processes on this machine, on loopback: what
// `plexus local up` starts and what the process-level and fault tests drive.
//
// Every process gets a free port (the daemon binds port 0 and reports it
// through
// --port_file), its own data folder and one log file under the cluster's root
// folder:
//
//   <root>/coordinator/{data/,log,port,admin_port}
//   <root>/ps-<i>/{data/,log,port,admin_port}
//   <root>/worker-<i>/{log,argv}   argv: the command line, one per line, so
//                                   a supervisor can restart the worker
//   <root>/cluster.state          what `plexus local status|down` read
//
// Thread safety: a LocalCluster is used by one thread at a time.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process.h"

namespace plexus::local {

struct LocalClusterOptions {
  // Folder holding plexus-coordinator and plexus-ps. Required.
  std::string bin_dir;
  // Root folder for data, logs and the state file; created if missing.
  // Required.
  std::string root_dir;
  // Number of PS shards. Default 1.
  int num_ps = 1;
  // How long to wait for every process to report SERVING. Default 30 s.
  absl::Duration start_timeout = absl::Seconds(30);
  // Processes die with the thread that started them (tests). `plexus local
  // up` turns this off so the cluster outlives the command. Default true.
  bool kill_with_parent = true;
  // Extra flags for every daemon (e.g. --failpoints=...). Default none.
  std::vector<std::string> extra_flags;
  // Training workers: how many, and the program each runs (argv[0] and its
  // own flags); the launcher appends --coordinator, --ps (every shard) and
  // --task_index. A worker counts as started once the coordinator lists it
  // (by pid) as alive. Default none.
  int num_workers = 0;
  std::vector<std::string> worker_argv;
  // Tell the coordinator the shards' addresses (--ps_shards), so that it can
  // take global checkpoints and restore restarted shards (F7); the shards
  // then start before it. Off (default): the coordinator starts first and
  // knows no shards. `plexus local up` turns it on.
  bool coordinator_watches_shards = false;
  // Extra flags for the coordinator only (e.g. --checkpoint_every_s=60).
  std::vector<std::string> coordinator_flags;
};

// One process of the cluster.
struct Member {
  std::string role;  // "coordinator", "ps", "worker" or "chaos"
  int index = 0;     // shard or worker index, 0 otherwise
  pid_t pid = 0;
  std::string address;   // "127.0.0.1:port" (gRPC); "-" for workers
  int admin_port = 0;    // plaintext HTTP: /metrics, /healthz
  std::string dir;       // the member's folder under the root
  std::string log_file;  // stdout and stderr
};

class LocalCluster {
 public:
  // Starts the coordinator and the PS shards and waits until each serves.
  // On failure everything started so far is killed and the error names the
  // process and its log file.
  static absl::StatusOr<std::unique_ptr<LocalCluster>> Start(
      const LocalClusterOptions& options);
  // Kills (SIGKILL) whatever is still running.
  ~LocalCluster();

  const std::vector<Member>& members() const { return members_; }
  const std::string& coordinator_address() const {
    return members_.front().address;
  }
  // The process of members()[i], for fault injection.
  Subprocess* process(size_t i) { return processes_[i].get(); }

  // Sends SIGTERM to every process, waits up to `grace` for each to exit, then
  // SIGKILLs the rest. OK if every daemon exited 0 and every worker 0 or
  // 143 (drained after SIGTERM).
  absl::Status Stop(absl::Duration grace);

  // Lets every process run on after this object is destroyed.
  void Detach();

 private:
  LocalCluster() = default;
  absl::Status StartMember(const LocalClusterOptions& options,
                           const std::string& role, int index,
                           std::vector<std::string> args);
  absl::Status StartWorkers(const LocalClusterOptions& options);

  std::vector<Member> members_;
  std::vector<std::unique_ptr<Subprocess>> processes_;
};

// The state file: one member a line, "role index pid address admin_port dir
// log" (paths without spaces).
absl::Status WriteState(const std::string& path,
                        const std::vector<Member>& members);
absl::StatusOr<std::vector<Member>> ReadState(const std::string& path);

// The state file's path under a root folder.
std::string StatePath(const std::string& root_dir);

// Starts worker `index` of the cluster in `root_dir` again from its saved
// command line (detached, in its own session, log appended) and waits until
// the coordinator lists the new process as alive; updates the state file.
// Returns the new pid. What `plexus local chaos` does after each kill.
absl::StatusOr<pid_t> RestartWorker(const std::string& root_dir, int index,
                                    absl::Duration timeout);

// Waits until the coordinator at `coordinator` lists a live worker with
// process id `pid`. UNAVAILABLE when `process` (may be null) exits first,
// DEADLINE_EXCEEDED after `timeout`.
absl::Status WaitForWorker(const std::string& coordinator, pid_t pid,
                           absl::Duration timeout, Subprocess* process);

}  // namespace plexus::local
