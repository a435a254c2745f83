// The fault-injection harness of ../shared/FAULTS.md: a Plexus cluster of
// real processes (coordinator, PS shards, golden workers) started through the
// same launcher as `plexus local up` (tools/local/local_cluster.h: one
// folder, port and log per member under one root folder), plus what the
// fault cases need:
//
//  - signals to any member (SIGKILL, SIGTERM, SIGSTOP/SIGCONT) and restarts
//    at the same address on the same folder (LocalCluster::Signal,
//    LocalCluster::RestartMember);
//  - failpoints through the SetFailpoint RPC (daemons run --failpoint_rpc)
//    or PLEXUS_FAILPOINTS for workers;
//  - test hosts (NetHost): a network namespace joined to this one by a veth
//    pair, where a worker runs and can be partitioned from any port of this
//    namespace with iptables DROP rules, and healed;
//  - the golden workload: the variable, jobs of N golden steps, and the
//    bit-for-bit comparison with the failure-free result.
//
// Every process dies with the test (kill_with_parent) and the LocalCluster's
// destructor SIGKILLs and reaps whatever is left, also when a test fails; a
// NetHost's destructor removes its namespace and kills what runs inside.
// Each run of a member logs to its own file (log-1, log-2, ...).
//
// Thread safety: a FaultCluster or NetHost is used by one thread at a time.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/process.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/ps_client.h"
#include "tests/util/test_env.h"
#include "tools/local/local_cluster.h"

namespace plexus::fault {

using ::plexus::testing::ReadFile;
using ::plexus::testing::WaitFor;
// Occurrences of `needle` in `text`.
size_t CountOf(const std::string& text, const std::string& needle);
// Runs argv to completion (bounded by `timeout`); returns the exit code,
// output (stdout and stderr) in *out when not null. -1 if it cannot run.
int RunCommand(const std::vector<std::string>& argv, std::string* out = nullptr,
               absl::Duration timeout = absl::Seconds(30));

// A test host: a network namespace with one veth link to this namespace.
// Processes started through Wrap() run inside it and reach this namespace's
// daemons (bound to 0.0.0.0) at outer_ip().
class NetHost {
 public:
  // FAILED_PRECONDITION, with the reason, where namespaces cannot be made
  // (not root, no `ip`, no iptables): callers skip saying so.
  static absl::StatusOr<std::unique_ptr<NetHost>> Create();
  // Kills every process still inside, removes the namespace and the link.
  ~NetHost();

  const std::string& name() const { return ns_; }
  // This namespace's address as seen from inside the host.
  const std::string& outer_ip() const { return outer_ip_; }
  // The command line that runs `argv` inside the host.
  std::vector<std::string> Wrap(const std::vector<std::string>& argv) const;

  // Drops traffic between the host and outer_ip() on each of `ports` (a
  // daemon's: Proc::ports()). `outbound`: what the host sends to the port;
  // `inbound`: what comes back from it (the acknowledgements). Rules
  // accumulate until Heal().
  absl::Status Partition(const std::vector<int>& ports, bool outbound = true,
                         bool inbound = true);
  // Removes every rule: the link works again.
  absl::Status Heal();

 private:
  NetHost() = default;
  absl::Status Iptables(const std::vector<std::string>& args);

  std::string ns_;
  std::string outer_dev_;
  std::string outer_ip_;
  std::string inner_ip_;
};

struct FaultClusterOptions {
  // Root folder (created); every member's folder lies under it. Required.
  std::string root_dir;
  // Number of PS shards. Default 1.
  int num_ps = 1;
  // Give the coordinator --ps_shards (global checkpoints, restores after a
  // lost shard). Default false.
  bool coordinator_knows_shards = false;
  // Extra flags of the coordinator (after the short timeouts the harness
  // sets: heartbeat 100 ms, suspect 600 ms, dead 1.5 s).
  std::vector<std::string> coordinator_flags;
  // Extra flags of every shard.
  std::vector<std::string> ps_flags;
  // Address the daemons bind: "0.0.0.0" when NetHosts must reach them.
  std::string bind_host = "127.0.0.1";
  // Create the golden variable ("golden", SGD lr 1, async). Default true.
  bool create_golden_variable = true;
};

// One member of the cluster as the tests see it: a copy of the
// LocalCluster's record of members()[member], refreshed by every start and
// restart through the FaultCluster (a worker has no address).
struct Proc {
  std::string role;  // "coordinator", "ps", "worker"
  int index = 0;
  std::string dir;
  std::string log;  // of the newest run
  int port = 0;
  // Shards: the direct data plane's port, pinned across restarts like the
  // gRPC port (0 for other roles).
  int data_port = 0;
  int admin_port = 0;
  std::string address;  // "127.0.0.1:port"
  // The newest run's process, owned by the LocalCluster: valid until the
  // next start of this member.
  Subprocess* process = nullptr;
  // The newest run's command line; edits take effect at the next Restart().
  std::vector<std::string> argv;
  int runs = 0;
  size_t member = 0;  // position in LocalCluster::members()
  // Every port the daemon serves clients on (what a partition cuts).
  std::vector<int> ports() const {
    std::vector<int> p = {port};
    if (data_port != 0) p.push_back(data_port);
    return p;
  }
};

inline constexpr char kGoldenVariable[] = "golden";
inline constexpr char kGoldenJob[] = "golden-job";

class FaultCluster {
 public:
  static absl::StatusOr<std::unique_ptr<FaultCluster>> Start(
      const FaultClusterOptions& options);
  // SIGKILLs and reaps every process still running.
  ~FaultCluster();

