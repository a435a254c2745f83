#include "coordinator/service/coordinator_service.h"

#include <glog/logging.h>

#include <algorithm>
#include <utility>

#include "absl/base/call_once.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/error_info.h"
#include "common/failpoint.h"
#include "common/failpoint_rpc.h"
#include "common/grpc_status.h"
#include "common/incarnation.h"
#include "common/metrics.h"
#include "common/status.h"
#include "coordinator/membership/names.h"
#include "coordinator/service/checkpoint_glue.h"

namespace plexus::coordinator {
namespace {

// Blocking calls wait in slices this long, so a drain ends them promptly.
constexpr absl::Duration kWaitSlice = absl::Milliseconds(250);

v1::ErrorInfo::Reason ToProto(ErrorReason r) {
  switch (r) {
    case ErrorReason::kStaleIncarnation:
      return v1::ErrorInfo::REASON_STALE_INCARNATION;
    case ErrorReason::kStaleGroupEpoch:
      return v1::ErrorInfo::REASON_STALE_GROUP_EPOCH;
    case ErrorReason::kPeerDead:
      return v1::ErrorInfo::REASON_PEER_DEAD;
    case ErrorReason::kRestartBudgetExceeded:
      return v1::ErrorInfo::REASON_RESTART_BUDGET_EXCEEDED;
  }
  return v1::ErrorInfo::REASON_UNSPECIFIED;
}

// The one conversion of a logic module's status to the wire.
grpc::Status ToGrpc(absl::Status s) {
  if (!s.ok() && !GetErrorInfo(s).has_value()) {
    if (std::optional<ErrorReason> r = GetReason(s)) {
      v1::ErrorInfo info;
      info.set_reason(ToProto(*r));
      s = WithErrorInfo(std::move(s), info);
    }
  }
  return ToGrpcStatus(s);
}

v1::StatusProto ToStatusProto(const absl::Status& s) {
  v1::StatusProto p;
  p.set_code(static_cast<int>(s.code()));
  p.set_message(std::string(s.message()));
  if (std::optional<ErrorReason> r = GetReason(s)) {
    p.mutable_error_info()->set_reason(ToProto(*r));
  }
  return p;
}

absl::Status FromStatusProto(const v1::StatusProto& p) {
  if (p.code() == 0) {
    return absl::UnknownError(
        absl::StrCat("closure error with code OK: ", p.message()));
  }
  return absl::Status(static_cast<absl::StatusCode>(p.code()), p.message());
}

// A negative wait is a caller's mistake, not "for ever" (a client without a
// deadline would hold a server thread indefinitely).
absl::Status NegativeTimeout(int64_t timeout_ms) {
  return absl::InvalidArgumentError(absl::StrCat(
      "timeout_ms must be >= 0 (0: until the call's own deadline); got ",
      timeout_ms));
}

absl::Time DeadlineOf(const grpc::ServerContext* ctx, Clock* clock,
                      int64_t timeout_ms) {
  absl::Time d = absl::InfiniteFuture();
  auto cd = ctx->deadline();
  if (cd != std::chrono::system_clock::time_point::max()) {
    d = absl::FromChrono(cd);
  }
  if (timeout_ms > 0) {
    d = std::min(d, clock->Now() + absl::Milliseconds(timeout_ms));
  }
  return d;
}

int64_t UnixMs(absl::Time t) {
  if (t == absl::InfinitePast() || t == absl::InfiniteFuture()) return 0;
  return absl::ToUnixMillis(t);
}

absl::StatusOr<membership::Role> RoleOf(v1::Role r) {
  switch (r) {
    case v1::ROLE_CHIEF:
      return membership::Role::kChief;
    case v1::ROLE_WORKER:
      return membership::Role::kWorker;
    case v1::ROLE_PS:
      return membership::Role::kPs;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "role must be chief, worker or ps, got ", v1::Role_Name(r)));
  }
}

v1::Role ToProto(membership::Role r) {
  switch (r) {
    case membership::Role::kChief:
      return v1::ROLE_CHIEF;
    case membership::Role::kWorker:
      return v1::ROLE_WORKER;
    case membership::Role::kPs:
      return v1::ROLE_PS;
  }
  return v1::ROLE_UNSPECIFIED;
}

void ToProto(const scheduling::JobStatus& s, v1::JobStatus* out) {
  out->set_job_id(s.job_id);
  switch (s.state) {
    case scheduling::JobState::kRunning:
      out->set_state(v1::JOB_STATE_RUNNING);
      break;
    case scheduling::JobState::kSucceeded:
      out->set_state(v1::JOB_STATE_SUCCEEDED);
      break;
    case scheduling::JobState::kFailed:
      out->set_state(v1::JOB_STATE_FAILED);
      break;
    case scheduling::JobState::kCancelled:
      out->set_state(v1::JOB_STATE_CANCELLED);
      break;
  }
  out->set_closures_total(s.closures_total);
  out->set_closures_succeeded(s.closures_succeeded);
  out->set_closures_running(s.closures_running);
  out->set_closures_queued(s.closures_queued);
  out->set_closures_failed(s.closures_failed);
  out->set_requeues(s.requeues);
  out->set_completed_through_step_id(s.completed_through_step_id);
  if (!s.error.ok()) *out->mutable_error() = ToStatusProto(s.error);
  out->set_submitted_unix_ms(UnixMs(s.submitted_at));
  out->set_finished_unix_ms(UnixMs(s.finished_at));
  out->set_workers_alive(s.workers_alive);
}

v1::ClosureState ToProto(scheduling::ClosureState s) {
  switch (s) {
    case scheduling::ClosureState::kQueued:
      return v1::CLOSURE_STATE_QUEUED;
    case scheduling::ClosureState::kRunning:
      return v1::CLOSURE_STATE_RUNNING;
    case scheduling::ClosureState::kSucceeded:
      return v1::CLOSURE_STATE_SUCCEEDED;
    case scheduling::ClosureState::kFailed:
      return v1::CLOSURE_STATE_FAILED;
    case scheduling::ClosureState::kCancelled:
      return v1::CLOSURE_STATE_CANCELLED;
  }
  return v1::CLOSURE_STATE_UNSPECIFIED;
}

void ToProto(const rendezvous::GroupInfo& g, v1::GroupInfo* out) {
  out->set_group(g.group);
  out->set_epoch(g.epoch);
  out->set_size(g.size);
  out->set_my_rank(g.my_rank);
  for (const rendezvous::GroupMember& m : g.members) {
    v1::GroupMember* pm = out->add_members();
    pm->set_worker_id(m.worker_id);
    pm->set_incarnation(m.incarnation);
    pm->set_rank(m.rank);
    pm->set_hostname(m.hostname);
    pm->set_has_gpu(m.has_gpu);
  }
}

// The service whose gauges /metrics shows (the newest one created).
ABSL_CONST_INIT absl::Mutex g_current_mu(absl::kConstInit);
CoordinatorService* g_current ABSL_GUARDED_BY(g_current_mu) = nullptr;

absl::Status Unavailable() {
  v1::ErrorInfo info;
  info.set_reason(v1::ErrorInfo::REASON_NOT_SERVING);
  return WithErrorInfo(
      absl::UnavailableError("plexus-coordinator is shutting down"), info);
}

struct ServiceMetrics {
  Gauge* workers_alive;
  Counter* restarts;
  Counter* dispatched;
  Counter* finished;
  Counter* requeued;
  Histogram* dispatch_latency;
};

