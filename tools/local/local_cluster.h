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
// (With LocalClusterOptions::log_per_run each run of a member logs to its own
// log-1, log-2, ... instead of appending to `log`.)
//
// Beyond starting and stopping, a LocalCluster drives its members for fault
// injection (tests/fault runs on it): StartWorker adds workers one at a time
// (with their own environment, or inside a network namespace through a
// wrapper command), Signal delivers any signal, RestartMember starts a member
// that exited again from its command line, a daemon on the same folder and
// ports.
//
// Thread safety: a LocalCluster is used by one thread at a time.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
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
  // Extra flags for the PS shards only. Default none.
  std::vector<std::string> ps_flags;
  // Each run of a member logs to its own file, <dir>/log-<run> (1, 2, ...),
  // instead of appending every run to <dir>/log. Default false.
  bool log_per_run = false;
};

// How to start one training worker (LocalCluster::StartWorker).
struct WorkerOptions {
  // The program and its own flags (argv[0] first); the launcher appends
  // --coordinator, --ps (every shard) and --task_index. Required.
  std::vector<std::string> argv;
  // Extra environment variables (e.g. PLEXUS_FAILPOINTS). Default none.
  std::vector<std::pair<std::string, std::string>> env;
  // Host part of the daemons' addresses handed to the worker. Default
  // "127.0.0.1"; a worker in another network namespace reaches them at this
  // namespace's address there (the daemons must listen on it: --host).
  std::string daemon_host = "127.0.0.1";
  // Command line prefix, e.g. {"ip", "netns", "exec", "<ns>"}. It must exec
  // the program, so that the member's pid is the worker's. Default none.
  std::vector<std::string> wrapper;
  // Wait (up to start_timeout) until the coordinator lists the worker as
  // alive, at this start and at every RestartMember. Default true.
  bool wait_until_registered = true;
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
  // The process of members()[i]'s newest run (replaced by a restart).
  Subprocess* process(size_t i) { return runs_[i].process.get(); }
  // The gRPC port of members()[i]; 0 for workers.
  int port(size_t i) const { return runs_[i].port; }
  // How many times members()[i] was started.
  int runs(size_t i) const { return runs_[i].runs; }
  // The command line of members()[i]'s newest run (a daemon's names the
  // ports it got). RestartMember runs it again: edit it in between to change
  // a flag (e.g. drop a --failpoints=...).
  std::vector<std::string>& command_line(size_t i) { return runs_[i].argv; }
  // The position in members() of `role` `index`; NOT_FOUND if none.
  absl::StatusOr<size_t> Find(const std::string& role, int index) const;

  // Starts worker `index` (>= 0): a new member, or the next run of worker
  // `index`, in the same folder with this command line, once its previous
  // run has exited (FAILED_PRECONDITION while it runs). Returns its position
  // in members(). Updates the state file. When the wait for registration
  // fails the run stays (Find finds it) and the error names its log.
  absl::StatusOr<size_t> StartWorker(int index, const WorkerOptions& options);

  // Starts members()[i] again from command_line(i) once it has exited
  // (FAILED_PRECONDITION while it runs): a daemon on the same data folder and
  // the same gRPC and admin ports, waiting until it listens (its port file);
  // a worker waiting for its registration if it was started so. Updates
  // members()[i] (pid, log file) and the state file, also when the wait
  // fails.
  absl::Status RestartMember(size_t i);

  // Sends `sig` to members()[i]; for SIGKILL also waits (up to 10 s) until
  // the process is gone and reaped. FAILED_PRECONDITION if it was reaped.
  absl::Status Signal(size_t i, int sig);

  // Sends SIGTERM to every process, waits up to `grace` for each to exit, then
  // SIGKILLs the rest. OK if every daemon exited 0 and every worker 0 or
  // 143 (drained after SIGTERM).
  absl::Status Stop(absl::Duration grace);

  // Lets every process run on after this object is destroyed.
  void Detach();

 private:
  // How members_[i] runs: its newest process and what a restart needs.
  struct Run {
    std::unique_ptr<Subprocess> process;
    std::vector<std::string> argv;
    std::vector<std::pair<std::string, std::string>> env;
    int port = 0;  // daemons
    int runs = 0;
    bool wait_until_registered = false;  // workers
  };

  explicit LocalCluster(const LocalClusterOptions& options)
      : options_(options) {}
  // Adds daemon `role` `index` on port 0 and starts it.
  absl::Status StartDaemon(const std::string& role, int index,
                           std::vector<std::string> args);
  // Starts members_[i]'s next run from runs_[i] (it must not be running).
  absl::Status Launch(size_t i);
  // Launch, then waits for the port files (a daemon's first run learns its
  // ports and pins them in its command line).
  absl::Status LaunchDaemon(size_t i);
  // Adds worker `index` or reuses its slot, and launches it (no wait).
  absl::StatusOr<size_t> LaunchWorker(int index, const WorkerOptions& options);
  absl::Status WaitForRegistration(size_t i);
  absl::Status StartWorkers();

  // Constant after construction.
  const LocalClusterOptions options_;
  // members_[i] runs as runs_[i].
  std::vector<Member> members_;
  std::vector<Run> runs_;
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