  // The launcher underneath (what `plexus local up` runs).
  local::LocalCluster& local() { return *local_; }

  Proc& coordinator() { return coordinator_; }
  Proc& ps(int i) { return shards_[i]; }
  int num_ps() const { return static_cast<int>(shards_.size()); }
  std::vector<std::string> ps_addresses() const;
  Proc& worker(int i) { return *workers_[i]; }
  int num_workers() const { return static_cast<int>(workers_.size()); }

  // Starts golden_worker `index` with this command line (a new slot, or the
  // slot's next run: a new log; Restart() reruns the previous command line).
  // `host` (may be null): run inside that test host, reaching the daemons at
  // its outer_ip(). `failpoints`: PLEXUS_FAILPOINTS of the worker.
  absl::Status StartWorker(int index, std::vector<std::string> argv_extra = {},
                           const std::string& failpoints = "",
                           const NetHost* host = nullptr);
  // Starts the member again with its previous command line (p.argv), on the
  // same folder and port (it must have exited), and waits until it listens
  // (a worker: only until it runs).
  absl::Status Restart(Proc& p);
  // Sends `sig`; for SIGKILL also waits until the process is gone.
  absl::Status Signal(Proc& p, int sig);

  // SetFailpoint RPC to a daemon (empty action: clear).
  absl::Status SetFailpoint(const Proc& daemon, const std::string& name,
                            const std::string& action);

  // --- The golden job -----------------------------------------------------
  absl::Status Submit(uint64_t steps, int64_t no_worker_timeout_ms = 0,
                      uint32_t max_restarts = 0);
  absl::StatusOr<v1::JobStatus> Join(absl::Duration timeout);
  absl::StatusOr<v1::GetJobStatusResponse> JobStatus();
  // closures_succeeded of the job (0 if unknown).
  uint64_t Succeeded();
  // The golden variable (retries for up to `timeout` while a shard
  // restores).
  absl::StatusOr<std::vector<float>> Values(
      absl::Duration timeout = absl::Seconds(30));
  // OK when the variable equals the golden values of `steps` steps bit for
  // bit; otherwise an error saying where they differ.
  absl::Status CheckGolden(uint64_t steps);
  // Joins the job and checks it succeeded with exactly `steps` closures
  // total and succeeded and golden values.
  absl::Status CheckJobGolden(uint64_t steps, absl::Duration timeout);

  // The value of one series (e.g. `plexus_ps_pushes_total{outcome="applied"}`)
  // on a daemon's /metrics; -1 if the daemon does not answer or lacks it.
  double Metric(const Proc& daemon, const std::string& series);

  v1::Coordinator::Stub* coordinator_stub() { return stub_.get(); }
  worker::PsClient* ps_client() { return ps_.get(); }
  // A short summary of every member's log tail, for failure messages.
  std::string Logs(size_t tail_bytes = 3000) const;

 private:
  FaultCluster() = default;
  // Copies the LocalCluster's record of p.member into p.
  void Sync(Proc& p);

  std::unique_ptr<local::LocalCluster> local_;
  std::vector<Proc> shards_;
  Proc coordinator_;
  std::vector<std::unique_ptr<Proc>> workers_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::unique_ptr<worker::PsClient> ps_;
};

}  // namespace plexus::fault