const ServiceMetrics& M() {
  static const ServiceMetrics* m = [] {
    MetricsRegistry* r = Metrics();
    return new ServiceMetrics{
        r->GetGauge("plexus_coordinator_workers_alive",
                    "Live processes that registered step functions."),
        r->GetCounter("plexus_coordinator_restarts_total",
                      "Re-registrations of a process after a failure."),
        r->GetCounter("plexus_coordinator_steps_dispatched_total",
                      "Closures handed to workers (attempts)."),
        r->GetCounter("plexus_coordinator_finished_total",
                      "Closures finished (result accepted)."),
        r->GetCounter("plexus_coordinator_requeued_total",
                      "Closures re-queued (worker deaths, retryable errors, "
                      "hand-backs)."),
        r->GetHistogram("plexus_coordinator_dispatch_latency_seconds",
                        "From a worker's NextTask to the task handed out."),
    };
  }();
  return *m;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CoordinatorService>> CoordinatorService::Create(
    CoordinatorServiceOptions options) {
  if (options.suspect_timeout <= absl::ZeroDuration() ||
      options.dead_timeout < options.suspect_timeout ||
      options.heartbeat_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "need 0 < heartbeat interval, 0 < suspect timeout <= dead timeout; "
        "got ",
        absl::FormatDuration(options.heartbeat_interval), ", ",
        absl::FormatDuration(options.suspect_timeout), ", ",
        absl::FormatDuration(options.dead_timeout)));
  }
  if (options.disconnect_timeout < absl::ZeroDuration() ||
      (options.disconnect_timeout > absl::ZeroDuration() &&
       options.disconnect_timeout <= options.heartbeat_interval)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the disconnect timeout must be 0 (off) or exceed the heartbeat "
        "interval (",
        absl::FormatDuration(options.heartbeat_interval), "); got ",
        absl::FormatDuration(options.disconnect_timeout)));
  }
  std::unique_ptr<state::StateStore> store;
  uint64_t epoch = 1;
  std::optional<membership::MembershipSnapshot> msnap;
  std::optional<scheduling::SchedulerSnapshot> ssnap;
  if (!options.data_dir.empty()) {
    PLEXUS_ASSIGN_OR_RETURN(
        store, state::StateStore::Open(options.data_dir + "/state"));
    PLEXUS_ASSIGN_OR_RETURN(epoch, store->BumpEpoch());
    PLEXUS_ASSIGN_OR_RETURN(msnap, store->LoadMembership());
    PLEXUS_ASSIGN_OR_RETURN(ssnap, store->LoadScheduler());
  }
  std::unique_ptr<CoordinatorService> s(
      new CoordinatorService(std::move(options), epoch, std::move(store)));
  membership::MembershipOptions mo{
      .coordinator_epoch = epoch,
      .cluster = s->options_.cluster,
      .max_restarts_per_worker = s->options_.max_restarts_per_worker};
  scheduling::SchedulerOptions so;
  so.no_worker_timeout = s->options_.no_worker_timeout;
  so.retry_after =
      std::min(absl::Milliseconds(200), s->options_.heartbeat_interval);
  if (msnap.has_value()) {
    PLEXUS_ASSIGN_OR_RETURN(
        s->membership_, membership::Membership::Restore(*msnap, mo, s->clock_),
        "restoring membership");
  } else {
    s->membership_ = std::make_unique<membership::Membership>(mo, s->clock_);
  }
  if (ssnap.has_value()) {
    PLEXUS_ASSIGN_OR_RETURN(
        s->scheduler_, scheduling::Scheduler::Restore(*ssnap, so, s->clock_),
        "restoring the scheduler");
  } else {
    s->scheduler_ = std::make_unique<scheduling::Scheduler>(so, s->clock_);
  }
  // Processes alive before the restart keep their ids and incarnations: they
  // get dead_timeout to reconnect their heartbeat stream.
  for (const membership::ProcessRecord& p : s->membership_->List()) {
    s->health_.Track(p.worker_id, p.incarnation);
    if (!p.step_functions.empty()) {
      PLEXUS_RETURN_IF_ERROR(s->scheduler_->AddWorker(
          p.worker_id, p.incarnation, p.step_functions));
    }
  }
  {
    absl::MutexLock lock(&s->mu_);
    for (const membership::ProcessRecord& p :
         s->membership_->List(/*include_dead=*/true)) {
      s->restarts_seen_[p.worker_id] = p.restarts;
    }
  }
  if (msnap.has_value()) {
    LOG(INFO) << "plexus-coordinator: restored "
              << s->membership_->List().size() << " live process(es) and "
              << (ssnap ? ssnap->jobs.size() : 0) << " job(s), epoch " << epoch;
  }
  PLEXUS_RETURN_IF_ERROR(s->SaveNow());
  if (!s->options_.data_dir.empty()) {
    // Checkpoints: manifests next to the state; half-written ones removed.
    PLEXUS_ASSIGN_OR_RETURN(
        s->manifests_,
        FileManifestStore::Open(s->options_.data_dir + "/checkpoints"));
    std::vector<std::string> shards = s->options_.ps_shards;
    if (shards.empty()) shards = s->options_.cluster.ps;
    absl::StatusOr<std::string> token = ClientToken();
    if (!token.ok()) {
      LOG(WARNING) << "no token for calls to the PS shards: " << token.status();
    }
    PLEXUS_ASSIGN_OR_RETURN(
        std::shared_ptr<grpc::ChannelCredentials> creds,
        MakeChannelCredentials(s->options_.ps_tls),
        "TLS towards the PS shards (--tls_ca_file, --tls_client_cert_file, "
        "--tls_client_key_file)");
    s->shard_driver_ = std::make_unique<GrpcShardDriver>(
        shards, std::move(creds), token.ok() ? *token : "", epoch);
    checkpointing::CheckpointerOptions co = s->options_.checkpoint;
    co.coordinator_epoch = epoch;
    CoordinatorService* self = s.get();
    co.save_state = [self] { return self->SaveNow(); };
    s->checkpointer_ = std::make_unique<checkpointing::Checkpointer>(
        co, s->shard_driver_.get(), s->manifests_.get(), s->scheduler_.get(),
        s->clock_);
    if (!shards.empty()) {
      LOG(INFO) << "checkpoints of " << shards.size() << " PS shard(s) in "
                << s->options_.data_dir << "/checkpoints";
    }
  }
  {
    // Events start from here: restored jobs are watched, and checkpoints
    // published before this start are not news.
    absl::MutexLock lock(&s->events_mu_);
    s->jobs_seen_ = s->scheduler_->RunningJobIds();
    if (s->checkpointer_ != nullptr) {
      auto list = s->checkpointer_->List(0);
      if (list.ok() && !list->empty()) {
        s->last_checkpoint_seen_ = list->front().checkpoint_id;
      }
    }
  }
  return s;
}

CoordinatorService::CoordinatorService(CoordinatorServiceOptions options,
                                       uint64_t epoch,
                                       std::unique_ptr<state::StateStore> store)
    : options_(std::move(options)),
      epoch_(epoch),
      server_incarnation_(NewIncarnationId()),
      store_(std::move(store)),
      clock_(Clock::Real()),
      health_({.suspect_timeout = options_.suspect_timeout,
               .dead_timeout = options_.dead_timeout,
               .disconnect_timeout = options_.disconnect_timeout},
              clock_),
      rendezvous_({}, clock_) {
  (void)M();
  // The registry keeps collectors for the life of the process; it reads the
  // service that is current, so a destroyed one is never touched.
  static absl::once_flag once;
  absl::call_once(once, [] {
    Metrics()->AddCollector([] {
      absl::MutexLock lock(&g_current_mu);
      if (g_current != nullptr) g_current->CollectMetrics();
    });
  });
  absl::MutexLock lock(&g_current_mu);
  g_current = this;
}

