// Membership: who is in the cluster. A pure state machine over registrations
// (no I/O, no timers; the health module decides when a process is dead and
// tells Membership through MarkDead).
//
// Identity. Register gives a process a worker id and a fresh incarnation:
//   * (role, task_index) when task_index >= 0: the same task always gets the
//     same worker id (a restarted worker 3 is still worker 3);
//   * else previous_worker_id when it names a known process of the same role;
//   * else a new worker id.
// Incarnations are (coordinator_epoch << 32 | sequence): every registration
// gets a larger one than any before it, also across coordinator restarts
// (which bump the epoch). Registering again replaces the worker's incarnation;
// the old one is stale from then on: CheckCurrent() refuses it with
// FAILED_PRECONDITION, as it refuses a dead or left incarnation.
//
// Restart budget. Registering again after a failure (the previous incarnation
// was alive or dead, not cleanly left) counts as a restart of that worker.
// When a worker's restarts exceed max_restarts_per_worker, Register still
// succeeds, but Registration::budget_status is RESOURCE_EXHAUSTED with a
// message naming the worker: the caller fails the job with it.
//
// Thread safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "coordinator/membership/cluster_spec.h"

namespace plexus::coordinator::membership {

struct MembershipOptions {
  // This coordinator's epoch; >= 1 and < 2^31. A restarted coordinator uses
  // the stored epoch + 1.
  uint64_t coordinator_epoch = 1;
  // The expected processes. Empty: every process registers dynamically.
  ClusterSpec cluster;
  // Restarts allowed per worker before the job fails. -1: unlimited.
  int max_restarts_per_worker = -1;
};

// The life-cycle states Membership knows (suspicion belongs to health).
enum class ProcessState { kAlive = 0, kDead = 1, kLeft = 2 };
absl::string_view ProcessStateName(ProcessState state);

// What a process tells Register.
struct RegisterRequest {
  Role role = Role::kWorker;
  // Index in the cluster spec; -1: a dynamic process.
  int task_index = -1;
  // "host:port" it serves on; required for a PS (or taken from the spec).
  std::string address;
  std::string hostname;
  int64_t pid = 0;
  // Step functions it can run.
  std::vector<std::string> step_functions;
  bool has_gpu = false;
  // Its id before a restart, when it has no task_index. 0: none.
  uint64_t previous_worker_id = 0;
};

// One process as Membership knows it.
struct ProcessRecord {
  uint64_t worker_id = 0;
  // Current incarnation; 0 for a spec entry nobody registered yet.
  uint64_t incarnation = 0;
  Role role = Role::kWorker;
  int task_index = -1;
  std::string address;
  std::string hostname;
  int64_t pid = 0;
  std::vector<std::string> step_functions;
  bool has_gpu = false;
  ProcessState state = ProcessState::kAlive;
  // Re-registrations after a failure.
  uint32_t restarts = 0;
  // When the current incarnation registered; InfinitePast: never.
  absl::Time registered_at = absl::InfinitePast();
  // Why it is dead or left. Empty otherwise.
  std::string reason;
};

// "worker 3 (id 7, host h1)" / "worker id 9 (host h2)": how errors name it.
std::string DescribeProcess(const ProcessRecord& record);

// Register's answer.
struct Registration {
  uint64_t worker_id = 0;
  uint64_t incarnation = 0;
  uint64_t coordinator_epoch = 0;
  int task_index = -1;
  // The incarnation this registration replaced, whose in-flight work must be
  // re-queued and whose writes must be refused. 0: none (a new process, or
  // one whose previous incarnation was already dead or left).
  uint64_t replaced_incarnation = 0;
  // Restarts of this worker so far (this one included).
  uint32_t restarts = 0;
  // OK, or RESOURCE_EXHAUSTED naming the worker when this restart exceeded
  // the budget (the registration itself still took effect).
  absl::Status budget_status;
};

// Everything needed to rebuild Membership after a coordinator restart.
struct MembershipSnapshot {
  uint64_t coordinator_epoch = 0;
  uint64_t next_worker_id = 1;
  std::vector<ProcessRecord> processes;  // registered ones, by worker id
};

class Membership {
 public:
  // `clock` is borrowed and must outlive this object.
  Membership(MembershipOptions options, Clock* clock);
  // Rebuilds from a snapshot taken by an earlier coordinator.
  // INVALID_ARGUMENT unless options.coordinator_epoch > snapshot's epoch
  // (a restarted coordinator must fence out the older one).
  static absl::StatusOr<std::unique_ptr<Membership>> Restore(
      const MembershipSnapshot& snapshot, MembershipOptions options,
      Clock* clock);

  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  uint64_t coordinator_epoch() const { return epoch_; }

  // Registers (or re-registers) a process; see the header comment.
  // INVALID_ARGUMENT: a task_index outside the cluster spec for that role
  // (when the spec lists the role), a PS without an address, a bad address.
  absl::StatusOr<Registration> Register(const RegisterRequest& request);

  // OK when `incarnation` is worker_id's current, live incarnation.
  // FAILED_PRECONDITION (saying "register again") for an unknown worker, an
  // older incarnation, or one declared dead or left.
  absl::Status CheckCurrent(uint64_t worker_id, uint64_t incarnation) const;
  bool IsCurrent(uint64_t worker_id, uint64_t incarnation) const {
    return CheckCurrent(worker_id, incarnation).ok();
  }

  // Declares the incarnation dead (heartbeat timeout, RPC failure): it is
  // fenced out until the process registers again. Idempotent; a stale
  // incarnation is ignored (returns false); true when it changed state.
  bool MarkDead(uint64_t worker_id, uint64_t incarnation,
                absl::string_view reason);
  // The process left cleanly (its last heartbeat said LEFT). Same rules.
  bool MarkLeft(uint64_t worker_id, uint64_t incarnation,
                absl::string_view reason);

  // Changes the restart budget (a job's max_restarts_per_worker). -1:
  // unlimited. Does not fail workers already over it.
  void SetMaxRestartsPerWorker(int max_restarts);

  // One process; NOT_FOUND if never registered.
  absl::StatusOr<ProcessRecord> Get(uint64_t worker_id) const;
  // Registered processes ordered by role, task_index, worker_id. Dead and
  // left ones only with include_dead; with include_unclaimed, also the spec
  // entries nobody registered yet (worker_id 0).
  std::vector<ProcessRecord> List(bool include_dead = false,
                                  bool include_unclaimed = false) const;
  // Live processes that registered `function`.
  std::vector<uint64_t> LiveWorkersWithFunction(
      absl::string_view function) const;

  MembershipSnapshot Snapshot() const;

 private:
  uint64_t NextIncarnation() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  Clock* const clock_;
  const uint64_t epoch_;
  const ClusterSpec cluster_;

  mutable absl::Mutex mu_;
  int max_restarts_ ABSL_GUARDED_BY(mu_);
  uint64_t next_worker_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint32_t incarnation_seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, ProcessRecord> processes_ ABSL_GUARDED_BY(mu_);
  // (role, task_index) -> worker id, for processes with a task index.
  std::map<std::pair<Role, int>, uint64_t> by_task_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::coordinator::membership
