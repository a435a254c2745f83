// The gRPC face of the coordinator: glue between coordinator.proto and the
// logic modules (membership, health, scheduling, rendezvous) and the state
// store. No decisions are made here: each handler fences the caller
// (Membership::CheckCurrent), calls the modules in the order
// tests/coordinator/logic_test.cc's MiniCoordinator shows, converts types and
// converts errors once (ToGrpcStatus, with an ErrorInfo reason taken from the
// logic modules' ErrorReason payload).
//
// Background: Start() runs one thread that drives the failure detector with
// the real clock (Poll at FailureDetector::NextDeadline, or every heartbeat
// interval), turns DEAD/LEFT into Membership::MarkDead/MarkLeft,
// Scheduler::RemoveWorker and Rendezvous::MemberDied, calls Scheduler::Tick
// and Rendezvous::Tick, and saves dirty state at `save_interval`.
//
// Persistence (F9): with a data_dir, Create() opens <data_dir>/state, bumps
// the stored epoch (so an older coordinator is fenced out), restores
// membership and the scheduler from the stored snapshots and tracks every
// process that was alive, so live workers simply reconnect their heartbeat
// stream and carry on. Registrations, submissions, schedules and
// cancellations are saved before the RPC answers; reports at the save
// cadence, as are dispatches (a report lost in a crash re-runs its closure,
// and the PS de-duplicates the re-run's pushes by closure id).
//
// Metrics (/metrics): plexus_coordinator_workers_alive,
// _restarts_total, _steps_dispatched_total, _finished_total,
// _requeued_total, _dispatch_latency_seconds. Failpoint:
// coordinator.after_dispatch_before_record (NextTask, after the scheduler
// handed a closure out, before it is recorded or answered).
//
// Checkpoints (TriggerCheckpoint, ListCheckpoints, Restore) are
// coordinator/checkpointing's Checkpointer over the shards in
// options.ps_shards (checkpoint_glue.h: gRPC driver, manifests in
// <data_dir>/checkpoints/manifests). A second thread calls
// Checkpointer::Poll every 200 ms: it notices a lost or restarted PS shard,
// pauses dispatch and restores every shard to the newest checkpoint (F7),
// and takes the periodic checkpoints. TriggerCheckpoint always waits for
// the outcome (wait=false is treated as true). The state is saved before a
// manifest is published. Without a data_dir the checkpoint RPCs are
// FAILED_PRECONDITION. Checkpoint failpoints:
// coordinator.checkpoint.before_manifest (after every shard committed),
// coordinator.checkpoint.before_manifest_rename (manifest fsynced, not yet
// renamed), coordinator.checkpoint.after_manifest_before_finalize.
//
// Resource and ReportShardReady RPCs answer UNIMPLEMENTED, and GetShardMap
// an empty map (version 0), until their issues land.
//
// Status and logs: StatusPage() renders status_page.h's page from
// membership, health, the scheduler, the checkpointer and a ring of the last
// kMaxEvents events. Each event a person cares about -- a process joined,
// died, left or came back (worker id, incarnation), a job submitted,
// finished or failed (job id, steps), a checkpoint published or failed, a
// restore or PS recovery -- is logged once at INFO/WARNING through
// RecordEvent, which also puts it in the ring. The checkpointer logs its own
// checkpoint and restore lines; for those the ring gets the event without a
// second log line. Per-call details are VLOG(1).
//
// One service per process: /metrics reads the newest one created.
//
// Thread safety: gRPC calls the handlers from many threads at once; Start()
// and Shutdown() from main().
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/tls.h"
#include "coordinator/checkpointing/checkpointer.h"
#include "coordinator/health/failure_detector.h"
#include "coordinator/membership/cluster_spec.h"
#include "coordinator/membership/membership.h"
#include "coordinator/rendezvous/rendezvous.h"
#include "coordinator/scheduling/scheduler.h"
#include "coordinator/service/status_page.h"
#include "coordinator/state/state_store.h"
#include "plexus/v1/coordinator.grpc.pb.h"