CoordinatorService::~CoordinatorService() {
  {
    absl::MutexLock lock(&g_current_mu);
    if (g_current == this) g_current = nullptr;
  }
  Shutdown();
}

void CoordinatorService::Start() {
  thread_ = std::thread([this] { Loop(); });
  if (checkpointer_ != nullptr && shard_driver_->num_shards() > 0) {
    checkpoint_thread_ = std::thread([this] { CheckpointLoop(); });
  }
}

void CoordinatorService::CheckpointLoop() {
  absl::MutexLock lock(&mu_);
  for (int round = 0; !stop_; ++round) {
    mu_.Unlock();
    const bool was = checkpointer_->recovering();
    checkpointer_->Poll();
    const bool now = checkpointer_->recovering();
    // A recovery re-queues steps: save that promptly.
    if (was || now) MarkDirty();
    // The checkpointer logs these itself.
    if (!was && now) {
      RecordEvent(EventSeverity::kWarning, "recovery",
                  "a PS shard was lost or restarted: dispatch paused until "
                  "every shard is restored",
                  /*log=*/false);
    } else if (was && !now) {
      RecordEvent(EventSeverity::kInfo, "recovery",
                  "PS recovery finished: every shard restored, dispatch "
                  "resumed",
                  /*log=*/false);
    }
    // Manifests are read from disk: look for new ones once a second.
    if (round % 5 == 0) WatchCheckpoints();
    mu_.Lock();
    if (!stop_) cv_.WaitWithTimeout(&mu_, absl::Milliseconds(200));
  }
}

absl::StatusOr<checkpointing::Checkpointer*>
CoordinatorService::GetCheckpointer() const {
  if (checkpointer_ == nullptr) {
    return absl::FailedPreconditionError(
        "checkpoints need the coordinator to run with --data_dir");
  }
  return checkpointer_.get();
}

void CoordinatorService::Shutdown() {
  stopping_.store(true);
  if (checkpointer_ != nullptr) checkpointer_->Stop();
  {
    absl::MutexLock lock(&mu_);
    if (stop_) return;
    stop_ = true;
    cv_.SignalAll();
  }
  if (thread_.joinable()) thread_.join();
  if (checkpoint_thread_.joinable()) checkpoint_thread_.join();
  if (scheduler_ != nullptr) {
    scheduler_->Tick();
    rendezvous_.Tick();
    absl::Status st = SaveNow();
    if (!st.ok()) LOG(ERROR) << "saving state at shutdown: " << st;
  }
}

void CoordinatorService::Loop() {
  absl::Time last_save = clock_->Now();
  absl::MutexLock lock(&mu_);
  while (!stop_) {
    mu_.Unlock();
    PollHealth();
    absl::Time now = clock_->Now();
    if (dirty_.load(std::memory_order_relaxed) &&
        now - last_save >= options_.save_interval) {
      absl::Status st = SaveNow();
      if (!st.ok()) LOG(ERROR) << "saving coordinator state: " << st;
      last_save = now;
    }
    absl::Time next =
        std::min({health_.NextDeadline(), scheduler_->NextTimeout(),
                  now + absl::Milliseconds(50)});
    mu_.Lock();
    if (!stop_) cv_.WaitWithDeadline(&mu_, next);
  }
}

void CoordinatorService::PollHealth() {
  for (const health::HealthEvent& e : health_.Poll()) {
    if (e.to == health::Liveness::kDead) {
      membership_->MarkDead(e.worker_id, e.incarnation, e.reason);
      std::vector<uint64_t> requeued =
          scheduler_->RemoveWorker(e.worker_id, e.incarnation, e.reason);
      M().requeued->Increment(static_cast<double>(requeued.size()));
      RecordEvent(EventSeverity::kWarning, "died",
                  absl::StrFormat("worker id %d incarnation %016x declared "
                                  "dead (%s); %d closure(s) re-queued",
                                  e.worker_id, e.incarnation, e.reason,
                                  requeued.size()));
      QueueNotices(rendezvous_.MemberDied(e.worker_id, e.incarnation));
      MarkDirty();
    } else if (e.to == health::Liveness::kLeft) {
      membership_->MarkLeft(e.worker_id, e.incarnation, e.reason);
      std::vector<uint64_t> requeued = scheduler_->RemoveWorker(
          e.worker_id, e.incarnation, e.reason, /*failure=*/false);
      M().requeued->Increment(static_cast<double>(requeued.size()));
      RecordEvent(EventSeverity::kInfo, "left",
                  absl::StrFormat("worker id %d incarnation %016x left (%s); "
                                  "%d closure(s) handed back",
                                  e.worker_id, e.incarnation, e.reason,
                                  requeued.size()));
      // A member that left cannot take part in its groups any more either.
      QueueNotices(rendezvous_.MemberDied(e.worker_id, e.incarnation));
      MarkDirty();
    } else if (e.to == health::Liveness::kSuspected) {
      RecordEvent(EventSeverity::kWarning, "suspected",
                  absl::StrFormat("worker id %d incarnation %016x suspected "
                                  "(%s)",
                                  e.worker_id, e.incarnation, e.reason));
    }
  }
  scheduler_->Tick();
  rendezvous_.Tick();
  WatchJobs();
}

void CoordinatorService::RecordEvent(EventSeverity severity, std::string kind,
                                     std::string text, bool log,
                                     const char* file, int line) {
  if (log) {
    google::LogSeverity level = google::GLOG_INFO;
    if (severity == EventSeverity::kWarning) level = google::GLOG_WARNING;
    if (severity == EventSeverity::kError) level = google::GLOG_ERROR;
    google::LogMessage(file, line, level).stream() << text;
  }
  absl::MutexLock lock(&events_mu_);
  events_.push_back({.time = absl::Now(),
                     .severity = severity,
                     .kind = std::move(kind),
                     .text = std::move(text)});
  while (events_.size() > kMaxEvents) events_.pop_front();
}

void CoordinatorService::WatchJobs() {
  std::vector<std::string> watch;
  {
    absl::MutexLock lock(&events_mu_);
    for (const std::string& id : jobs_seen_) {
      if (!job_ended_[id]) watch.push_back(id);
    }
  }
  for (const std::string& id : watch) {
    absl::StatusOr<scheduling::JobStatus> j = scheduler_->GetJobStatus(id);
    if (!j.ok() || j->state == scheduling::JobState::kRunning) continue;
    {
      absl::MutexLock lock(&events_mu_);
      if (job_ended_[id]) continue;
      job_ended_[id] = true;
    }
    double secs = absl::ToDoubleSeconds(j->finished_at - j->submitted_at);
    std::string what = absl::StrFormat(
        "%d/%d closures through step %d in %.1f s, %d re-queued",
        j->closures_succeeded, j->closures_total, j->completed_through_step_id,
        secs, j->requeues);
    if (j->state == scheduling::JobState::kSucceeded) {
      RecordEvent(EventSeverity::kInfo, "job",
                  absl::StrCat("job '", id, "' succeeded: ", what));
    } else {
      RecordEvent(
          EventSeverity::kError, "job",
          absl::StrCat("job '", id, "' ",
                       j->state == scheduling::JobState::kFailed ? "failed"
                                                                 : "cancelled",
                       ": ", what, ": ", j->error.ToString()));
    }
  }
}

