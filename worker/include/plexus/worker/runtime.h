// The worker runtime: what a training program runs to take part in a Plexus
// job. It connects to the coordinator, registers (capabilities = the names of
// the registered step functions), keeps a heartbeat stream on its own thread
// (liveness + progress in, commands out), and runs the task loop:
// NextTask -> the step function -> ReportResult.
//
//   auto rt = plexus::worker::Runtime::Create({.coordinator = "host:port",
//                                              .ps_shards = {...}});
//   (*rt)->RegisterStep("train", [](absl::string_view args,
//                                   plexus::worker::StepContext& ctx)
//                                    -> absl::StatusOr<std::string> { ... });
//   absl::Status st = (*rt)->Run();
//   return st.ok() ? (*rt)->exit_code() : 1;
//
// Failures it handles:
//   * coordinator unreachable or restarted: calls are retried with backoff,
//     the heartbeat stream reconnects with the same id and incarnation;
//   * fenced out (the coordinator declared this incarnation dead, e.g. after
//     a SIGSTOP): the running step's pushes are refused, its report dropped,
//     and the worker registers again with a new incarnation and takes new
//     work. Pushes need a heartbeat lease: a push is sent only while the last
//     acknowledged heartbeat was sent less than suspect_timeout ago, so a
//     process that was stopped past its timeout cannot write before it has
//     learnt whether it was fenced;
//   * SIGTERM (preemption notice): no new work is taken; the running step is
//     finished and reported (or, past drain_grace, handed back when it
//     returns early through StepContext::cancelled()); the last heartbeat
//     says LEFT; Run returns OK and exit_code() is 143.
//
// Failpoint: `worker.step.after_push_before_report` (after the step function
// returned, before the report is sent).
//
// Thread safety: Create and RegisterStep from one thread before Run; Stop
// from any thread; worker_id/incarnation from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plexus/v1/coordinator.pb.h"
#include "plexus/worker/step_registry.h"

namespace plexus::worker {

struct RuntimeOptions {
  // Coordinator address "host:port". Required.
  std::string coordinator;
  // Index among workers in the cluster spec (TF_CONFIG task.index); -1: a
  // dynamic worker (default).
  int task_index = -1;
  // PS shard addresses (standalone shard map, shard i at ps_shards[i]).
  // Empty: StepContext::ps() is null.
  std::vector<std::string> ps_shards;
  // Deadline of one control RPC (Register, ReportResult), retries included.
  // Default 60 s.
  absl::Duration rpc_timeout = absl::Seconds(60);
  // How long one NextTask waits on the coordinator. Default 1 s.
  absl::Duration next_task_wait = absl::Seconds(1);
  // After SIGTERM, how long the running step may take before it is told to
  // stop (StepContext::cancelled). 0 (default): no limit, it finishes.
  absl::Duration drain_grace = absl::ZeroDuration();
  // Handle SIGTERM as described above (blocks it in every thread; Create must
  // then run before any other thread starts). Default true.
  bool handle_sigterm = true;
  // TLS to the coordinator and the PS shards (PEM files): the CA their
  // certificates chain to, and this worker's certificate and key where they
  // require mutual TLS. All empty (default): plaintext.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Token for a coordinator and PS shards that require one (sent as
  // "authorization: Bearer ..."). Empty (default): --token_file,
  // $PLEXUS_TOKEN_FILE or $PLEXUS_TOKEN, else none.
  std::string token;
};

class Runtime {
 public:
  // Checks the options; connects nothing yet. INVALID_ARGUMENT: no
  // coordinator address or half-set TLS options; NOT_FOUND /
  // PERMISSION_DENIED: a TLS file that cannot be read.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(
      RuntimeOptions options);
  virtual ~Runtime() = default;

  // Adds a step function (see StepRegistry::Register). REQUIRES: before Run.
  virtual absl::Status RegisterStep(const std::string& name, StepFn fn) = 0;

  // Registers and runs the task loop until SIGTERM, Stop(), or a StopCommand
  // from the coordinator; returns OK then. Fails only on errors no retry can
  // fix (bad options, a permanent Register error). Call once.
  virtual absl::Status Run() = 0;

  // Makes Run drain and return (like SIGTERM, but exit_code() stays 0).
  virtual void Stop() = 0;

  // 143 after SIGTERM, the StopCommand's code after one, 0 otherwise.
  virtual int exit_code() const = 0;

  // Current identity; 0 before the first registration.
  virtual uint64_t worker_id() const = 0;
  virtual uint64_t incarnation() const = 0;

  // ---- rendezvous and collective groups, through the coordinator ----
  //
  // The key-value store collectives bootstrap through, namespaced by (group,
  // group_epoch), and collective-group membership (coordinator.proto's
  // Rendezvous* / JoinGroup / BumpGroupEpoch). Callable from step functions
  // and other threads once Run() has registered (worker_id() != 0; before,
  // FAILED_PRECONDITION). Errors are the coordinator's: DEADLINE_EXCEEDED,
  // FAILED_PRECONDITION with REASON_STALE_GROUP_EPOCH once the group moved
  // on, NOT_FOUND for a missing key or group.

  virtual absl::Status RendezvousSet(const std::string& group,
                                     uint64_t group_epoch,
                                     const std::string& key,
                                     const std::string& value) = 0;
  virtual absl::StatusOr<std::string> RendezvousGet(const std::string& group,
                                                    uint64_t group_epoch,
                                                    const std::string& key) = 0;
  // Values of `keys`, in order, once all exist.
  virtual absl::StatusOr<std::vector<std::string>> RendezvousWait(
      const std::string& group, uint64_t group_epoch,
      const std::vector<std::string>& keys, absl::Time deadline) = 0;
  // Joins `group` (of `size` members) and waits until it is complete.
  virtual absl::StatusOr<v1::GroupInfo> JoinGroup(const std::string& group,
                                                  uint32_t size, bool has_gpu,
                                                  absl::Time deadline) = 0;
  // Reports that `expected_epoch` of `group` failed (rank `failed_rank`, -1:
  // unknown); returns the group at its new epoch.
  virtual absl::StatusOr<v1::GroupInfo> BumpGroupEpoch(
      const std::string& group, uint64_t expected_epoch, int failed_rank,
      const std::string& reason) = 0;
  // Called on the heartbeat thread when the coordinator says a group this
  // worker belongs to moved to a new epoch (a member died or left): abort
  // collectives of older epochs and JoinGroup again. REQUIRES: before Run.
  virtual void OnReformGroup(
      std::function<void(const v1::ReformGroupCommand&)> fn) = 0;
};

}  // namespace plexus::worker