namespace plexus::coordinator {

struct CoordinatorServiceOptions {
  // Folder for the state store (<data_dir>/state). Empty: nothing persisted,
  // epoch 1 (unit tests).
  std::string data_dir;
  // The expected processes. Empty: every process registers dynamically.
  membership::ClusterSpec cluster;
  // What Register tells processes. Default 1 s.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  // Failure detector timeouts. Defaults 5 s / 15 s.
  absl::Duration suspect_timeout = absl::Seconds(5);
  absl::Duration dead_timeout = absl::Seconds(15);
  // A worker whose heartbeat stream closed (without saying LEFT) and did not
  // reopen within this is dead (health/failure_detector.h); 0: only the
  // timeouts. Must exceed the heartbeat interval. Default 3 s.
  absl::Duration disconnect_timeout = absl::Seconds(3);
  // Restarts allowed per worker before its job fails; -1: unlimited. A job's
  // own max_restarts_per_worker overrides it.
  int max_restarts_per_worker = -1;
  // Join's UNAVAILABLE bound when a job sets none. Default 60 s.
  absl::Duration no_worker_timeout = absl::Seconds(60);
  // Longest a report waits before the state holding it is saved.
  absl::Duration save_interval = absl::Milliseconds(200);
  // PS shard addresses in shard order, for checkpoints and PS recovery.
  // Empty: the cluster spec's ps list.
  std::vector<std::string> ps_shards;
  // TLS towards the shards (their CA; a client certificate where they
  // require mutual TLS). All empty (default): plaintext.
  ClientTlsOptions ps_tls;
  // Retention, periodic checkpoints, timeouts (epoch is filled in).
  checkpointing::CheckpointerOptions checkpoint;
};

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  // Opens and restores the state (see above). FAILED_PRECONDITION /
  // DATA_LOSS from the store; INVALID_ARGUMENT for bad timeouts.
  static absl::StatusOr<std::unique_ptr<CoordinatorService>> Create(
      CoordinatorServiceOptions options);
  ~CoordinatorService() override;

  // The coordinator's epoch: bumped on every restart, so an older coordinator
  // that wakes up is fenced out.
  uint64_t epoch() const { return epoch_; }

  // Starts the background thread. Call once, after Daemon::Start (which
  // must run before any thread is started).
  void Start();
  // Stops the background thread, wakes every waiting call (they answer
  // UNAVAILABLE or their current state), saves the state. Idempotent.
  void Shutdown();

  // The status page (HTML), for GET /status on the admin port. Any thread.
  std::string StatusPage();

  // Events kept for the status page.
  static constexpr size_t kMaxEvents = 50;