void CoordinatorService::WatchCheckpoints() {
  if (checkpointer_ == nullptr) return;
  absl::StatusOr<std::vector<checkpointing::Manifest>> list =
      checkpointer_->List(0);
  if (!list.ok()) return;
  std::vector<const checkpointing::Manifest*> fresh;  // oldest first
  {
    absl::MutexLock lock(&events_mu_);
    for (auto it = list->rbegin(); it != list->rend(); ++it) {
      if (it->checkpoint_id > last_checkpoint_seen_) fresh.push_back(&*it);
    }
    if (!fresh.empty()) last_checkpoint_seen_ = fresh.back()->checkpoint_id;
  }
  // The checkpointer logged its start and publication: into the ring only,
  // at the time it was published.
  absl::MutexLock lock(&events_mu_);
  for (const checkpointing::Manifest* m : fresh) {
    events_.push_back(
        {.time = absl::FromUnixMillis(m->published_unix_ms),
         .severity = EventSeverity::kInfo,
         .kind = "checkpoint",
         .text = absl::StrFormat("checkpoint %d of job '%s' at step %d "
                                 "published (%d shard(s), %d ms)",
                                 m->checkpoint_id, m->job_id, m->step_id,
                                 m->shards.size(),
                                 m->published_unix_ms - m->started_unix_ms)});
  }
  while (events_.size() > kMaxEvents) events_.pop_front();
}

absl::Status CoordinatorService::SaveNow() {
  if (store_ == nullptr) return absl::OkStatus();
  absl::MutexLock lock(&save_mu_);
  dirty_.store(false, std::memory_order_relaxed);
  return store_->Save(membership_->Snapshot(), scheduler_->Snapshot());
}

void CoordinatorService::QueueNotices(
    const std::vector<rendezvous::ReformNotice>& notices) {
  if (notices.empty()) return;
  absl::MutexLock lock(&mu_);
  for (const rendezvous::ReformNotice& n : notices) {
    v1::HeartbeatResponse r;
    v1::ReformGroupCommand* c = r.mutable_reform_group();
    c->set_group(n.group);
    c->set_new_epoch(n.new_epoch);
    for (int rank : n.failed_ranks) c->add_failed_ranks(rank);
    for (uint64_t w : n.survivors) pending_[w].push_back(r);
  }
}

void CoordinatorService::EnforceBudget(const membership::Registration& reg) {
  if (reg.budget_status.ok()) return;
  LOG(ERROR) << reg.budget_status;
  for (const std::string& job : scheduler_->RunningJobIds()) {
    absl::Status st = scheduler_->FailJob(job, reg.budget_status);
    if (!st.ok()) LOG(WARNING) << "failing job " << job << ": " << st;
  }
}

void CoordinatorService::CollectMetrics() {
  int alive = 0;
  for (const membership::ProcessRecord& p : membership_->List()) {
    if (!p.step_functions.empty()) ++alive;
  }
  M().workers_alive->Set(alive);
  // Checkpoint series from the newest published manifest, so that periodic
  // checkpoints, RPC-triggered ones and those of a previous incarnation all
  // count.
  if (checkpointer_ == nullptr) return;
  absl::StatusOr<std::vector<checkpointing::Manifest>> list =
      checkpointer_->List(0);
  if (!list.ok()) return;
  Metrics()
      ->GetGauge("plexus_coordinator_checkpoints_retained",
                 "Published global checkpoints kept.")
      ->Set(static_cast<double>(list->size()));
  if (list->empty()) return;
  const checkpointing::Manifest& newest = list->front();
  Metrics()
      ->GetGauge("plexus_coordinator_checkpoint_last_success_time_seconds",
                 "When the newest global checkpoint was published, seconds "
                 "since the Unix epoch.")
      ->Set(static_cast<double>(newest.published_unix_ms) / 1e3);
  Metrics()
      ->GetGauge("plexus_coordinator_checkpoint_last_duration_seconds",
                 "From the newest global checkpoint's start to its manifest "
                 "being published.")
      ->Set(static_cast<double>(newest.published_unix_ms -
                                newest.started_unix_ms) /
            1e3);
  Metrics()
      ->GetGauge("plexus_coordinator_checkpoint_last_step",
                 "Training step the newest global checkpoint holds.")
      ->Set(static_cast<double>(newest.step_id));
}

void CoordinatorService::FillHeader(v1::ResponseHeader* h) const {
  h->set_server_incarnation(server_incarnation_);
  h->set_shard_map_version(0);
  h->set_coordinator_epoch(epoch_);
  h->set_server_time_unix_ms(absl::ToUnixMillis(absl::Now()));
}

absl::Status CoordinatorService::CheckCaller(const v1::RequestHeader& h) const {
  if (stopping_.load()) return Unavailable();
  if (h.worker_id() == 0) {
    return absl::InvalidArgumentError(
        "header.worker_id and worker_incarnation are required (Register "
        "first)");
  }
  return membership_->CheckCurrent(h.worker_id(), h.worker_incarnation());
}

// ---- membership and health ----