  grpc::Status Register(grpc::ServerContext* ctx,
                        const v1::RegisterRequest* req,
                        v1::RegisterResponse* resp) override;
  grpc::Status Heartbeat(
      grpc::ServerContext* ctx,
      grpc::ServerReaderWriter<v1::HeartbeatResponse, v1::HeartbeatRequest>*
          stream) override;
  grpc::Status ListProcesses(grpc::ServerContext* ctx,
                             const v1::ListProcessesRequest* req,
                             v1::ListProcessesResponse* resp) override;
  grpc::Status GetShardMap(grpc::ServerContext* ctx,
                           const v1::GetShardMapRequest* req,
                           v1::GetShardMapResponse* resp) override;
  grpc::Status NextTask(grpc::ServerContext* ctx,
                        const v1::NextTaskRequest* req,
                        v1::NextTaskResponse* resp) override;
  grpc::Status ReportResult(grpc::ServerContext* ctx,
                            const v1::ReportResultRequest* req,
                            v1::ReportResultResponse* resp) override;
  grpc::Status SubmitJob(grpc::ServerContext* ctx,
                         const v1::SubmitJobRequest* req,
                         v1::SubmitJobResponse* resp) override;
  grpc::Status Schedule(grpc::ServerContext* ctx,
                        const v1::ScheduleRequest* req,
                        v1::ScheduleResponse* resp) override;
  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest* req,
                    v1::JoinResponse* resp) override;
  grpc::Status Fetch(grpc::ServerContext* ctx, const v1::FetchRequest* req,
                     v1::FetchResponse* resp) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx,
                         const v1::CancelJobRequest* req,
                         v1::CancelJobResponse* resp) override;
  grpc::Status GetJobStatus(grpc::ServerContext* ctx,
                            const v1::GetJobStatusRequest* req,
                            v1::GetJobStatusResponse* resp) override;
  grpc::Status RendezvousSet(grpc::ServerContext* ctx,
                             const v1::RendezvousSetRequest* req,
                             v1::RendezvousSetResponse* resp) override;
  grpc::Status RendezvousGet(grpc::ServerContext* ctx,
                             const v1::RendezvousGetRequest* req,
                             v1::RendezvousGetResponse* resp) override;
  grpc::Status RendezvousWait(grpc::ServerContext* ctx,
                              const v1::RendezvousWaitRequest* req,
                              v1::RendezvousWaitResponse* resp) override;
  grpc::Status JoinGroup(grpc::ServerContext* ctx,
                         const v1::JoinGroupRequest* req,
                         v1::JoinGroupResponse* resp) override;
  grpc::Status GetGroup(grpc::ServerContext* ctx,
                        const v1::GetGroupRequest* req,
                        v1::GetGroupResponse* resp) override;
  grpc::Status BumpGroupEpoch(grpc::ServerContext* ctx,
                              const v1::BumpGroupEpochRequest* req,
                              v1::BumpGroupEpochResponse* resp) override;
  grpc::Status SetFailpoint(grpc::ServerContext* ctx,
                            const v1::SetFailpointRequest* request,
                            v1::SetFailpointResponse* response) override;
  grpc::Status TriggerCheckpoint(grpc::ServerContext* ctx,
                                 const v1::TriggerCheckpointRequest* req,
                                 v1::TriggerCheckpointResponse* resp) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* ctx,
                               const v1::ListCheckpointsRequest* req,
                               v1::ListCheckpointsResponse* resp) override;
  grpc::Status Restore(grpc::ServerContext* ctx,
                       const v1::RestoreCheckpointRequest* req,
                       v1::RestoreCheckpointResponse* resp) override;

 private:
  // FAILED_PRECONDITION when checkpoints are not set up.
  absl::StatusOr<checkpointing::Checkpointer*> GetCheckpointer() const;
  void CheckpointLoop();
  CoordinatorService(CoordinatorServiceOptions options, uint64_t epoch,
                     std::unique_ptr<state::StateStore> store);

  void FillHeader(v1::ResponseHeader* h) const;
  // Fences a worker request: its (worker_id, incarnation) must be current.
  absl::Status CheckCaller(const v1::RequestHeader& h) const;
  // Acts on the failure detector's transitions and ticks the waiters.
  void PollHealth();
  void Loop();
  // Saves membership + scheduler now.
  absl::Status SaveNow();
  // Notes state to save at the next cadence.
  void MarkDirty() { dirty_.store(true, std::memory_order_relaxed); }
  // Queues ReformGroupCommands for the survivors.
  void QueueNotices(const std::vector<rendezvous::ReformNotice>& notices);
  // Fails every running job when a registration exceeded its budget.
  void EnforceBudget(const membership::Registration& reg);
  void CollectMetrics();
  // Logs `text` at the severity's level, as from the caller's line (unless
  // `log` is false: it was logged elsewhere), and keeps it in the event ring.
  void RecordEvent(EventSeverity severity, std::string kind, std::string text,
                   bool log = true,
                   // The caller's place (std::source_location is not usable
                   // with clang 14, which builds the fuzzers).
                   const char* file = __builtin_FILE(),
                   int line = __builtin_LINE());
  // Records jobs that finished since the last call (from the health loop).
  void WatchJobs();
  // Records checkpoints published since the last call.
  void WatchCheckpoints();
  // ListProcesses' answer without the call around it.
  void FillProcesses(bool include_dead, v1::Role role,
                     v1::ListProcessesResponse* resp);

  // Constant after construction.
  const CoordinatorServiceOptions options_;
  const uint64_t epoch_;
  const uint64_t server_incarnation_;
  const std::unique_ptr<state::StateStore> store_;  // null: no persistence
  Clock* const clock_;

  // Set once by Create() (restore), then only used through their own locks.
  std::unique_ptr<membership::Membership> membership_;
  std::unique_ptr<scheduling::Scheduler> scheduler_;
  health::FailureDetector health_;
  rendezvous::Rendezvous rendezvous_;

  std::atomic<bool> dirty_{false};
  std::atomic<bool> stopping_{false};

  absl::Mutex mu_;
  absl::CondVar cv_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Commands waiting for a worker's next heartbeat ack, by worker id.
  std::map<uint64_t, std::vector<v1::HeartbeatResponse>> pending_
      ABSL_GUARDED_BY(mu_);
  // Restarts counted in the metric so far, by worker id.
  std::map<uint64_t, uint32_t> restarts_seen_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
  std::thread checkpoint_thread_;
  // Set once by Create(); null without a data_dir.
  std::unique_ptr<checkpointing::ShardDriver> shard_driver_;
  std::unique_ptr<checkpointing::ManifestStore> manifests_;
  std::unique_ptr<checkpointing::Checkpointer> checkpointer_;
  // Serialises saves so snapshots are written in the order they are taken.
  absl::Mutex save_mu_;

  absl::Mutex events_mu_;
  // Newest last, at most kMaxEvents.
  std::deque<StatusEvent> events_ ABSL_GUARDED_BY(events_mu_);
  // Jobs submitted (or running at restore), oldest first, and those whose
  // end was recorded.
  std::vector<std::string> jobs_seen_ ABSL_GUARDED_BY(events_mu_);
  std::map<std::string, bool> job_ended_ ABSL_GUARDED_BY(events_mu_);
  // Newest published checkpoint already recorded.
  uint64_t last_checkpoint_seen_ ABSL_GUARDED_BY(events_mu_) = 0;
};

}  // namespace plexus::coordinator