grpc::Status CoordinatorService::Register(grpc::ServerContext* ctx,
                                          const v1::RegisterRequest* req,
                                          v1::RegisterResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  absl::StatusOr<membership::Role> role = RoleOf(req->role());
  if (!role.ok()) return ToGrpc(role.status());
  membership::RegisterRequest r;
  r.role = *role;
  r.task_index = req->task_index();
  r.address = req->address();
  r.hostname = req->hostname();
  r.pid = req->pid();
  r.step_functions.assign(req->capabilities().step_functions().begin(),
                          req->capabilities().step_functions().end());
  r.has_gpu = req->capabilities().has_gpu();
  r.previous_worker_id = req->previous_worker_id();
  absl::StatusOr<membership::Registration> reg = membership_->Register(r);
  if (!reg.ok()) return ToGrpc(reg.status());
  if (reg->replaced_incarnation != 0) {
    QueueNotices(
        rendezvous_.MemberDied(reg->worker_id, reg->replaced_incarnation));
  }
  health_.Track(reg->worker_id, reg->incarnation);
  // Every worker is scheduled, also one with no step functions yet (it gets
  // no closures, but its NextTask calls must find it: before, they were
  // answered "stale incarnation" and it re-registered in a loop).
  if (r.role == membership::Role::kWorker || !r.step_functions.empty()) {
    absl::Status added = scheduler_->AddWorker(reg->worker_id, reg->incarnation,
                                               r.step_functions);
    if (!added.ok()) return ToGrpc(added);
  }
  {
    absl::MutexLock lock(&mu_);
    pending_.erase(reg->worker_id);
    auto [it, inserted] = restarts_seen_.try_emplace(reg->worker_id, 0);
    if (reg->restarts > it->second) {
      M().restarts->Increment(reg->restarts - it->second);
      it->second = reg->restarts;
    }
  }
  EnforceBudget(*reg);
  if (absl::Status st = SaveNow(); !st.ok()) return ToGrpc(st);
  const bool back = reg->restarts > 0 || reg->replaced_incarnation != 0;
  RecordEvent(EventSeverity::kInfo, back ? "returned" : "joined",
              absl::StrFormat("%s %d %s as worker id %d incarnation %016x "
                              "(pid %d on %s, restarts %d)",
                              membership::RoleName(r.role), reg->task_index,
                              back ? "came back" : "joined", reg->worker_id,
                              reg->incarnation, r.pid,
                              r.address.empty() ? r.hostname : r.address,
                              reg->restarts));
  VLOG(1) << "worker id " << reg->worker_id << ": hostname " << r.hostname
          << ", " << r.step_functions.size() << " step function(s), gpu "
          << r.has_gpu << ", replaced incarnation "
          << reg->replaced_incarnation;
  FillHeader(resp->mutable_header());
  resp->set_worker_id(reg->worker_id);
  resp->set_incarnation(reg->incarnation);
  resp->set_coordinator_epoch(epoch_);
  resp->set_heartbeat_interval_ms(
      absl::ToInt64Milliseconds(options_.heartbeat_interval));
  resp->set_suspect_timeout_ms(
      absl::ToInt64Milliseconds(options_.suspect_timeout));
  resp->set_dead_timeout_ms(absl::ToInt64Milliseconds(options_.dead_timeout));
  resp->set_task_index(reg->task_index);
  std::vector<std::string> running = scheduler_->RunningJobIds();
  if (!running.empty()) resp->set_job_id(running.back());
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Heartbeat(
    grpc::ServerContext* ctx,
    grpc::ServerReaderWriter<v1::HeartbeatResponse, v1::HeartbeatRequest>*
        stream) {
  PLEXUS_AUTHORIZE(ctx);
  v1::HeartbeatRequest req;
  // Who this stream carries heartbeats for (0: nobody yet, or it left).
  uint64_t worker_id = 0, incarnation = 0;
  while (stream->Read(&req)) {
    const v1::RequestHeader& h = req.header();
    if (absl::Status st = CheckCaller(h); !st.ok()) return ToGrpc(st);
    worker_id = req.state() == v1::PROCESS_STATE_LEFT ? 0 : h.worker_id();
    incarnation = h.worker_incarnation();
    if (req.state() == v1::PROCESS_STATE_DRAINING) {
      // Preempted: no new work for it (it may still report what it runs).
      (void)scheduler_->DrainWorker(h.worker_id(), h.worker_incarnation());
    }
    if (req.state() == v1::PROCESS_STATE_LEFT) {
      health_.Leave(h.worker_id(), h.worker_incarnation());
      absl::MutexLock lock(&mu_);
      cv_.SignalAll();  // the loop acts on the LEFT event
    } else {
      health::HeartbeatInfo info;
      info.last_finished_step_id = req.last_finished_step_id();
      info.current_closure_id = req.current_closure_id();
      info.current_step_id = req.current_step_id();
      info.closures_finished = req.closures_finished();
      absl::Status st =
          health_.Heartbeat(h.worker_id(), h.worker_incarnation(), info);
      if (!st.ok()) return ToGrpc(st);
    }
    v1::HeartbeatResponse resp;
    {
      absl::MutexLock lock(&mu_);
      auto it = pending_.find(h.worker_id());
      if (it != pending_.end() && !it->second.empty()) {
        resp = std::move(it->second.front());
        it->second.erase(it->second.begin());
      } else {
        resp.mutable_keep_going();
      }
    }
    FillHeader(resp.mutable_header());
    resp.set_ack_seq(req.seq());
    if (!stream->Write(resp)) break;
  }
  if (worker_id != 0 && !stopping_.load()) {
    // Closed without LEFT: the process died (its kernel closed the
    // connection) or its connection broke (it reconnects and heartbeats
    // again, which cancels this).
    health_.Disconnected(worker_id, incarnation);
    absl::MutexLock lock(&mu_);
    cv_.SignalAll();  // the health loop's next deadline moved
  }
  return stopping_.load() ? ToGrpc(Unavailable()) : grpc::Status::OK;
}

grpc::Status CoordinatorService::ListProcesses(
    grpc::ServerContext* ctx, const v1::ListProcessesRequest* req,
    v1::ListProcessesResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  FillHeader(resp->mutable_header());
  FillProcesses(req->include_dead(), req->role(), resp);
  return grpc::Status::OK;
}

void CoordinatorService::FillProcesses(bool include_dead, v1::Role want,
                                       v1::ListProcessesResponse* resp) {
  // Liveness as of the health loop's last Poll (at most ~50 ms old): the
  // loop alone consumes the detector's events.
  for (const membership::ProcessRecord& p : membership_->List(include_dead)) {
    v1::Role role = ToProto(p.role);
    if (want != v1::ROLE_UNSPECIFIED && want != role) continue;
    v1::ProcessInfo* out = resp->add_processes();
    out->set_worker_id(p.worker_id);
    out->set_incarnation(p.incarnation);
    out->set_role(role);
    out->set_task_index(p.task_index);
    out->set_address(p.address);
    out->set_hostname(p.hostname);
    out->set_pid(p.pid);
    out->set_restarts(p.restarts);
    out->set_has_gpu(p.has_gpu);
    out->set_registered_unix_ms(UnixMs(p.registered_at));
    switch (p.state) {
      case membership::ProcessState::kDead:
        out->set_state(v1::PROCESS_STATE_DEAD);
        break;
      case membership::ProcessState::kLeft:
        out->set_state(v1::PROCESS_STATE_LEFT);
        break;
      case membership::ProcessState::kAlive:
        out->set_state(v1::PROCESS_STATE_IDLE);
        break;
    }
    absl::StatusOr<health::ProcessHealth> ph = health_.Get(p.worker_id);
    if (ph.ok() && ph->incarnation == p.incarnation) {
      out->set_last_heartbeat_unix_ms(UnixMs(ph->last_heartbeat));
      out->set_current_step_id(ph->progress.current_step_id);
      out->set_current_closure_id(ph->progress.current_closure_id);
      out->set_last_finished_step_id(ph->progress.last_finished_step_id);
      if (p.state == membership::ProcessState::kAlive) {
        if (ph->liveness == health::Liveness::kSuspected) {
          out->set_state(v1::PROCESS_STATE_SUSPECTED);
        } else if (ph->progress.current_closure_id != 0) {
          out->set_state(v1::PROCESS_STATE_BUSY);
        }
      }
    }
  }
}

std::string CoordinatorService::StatusPage() {
  StatusPageData d;
  d.epoch = epoch_;
  d.now = absl::Now();
  v1::ListProcessesResponse procs;
  FillProcesses(/*include_dead=*/true, v1::ROLE_UNSPECIFIED, &procs);
  for (const v1::ProcessInfo& p : procs.processes()) {
    StatusProcess& o = d.processes.emplace_back();
    o.worker_id = p.worker_id();
    o.incarnation = p.incarnation();
    o.role = absl::AsciiStrToLower(
        absl::StripPrefix(v1::Role_Name(p.role()), "ROLE_"));
    o.task_index = static_cast<int>(p.task_index());
    o.address = p.address();
    o.hostname = p.hostname();
    o.pid = p.pid();
    o.state = std::string(
        absl::StripPrefix(v1::ProcessState_Name(p.state()), "PROCESS_STATE_"));
    o.restarts = p.restarts();
    if (p.last_heartbeat_unix_ms() > 0) {
      o.last_heartbeat = absl::FromUnixMillis(p.last_heartbeat_unix_ms());
    }
    o.current_step_id = p.current_step_id();
    o.last_finished_step_id = p.last_finished_step_id();
  }
  d.ps_shards =
      options_.ps_shards.empty() ? options_.cluster.ps : options_.ps_shards;
  std::vector<checkpointing::Manifest> manifests;
  if (checkpointer_ != nullptr) {
    d.ps_recovering = checkpointer_->recovering();
    d.checkpoints_enabled = shard_driver_->num_shards() > 0;
    auto list = checkpointer_->List(0);
    if (list.ok()) manifests = std::move(*list);
  }
  for (const checkpointing::Manifest& m : manifests) {
    StatusCheckpoint& c = d.checkpoints.emplace_back();
    c.checkpoint_id = m.checkpoint_id;
    c.step_id = m.step_id;
    c.job_id = m.job_id;
    c.base_checkpoint_id = m.base_checkpoint_id;
    c.shards = static_cast<int>(m.shards.size());
    c.started_at = absl::FromUnixMillis(m.started_unix_ms);
    c.published_at = absl::FromUnixMillis(m.published_unix_ms);
  }
  std::vector<std::string> jobs;
  {
    absl::MutexLock lock(&events_mu_);
    jobs = jobs_seen_;
    d.events.assign(events_.rbegin(), events_.rend());
  }
  // Newest first (checkpoints are noticed up to a second late).
  std::stable_sort(d.events.begin(), d.events.end(),
                   [](const StatusEvent& a, const StatusEvent& b) {
                     return a.time > b.time;
                   });
  for (const std::string& id : scheduler_->RunningJobIds()) {
    if (std::find(jobs.begin(), jobs.end(), id) == jobs.end()) {
      jobs.push_back(id);
    }
  }
  // Newest job first.
  for (auto it = jobs.rbegin(); it != jobs.rend(); ++it) {
    absl::StatusOr<scheduling::JobStatus> j = scheduler_->GetJobStatus(*it);
    if (!j.ok()) continue;
    v1::JobStatus p;
    ToProto(*j, &p);
    StatusJob& o = d.jobs.emplace_back();
    o.job_id = j->job_id;
    o.state = std::string(
        absl::StripPrefix(v1::JobState_Name(p.state()), "JOB_STATE_"));
    o.closures_total = j->closures_total;
    o.closures_succeeded = j->closures_succeeded;
    o.closures_running = j->closures_running;
    o.closures_queued = j->closures_queued;
    o.closures_failed = j->closures_failed;
    o.requeues = j->requeues;
    o.completed_through_step_id = j->completed_through_step_id;
    o.workers_alive = j->workers_alive;
    if (!j->error.ok()) o.error = j->error.ToString();
    o.submitted_at = j->submitted_at;
    o.finished_at = j->finished_at;
    absl::Time end = std::min(d.now, j->finished_at);
    double secs = absl::ToDoubleSeconds(end - j->submitted_at);
    if (secs > 0) {
      o.closures_per_second = static_cast<double>(j->closures_succeeded) / secs;
    }
    for (const checkpointing::Manifest& m : manifests) {  // newest first
      if (m.job_id != j->job_id) continue;
      o.last_checkpoint_id = m.checkpoint_id;
      o.last_checkpoint_step_id = m.step_id;
      break;
    }
  }
  return RenderStatusPage(d);
}

grpc::Status CoordinatorService::GetShardMap(grpc::ServerContext* ctx,
                                             const v1::GetShardMapRequest*,
                                             v1::GetShardMapResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  // The shard map is owned here once the resources issue lands; until then
  // there is none (version 0).
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

// ---- closures ----

grpc::Status CoordinatorService::NextTask(grpc::ServerContext* ctx,
                                          const v1::NextTaskRequest* req,
                                          v1::NextTaskResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  const v1::RequestHeader& h = req->header();
  if (absl::Status st = CheckCaller(h); !st.ok()) return ToGrpc(st);
  absl::Time start = clock_->Now();
  absl::Time deadline =
      req->wait_ms() > 0 ? DeadlineOf(ctx, clock_, req->wait_ms()) : start;
  absl::StatusOr<scheduling::NextTaskResult> r;
  while (true) {
    absl::Time slice = std::min(deadline, clock_->Now() + kWaitSlice);
    r = scheduler_->NextTask(h.worker_id(), h.worker_incarnation(), slice);
    if (!r.ok()) return ToGrpc(r.status());
    if (r->task.has_value() ||
        r->no_task_reason == scheduling::NoTaskReason::kDraining ||
        clock_->Now() >= deadline || ctx->IsCancelled()) {
      break;
    }
    if (stopping_.load()) return ToGrpc(Unavailable());
  }
  FillHeader(resp->mutable_header());
  if (r->task.has_value()) {
    const scheduling::Task& t = *r->task;
    // The scheduler handed the closure out; nothing is saved yet.
    if (absl::Status fp =
            PLEXUS_FAILPOINT("coordinator.after_dispatch_before_record");
        !fp.ok()) {
      return ToGrpc(fp);
    }
    MarkDirty();
    M().dispatched->Increment();
    M().dispatch_latency->Observe(absl::ToDoubleSeconds(clock_->Now() - start));
    v1::Task* out = resp->mutable_task();
    out->set_closure_id(t.closure_id);
    out->set_job_id(t.job_id);
    out->set_function_name(t.function_name);
    out->set_args(t.args);
    out->set_step_id(t.step_id);
    out->set_attempt(t.attempt);
    out->set_replica_index(t.replica_index);
    out->set_replicas_per_step(t.replicas_per_step);
    out->set_deadline_ms(absl::ToInt64Milliseconds(t.time_budget));
    return grpc::Status::OK;
  }
  switch (r->no_task_reason) {
    case scheduling::NoTaskReason::kPaused:
      resp->set_no_task_reason(v1::NO_TASK_REASON_PAUSED);
      break;
    case scheduling::NoTaskReason::kNoJob:
      resp->set_no_task_reason(v1::NO_TASK_REASON_NO_JOB);
      break;
    case scheduling::NoTaskReason::kDraining:
      resp->set_no_task_reason(v1::NO_TASK_REASON_DRAINING);
      break;
    default:
      resp->set_no_task_reason(v1::NO_TASK_REASON_QUEUE_EMPTY);
      break;
  }
  resp->set_retry_after_ms(absl::ToInt64Milliseconds(r->retry_after));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ReportResult(
    grpc::ServerContext* ctx, const v1::ReportResultRequest* req,
    v1::ReportResultResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  const v1::RequestHeader& h = req->header();
  if (absl::Status st = CheckCaller(h); !st.ok()) return ToGrpc(st);
  scheduling::Report rep;
  rep.closure_id = req->closure_id();
  rep.attempt = req->attempt();
  rep.handed_back = req->handed_back();
  if (!rep.handed_back) {
    switch (req->outcome_case()) {
      case v1::ReportResultRequest::kResult:
        rep.result = req->result();
        break;
      case v1::ReportResultRequest::kError:
        rep.error = FromStatusProto(req->error());
        break;
      default:
        return ToGrpc(absl::InvalidArgumentError(
            "a report needs a result, an error, or handed_back"));
    }
  }
  absl::StatusOr<scheduling::ReportDisposition> d =
      scheduler_->ReportResult(h.worker_id(), h.worker_incarnation(), rep);
  if (!d.ok()) return ToGrpc(d.status());
  FillHeader(resp->mutable_header());
  switch (*d) {
    case scheduling::ReportDisposition::kAccepted:
      M().finished->Increment();
      resp->set_disposition(v1::REPORT_DISPOSITION_ACCEPTED);
      break;
    case scheduling::ReportDisposition::kDuplicate:
      resp->set_disposition(v1::REPORT_DISPOSITION_DUPLICATE);
      break;
    case scheduling::ReportDisposition::kRequeued:
      M().requeued->Increment();
      resp->set_disposition(v1::REPORT_DISPOSITION_REQUEUED);
      break;
    case scheduling::ReportDisposition::kFailed:
      resp->set_disposition(v1::REPORT_DISPOSITION_FAILED);
      break;
  }
  if (*d == scheduling::ReportDisposition::kFailed) {
    if (absl::Status st = SaveNow(); !st.ok()) return ToGrpc(st);
  } else {
    MarkDirty();
  }
  return grpc::Status::OK;
}

// ---- jobs ----

grpc::Status CoordinatorService::SubmitJob(grpc::ServerContext* ctx,
                                           const v1::SubmitJobRequest* req,
                                           v1::SubmitJobResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  scheduling::JobSpec spec;
  spec.job_id = req->job_id();
  switch (req->work_case()) {
    case v1::SubmitJobRequest::kSteps: {
      const v1::StepLoop& s = req->steps();
      spec.work = scheduling::StepLoop{
          .function_name = s.function_name(),
          .num_steps = s.num_steps(),
          .first_step_id = s.first_step_id(),
          .args = s.args(),
          .replicas_per_step = std::max<uint32_t>(1, s.replicas_per_step())};
      break;
    }
    case v1::SubmitJobRequest::kClosures: {
      std::vector<scheduling::ClosureSpec> list;
      for (const v1::ClosureSpec& c : req->closures().closures()) {
        list.push_back({.function_name = c.function_name(),
                        .args = c.args(),
                        .step_id = c.step_id()});
      }
      spec.work = std::move(list);
      break;
    }
    default:
      break;
  }
  if (req->no_worker_timeout_ms() < 0) {
    return ToGrpc(absl::InvalidArgumentError("no_worker_timeout_ms < 0"));
  }
  spec.no_worker_timeout = absl::Milliseconds(req->no_worker_timeout_ms());
  absl::StatusOr<scheduling::SubmitResult> r = scheduler_->SubmitJob(spec);
  if (!r.ok()) return ToGrpc(r.status());
  if (req->max_restarts_per_worker() > 0) {
    membership_->SetMaxRestartsPerWorker(
        static_cast<int>(req->max_restarts_per_worker()));
  }
  if (absl::Status st = SaveNow(); !st.ok()) return ToGrpc(st);
  if (r->created) {
    {
      absl::MutexLock lock(&events_mu_);
      jobs_seen_.push_back(r->job_id);
    }
    absl::StatusOr<scheduling::JobStatus> j =
        scheduler_->GetJobStatus(r->job_id);
    RecordEvent(EventSeverity::kInfo, "job",
                absl::StrFormat("job '%s' submitted: %d closure(s)", r->job_id,
                                j.ok() ? j->closures_total : 0));
  }
  FillHeader(resp->mutable_header());
  resp->set_job_id(r->job_id);
  for (uint64_t id : r->closure_ids) resp->add_remote_value_ids(id);
  resp->set_created(r->created);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Schedule(grpc::ServerContext* ctx,
                                          const v1::ScheduleRequest* req,
                                          v1::ScheduleResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  absl::StatusOr<scheduling::Scheduled> r = scheduler_->Schedule(
      req->job_id(), {.function_name = req->closure().function_name(),
                      .args = req->closure().args(),
                      .step_id = req->closure().step_id()});
  if (!r.ok()) return ToGrpc(r.status());
  if (absl::Status st = SaveNow(); !st.ok()) return ToGrpc(st);
  FillHeader(resp->mutable_header());
  resp->set_remote_value_id(r->closure_id);
  resp->set_step_id(r->step_id);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Join(grpc::ServerContext* ctx,
                                      const v1::JoinRequest* req,
                                      v1::JoinResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (req->timeout_ms() < 0) return ToGrpc(NegativeTimeout(req->timeout_ms()));
  absl::Time deadline = DeadlineOf(ctx, clock_, req->timeout_ms());
  while (true) {
    if (stopping_.load()) return ToGrpc(Unavailable());
    absl::Time slice = std::min(deadline, clock_->Now() + kWaitSlice);
    absl::StatusOr<scheduling::JobStatus> r =
        scheduler_->Join(req->job_id(), slice);
    if (r.ok()) {
      FillHeader(resp->mutable_header());
      ToProto(*r, resp->mutable_status());
      return grpc::Status::OK;
    }
    if (r.status().code() != absl::StatusCode::kDeadlineExceeded ||
        clock_->Now() >= deadline || ctx->IsCancelled()) {
      return ToGrpc(r.status());
    }
  }
}

grpc::Status CoordinatorService::Fetch(grpc::ServerContext* ctx,
                                       const v1::FetchRequest* req,
                                       v1::FetchResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  absl::Time deadline = req->timeout_ms() > 0
                            ? DeadlineOf(ctx, clock_, req->timeout_ms())
                            : clock_->Now();
  absl::StatusOr<scheduling::ClosureResult> r;
  while (true) {
    absl::Time slice = std::min(deadline, clock_->Now() + kWaitSlice);
    r = scheduler_->Fetch(req->remote_value_id(), slice);
    if (!r.ok()) return ToGrpc(r.status());
    bool done = r->state != scheduling::ClosureState::kQueued &&
                r->state != scheduling::ClosureState::kRunning;
    if (done || clock_->Now() >= deadline || ctx->IsCancelled()) break;
    if (stopping_.load()) return ToGrpc(Unavailable());
  }
  FillHeader(resp->mutable_header());
  resp->set_state(ToProto(r->state));
  if (r->state == scheduling::ClosureState::kSucceeded) {
    resp->set_result(r->result);
  } else if (!r->error.ok()) {
    *resp->mutable_error() = ToStatusProto(r->error);
  }
  resp->set_step_id(r->step_id);
  resp->set_attempts(r->attempts);
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::CancelJob(grpc::ServerContext* ctx,
                                           const v1::CancelJobRequest* req,
                                           v1::CancelJobResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  absl::StatusOr<scheduling::JobStatus> r = scheduler_->Cancel(
      req->job_id(), req->reason().empty() ? "cancelled" : req->reason());
  if (!r.ok()) return ToGrpc(r.status());
  if (absl::Status st = SaveNow(); !st.ok()) return ToGrpc(st);
  FillHeader(resp->mutable_header());
  ToProto(*r, resp->mutable_status());
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::GetJobStatus(
    grpc::ServerContext* ctx, const v1::GetJobStatusRequest* req,
    v1::GetJobStatusResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  absl::StatusOr<scheduling::JobStatus> r =
      scheduler_->GetJobStatus(req->job_id());
  if (!r.ok()) return ToGrpc(r.status());
  FillHeader(resp->mutable_header());
  ToProto(*r, resp->mutable_status());
  if (checkpointer_ != nullptr) {
    auto list = checkpointer_->List(0);
    if (list.ok()) {
      for (const checkpointing::Manifest& m : *list) {  // newest first
        if (m.job_id != r->job_id) continue;
        resp->mutable_status()->set_last_checkpoint_id(m.checkpoint_id);
        resp->mutable_status()->set_last_checkpoint_step_id(m.step_id);
        break;
      }
    }
  }
  return grpc::Status::OK;
}

// ---- rendezvous ----

grpc::Status CoordinatorService::RendezvousSet(
    grpc::ServerContext* ctx, const v1::RendezvousSetRequest* req,
    v1::RendezvousSetResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  absl::Status st = rendezvous_.Set(req->group(), req->group_epoch(),
                                    req->entry().key(), req->entry().value());
  if (!st.ok()) return ToGrpc(st);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::RendezvousGet(
    grpc::ServerContext* ctx, const v1::RendezvousGetRequest* req,
    v1::RendezvousGetResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  absl::StatusOr<std::string> v =
      rendezvous_.Get(req->group(), req->group_epoch(), req->key());
  if (!v.ok()) return ToGrpc(v.status());
  FillHeader(resp->mutable_header());
  resp->mutable_entry()->set_key(req->key());
  resp->mutable_entry()->set_value(std::move(*v));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::RendezvousWait(
    grpc::ServerContext* ctx, const v1::RendezvousWaitRequest* req,
    v1::RendezvousWaitResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  std::vector<std::string> keys(req->keys().begin(), req->keys().end());
  if (keys.empty()) {
    return ToGrpc(absl::InvalidArgumentError("keys: at least one is needed"));
  }
  if (req->timeout_ms() < 0) return ToGrpc(NegativeTimeout(req->timeout_ms()));
  absl::Time deadline = DeadlineOf(ctx, clock_, req->timeout_ms());
  while (true) {
    if (stopping_.load()) return ToGrpc(Unavailable());
    absl::Time slice = std::min(deadline, clock_->Now() + kWaitSlice);
    absl::StatusOr<std::vector<std::string>> v =
        rendezvous_.Wait(req->group(), req->group_epoch(), keys, slice);
    if (v.ok()) {
      FillHeader(resp->mutable_header());
      for (size_t i = 0; i < keys.size(); ++i) {
        v1::KeyValue* kv = resp->add_entries();
        kv->set_key(keys[i]);
        kv->set_value(std::move((*v)[i]));
      }
      return grpc::Status::OK;
    }
    if (v.status().code() != absl::StatusCode::kDeadlineExceeded ||
        clock_->Now() >= deadline || ctx->IsCancelled()) {
      return ToGrpc(v.status());
    }
  }
}

grpc::Status CoordinatorService::JoinGroup(grpc::ServerContext* ctx,
                                           const v1::JoinGroupRequest* req,
                                           v1::JoinGroupResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  const v1::RequestHeader& h = req->header();
  if (absl::Status st = CheckCaller(h); !st.ok()) return ToGrpc(st);
  absl::StatusOr<membership::ProcessRecord> rec =
      membership_->Get(h.worker_id());
  if (!rec.ok()) return ToGrpc(rec.status());
  rendezvous::JoinGroupRequest j{.group = req->group(),
                                 .size = req->size(),
                                 .worker_id = h.worker_id(),
                                 .incarnation = h.worker_incarnation(),
                                 .hostname = rec->hostname,
                                 .has_gpu = req->has_gpu()};
  if (req->timeout_ms() < 0) return ToGrpc(NegativeTimeout(req->timeout_ms()));
  absl::Time deadline = DeadlineOf(ctx, clock_, req->timeout_ms());
  while (true) {
    if (stopping_.load()) return ToGrpc(Unavailable());
    absl::Time slice = std::min(deadline, clock_->Now() + kWaitSlice);
    absl::StatusOr<rendezvous::GroupInfo> g = rendezvous_.JoinGroup(j, slice);
    if (g.ok()) {
      FillHeader(resp->mutable_header());
      ToProto(*g, resp->mutable_group());
      return grpc::Status::OK;
    }
    if (g.status().code() != absl::StatusCode::kDeadlineExceeded ||
        clock_->Now() >= deadline || ctx->IsCancelled()) {
      return ToGrpc(g.status());
    }
  }
}

grpc::Status CoordinatorService::GetGroup(grpc::ServerContext* ctx,
                                          const v1::GetGroupRequest* req,
                                          v1::GetGroupResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  absl::StatusOr<rendezvous::GroupInfo> g =
      rendezvous_.GetGroup(req->group(), req->header().worker_id());
  if (!g.ok()) return ToGrpc(g.status());
  FillHeader(resp->mutable_header());
  ToProto(*g, resp->mutable_group());
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::BumpGroupEpoch(
    grpc::ServerContext* ctx, const v1::BumpGroupEpochRequest* req,
    v1::BumpGroupEpochResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  absl::StatusOr<rendezvous::BumpResult> b = rendezvous_.BumpEpoch(
      req->group(), req->expected_epoch(), req->failed_rank(), req->reason());
  if (!b.ok()) return ToGrpc(b.status());
  if (b->notice.has_value()) QueueNotices({*b->notice});
  FillHeader(resp->mutable_header());
  ToProto(b->group, resp->mutable_group());
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::SetFailpoint(
    grpc::ServerContext* ctx, const v1::SetFailpointRequest* request,
    v1::SetFailpointResponse* response) {
  PLEXUS_AUTHORIZE(ctx);
  return HandleSetFailpoint(*request, response);
}

grpc::Status CoordinatorService::TriggerCheckpoint(
    grpc::ServerContext* ctx, const v1::TriggerCheckpointRequest* req,
    v1::TriggerCheckpointResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  auto c = GetCheckpointer();
  if (!c.ok()) return ToGrpc(c.status());
  VLOG(1) << "TriggerCheckpoint job '" << req->job_id() << "' step "
          << req->step_id();
  absl::StatusOr<checkpointing::TakeResult> r =
      (*c)->Take(req->job_id(), req->step_id());
  if (!r.ok()) {
    RecordEvent(EventSeverity::kWarning, "checkpoint",
                absl::StrCat("checkpoint of job '", req->job_id(),
                             "' failed: ", r.status().ToString()));
    return ToGrpc(r.status());
  }
  WatchCheckpoints();
  FillHeader(resp->mutable_header());
  resp->set_checkpoint_id(r->manifest.checkpoint_id);
  resp->set_step_id(r->manifest.step_id);
  ToProto(r->manifest, resp->mutable_manifest());
  resp->set_pause_ms(absl::ToInt64Milliseconds(r->pause));
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::ListCheckpoints(
    grpc::ServerContext* ctx, const v1::ListCheckpointsRequest* req,
    v1::ListCheckpointsResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  auto c = GetCheckpointer();
  if (!c.ok()) return ToGrpc(c.status());
  auto list = (*c)->List(req->checkpoint_id());
  if (!list.ok()) return ToGrpc(list.status());
  FillHeader(resp->mutable_header());
  for (const checkpointing::Manifest& m : *list) {
    v1::CheckpointManifest* p = resp->add_manifests();
    ToProto(m, p);
    if (!req->include_files()) {
      for (auto& s : *p->mutable_shards()) s.clear_files();
    }
  }
  return grpc::Status::OK;
}

grpc::Status CoordinatorService::Restore(
    grpc::ServerContext* ctx, const v1::RestoreCheckpointRequest* req,
    v1::RestoreCheckpointResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (stopping_.load()) return ToGrpc(Unavailable());
  auto c = GetCheckpointer();
  if (!c.ok()) return ToGrpc(c.status());
  auto r = (*c)->Restore(req->checkpoint_id(), req->fall_back_to_previous());
  MarkDirty();
  if (!r.ok()) {
    RecordEvent(EventSeverity::kError, "restore",
                absl::StrCat("restore of checkpoint ", req->checkpoint_id(),
                             " failed: ", r.status().ToString()));
    return ToGrpc(r.status());
  }
  // The checkpointer logged the restore.
  RecordEvent(EventSeverity::kInfo, "restore",
              absl::StrFormat("checkpoint %d of job '%s' (step %d) restored "
                              "on request in %d ms, %d shard(s) skipped",
                              r->manifest.checkpoint_id, r->manifest.job_id,
                              r->manifest.step_id,
                              absl::ToInt64Milliseconds(r->duration),
                              r->skipped.size()),
              /*log=*/false);
  FillHeader(resp->mutable_header());
  ToProto(r->manifest, resp->mutable_manifest());
  for (const absl::Status& s : r->skipped) {
    *resp->add_skipped() = ToStatusProto(s);
  }
  resp->set_restore_ms(absl::ToInt64Milliseconds(r->duration));
  return grpc::Status::OK;
}

}  // namespace plexus::coordinator
