#include "coordinator/scheduling/scheduler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "coordinator/membership/names.h"

namespace plexus::coordinator::scheduling {

absl::string_view JobStateName(JobState state) {
  switch (state) {
    case JobState::kRunning:
      return "running";
    case JobState::kSucceeded:
      return "succeeded";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "?";
}

absl::string_view ClosureStateName(ClosureState state) {
  switch (state) {
    case ClosureState::kQueued:
      return "queued";
    case ClosureState::kRunning:
      return "running";
    case ClosureState::kSucceeded:
      return "succeeded";
    case ClosureState::kFailed:
      return "failed";
    case ClosureState::kCancelled:
      return "cancelled";
  }
  return "?";
}

struct Scheduler::Closure {
  uint64_t id = 0;
  Job* job = nullptr;
  std::string function;
  // Shared by every closure of a step loop.
  std::shared_ptr<const std::string> args;
  uint64_t step_id = 0;
  uint32_t replica = 0;
  uint32_t replicas = 1;
  ClosureState state = ClosureState::kQueued;
  uint32_t attempts = 0;
  uint32_t failures = 0;
  uint32_t min_valid_attempt = 0;
  std::string result;
  absl::Status error;
  // Worker running it; 0: none.
  uint64_t running_on = 0;
  // Worker whose attempt failed last; another one is preferred. 0: none.
  uint64_t avoid_worker = 0;
  // When the running attempt exceeds its time budget.
  absl::Time deadline = absl::InfiniteFuture();
};

struct Scheduler::Job {
  JobSpec spec;
  JobState state = JobState::kRunning;
  absl::Status error;
  uint64_t requeues = 0;
  uint64_t max_step_id = 0;
  absl::Time submitted_at;
  absl::Time finished_at = absl::InfiniteFuture();
  std::vector<uint64_t> closure_ids;
  // Closure ids of spec's explicit list (what SubmitJob returns).
  std::vector<uint64_t> listed_ids;
  // Closures per state.
  std::map<ClosureState, uint64_t> counts;
  // Step -> closures of it not yet succeeded.
  std::map<uint64_t, uint32_t> unfinished_steps;
  std::set<std::string> functions;
  // Since when no live worker could run its pending closures;
  // InfiniteFuture: one can.
  absl::Time no_worker_since = absl::InfiniteFuture();

  uint64_t count(ClosureState s) const {
    auto it = counts.find(s);
    return it == counts.end() ? 0 : it->second;
  }
  uint64_t pending() const {
    return count(ClosureState::kQueued) + count(ClosureState::kRunning);
  }
};

struct Scheduler::Worker {
  uint64_t id = 0;
  uint64_t incarnation = 0;
  std::set<std::string> functions;
  bool draining = false;
  // Closure it runs; 0: idle.
  uint64_t running_closure = 0;
};

namespace {

// How far a restored scheduler numbers a closure's attempts past the saved
// count: more than a coordinator can dispatch of one closure between two
// saves (state is saved every few hundred ms), few enough for 65,535
// coordinator restarts of one job before the numbers run out.
constexpr uint32_t kRestartAttemptGap = 1 << 16;

bool IsRetryable(const absl::Status& s) {
  return absl::IsUnavailable(s) || absl::IsAborted(s) ||
         absl::IsDeadlineExceeded(s);
}

bool IsFinal(ClosureState s) {
  return s == ClosureState::kSucceeded || s == ClosureState::kFailed ||
         s == ClosureState::kCancelled;
}

}  // namespace

Scheduler::Scheduler(SchedulerOptions options, Clock* clock)
    : options_(options), clock_(clock) {}

Scheduler::~Scheduler() = default;

void Scheduler::Changed() {
  absl::Time now = clock_->Now();
  ExpireClosures(now);
  UpdateStarvation(now);
  cv_.SignalAll();
}

void Scheduler::ExpireClosures(absl::Time now) {
  std::vector<uint64_t> expired;
  for (const auto& [id, w] : workers_) {
    if (w->running_closure == 0) continue;
    const Closure& c = *closures_[w->running_closure];
    if (c.deadline <= now) expired.push_back(c.id);
  }
  for (uint64_t id : expired) {
    Closure& c = *closures_[id];
    uint64_t worker = c.running_on;
    Requeue(c, /*failure=*/true,
            absl::DeadlineExceededError(
                absl::StrCat("closure ", c.id, " (step ", c.step_id,
                             ") ran past its time budget of ",
                             absl::FormatDuration(c.job->spec.closure_timeout),
                             " on worker id ", worker)),
            worker);
  }
}

absl::Time Scheduler::NextTimeout() const {
  absl::MutexLock lock(&mu_);
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [id, w] : workers_) {
    if (w->running_closure != 0) {
      next = std::min(next, closures_.at(w->running_closure)->deadline);
    }
  }
  for (const auto& [id, job] : jobs_) {
    if (job->no_worker_since != absl::InfiniteFuture()) {
      next = std::min(next, job->no_worker_since + job->spec.no_worker_timeout);
    }
  }
  return next;
}

void Scheduler::Tick() {
  absl::MutexLock lock(&mu_);
  Changed();
}

void Scheduler::WaitUntil(absl::Time deadline) {
  absl::Duration left = deadline - clock_->Now();
  if (left <= absl::ZeroDuration()) return;
  cv_.WaitWithTimeout(&mu_, left);
}

Scheduler::Job* Scheduler::FindJob(absl::string_view job_id) {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

const Scheduler::Job* Scheduler::FindJob(absl::string_view job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? nullptr : it->second.get();
}

absl::StatusOr<Scheduler::Job*> Scheduler::GetJob(absl::string_view job_id) {
  Job* job = FindJob(job_id);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown job ", job_id));
  }
  return job;
}

absl::StatusOr<const Scheduler::Job*> Scheduler::GetJob(
    absl::string_view job_id) const {
  const Job* job = FindJob(job_id);
  if (job == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown job ", job_id));
  }
  return job;
}

uint64_t Scheduler::AddClosure(Job& job, const std::string& function,
                               std::shared_ptr<const std::string> args,
                               uint64_t step_id, uint32_t replica,
                               uint32_t replicas) {
  auto c = std::make_unique<Closure>();
  c->id = next_closure_id_++;
  c->job = &job;
  c->function = function;
  c->args = std::move(args);
  c->step_id = step_id;
  c->replica = replica;
  c->replicas = replicas;
  uint64_t id = c->id;
  job.closure_ids.push_back(id);
  ++job.counts[ClosureState::kQueued];
  ++job.unfinished_steps[step_id];
  job.max_step_id = std::max(job.max_step_id, step_id);
  job.functions.insert(function);
  queue_.push_back(id);
  closures_.emplace(id, std::move(c));
  return id;
}

absl::StatusOr<SubmitResult> Scheduler::SubmitJob(const JobSpec& spec) {
  if (!spec.job_id.empty()) {
    PLEXUS_RETURN_IF_ERROR(ValidateName(spec.job_id, "job id"));
  }
  uint64_t total = 0;
  if (const auto* loop = std::get_if<StepLoop>(&spec.work)) {
    PLEXUS_RETURN_IF_ERROR(ValidateName(loop->function_name, "function name"));
    if (loop->num_steps == 0) {
      return absl::InvalidArgumentError("a step loop needs num_steps > 0");
    }
    uint64_t replicas = std::max<uint32_t>(loop->replicas_per_step, 1);
    if (loop->num_steps > options_.max_closures_per_job / replicas) {
      return absl::InvalidArgumentError(
          absl::StrCat("job of ", loop->num_steps, " steps x ", replicas,
                       " replicas is over the limit of ",
                       options_.max_closures_per_job, " closures"));
    }
    total = loop->num_steps * replicas;
  } else if (const auto* list =
                 std::get_if<std::vector<ClosureSpec>>(&spec.work)) {
    for (size_t i = 0; i < list->size(); ++i) {
      PLEXUS_RETURN_IF_ERROR(
          ValidateName((*list)[i].function_name,
                       absl::StrCat("function name of closure ", i)));
    }
    total = list->size();
    if (total > options_.max_closures_per_job) {
      return absl::InvalidArgumentError(
          absl::StrCat("job of ", total, " closures is over the limit of ",
                       options_.max_closures_per_job));
    }
  }
  (void)total;

  absl::MutexLock lock(&mu_);
  std::string job_id = spec.job_id;
  if (job_id.empty()) {
    do {
      job_id = absl::StrCat("job-", next_job_number_++);
    } while (jobs_.count(job_id) != 0);
  } else if (Job* existing = FindJob(job_id); existing != nullptr) {
    if (!(existing->spec.work == spec.work)) {
      return absl::AlreadyExistsError(
          absl::StrCat("job ", job_id, " already exists with different work"));
    }
    return SubmitResult{job_id, existing->listed_ids, /*created=*/false};
  }

  auto job = std::make_unique<Job>();
  Job& j = *job;
  j.spec = spec;
  j.spec.job_id = job_id;
  if (j.spec.no_worker_timeout <= absl::ZeroDuration()) {
    j.spec.no_worker_timeout = options_.no_worker_timeout;
  }
  if (j.spec.max_attempts == 0) j.spec.max_attempts = options_.max_attempts;
  j.submitted_at = clock_->Now();
  jobs_.emplace(job_id, std::move(job));
  job_order_.push_back(job_id);

  if (const auto* loop = std::get_if<StepLoop>(&spec.work)) {
    auto args = std::make_shared<const std::string>(loop->args);
    uint32_t replicas = std::max<uint32_t>(loop->replicas_per_step, 1);
    uint64_t first = loop->first_step_id == 0 ? 1 : loop->first_step_id;
    for (uint64_t s = 0; s < loop->num_steps; ++s) {
      for (uint32_t r = 0; r < replicas; ++r) {
        AddClosure(j, loop->function_name, args, first + s, r, replicas);
      }
    }
  } else if (const auto* list =
                 std::get_if<std::vector<ClosureSpec>>(&spec.work)) {
    for (const ClosureSpec& c : *list) {
      uint64_t step = c.step_id == 0 ? j.max_step_id + 1 : c.step_id;
      j.listed_ids.push_back(
          AddClosure(j, c.function_name,
                     std::make_shared<const std::string>(c.args), step, 0, 1));
    }
  }
  Changed();
  return SubmitResult{job_id, j.listed_ids, /*created=*/true};
}

absl::StatusOr<Scheduled> Scheduler::Schedule(absl::string_view job_id,
                                              const ClosureSpec& closure) {
  PLEXUS_RETURN_IF_ERROR(ValidateName(closure.function_name, "function name"));
  absl::MutexLock lock(&mu_);
  PLEXUS_ASSIGN_OR_RETURN(Job * job, GetJob(job_id));
  if (job->state == JobState::kFailed || job->state == JobState::kCancelled) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is ", JobStateName(job->state), ": ",
                     job->error.message()));
  }
  if (job->closure_ids.size() >= options_.max_closures_per_job) {
    return absl::InvalidArgumentError(
        absl::StrCat("job ", job_id, " has the most closures allowed, ",
                     options_.max_closures_per_job));
  }
  uint64_t step = closure.step_id == 0 ? job->max_step_id + 1 : closure.step_id;
  uint64_t id =
      AddClosure(*job, closure.function_name,
                 std::make_shared<const std::string>(closure.args), step, 0, 1);
  if (job->state == JobState::kSucceeded) {
    job->state = JobState::kRunning;
    job->finished_at = absl::InfiniteFuture();
  }
  Changed();
  return Scheduled{id, step};
}

bool Scheduler::CanRun(const Worker& w, const std::string& function) const {
  return !w.draining && w.functions.count(function) != 0;
}

uint32_t Scheduler::CapableWorkers(const Job& job) const {
  uint32_t n = 0;
  for (const auto& [id, w] : workers_) {
    if (w->draining) continue;
    for (const std::string& f : job.functions) {
      if (w->functions.count(f) != 0) {
        ++n;
        break;
      }
    }
  }
  return n;
}

void Scheduler::UpdateStarvation(absl::Time now) {
  for (auto& [id, job] : jobs_) {
    bool starving = job->state == JobState::kRunning && job->pending() > 0 &&
                    CapableWorkers(*job) == 0;
    if (!starving) {
      job->no_worker_since = absl::InfiniteFuture();
    } else if (job->no_worker_since == absl::InfiniteFuture()) {
      job->no_worker_since = now;
    }
  }
}

bool Scheduler::AnotherWorkerCanRun(const Closure& c,
                                    uint64_t worker_id) const {
  for (const auto& [id, w] : workers_) {
    if (id != worker_id && w->running_closure == 0 && CanRun(*w, c.function)) {
      return true;
    }
  }
  return false;
}

Scheduler::Closure* Scheduler::PickClosure(const Worker& w) {
  for (size_t i = 0; i < queue_.size();) {
    auto it = closures_.find(queue_[i]);
    if (it == closures_.end() || it->second->state != ClosureState::kQueued) {
      queue_.erase(queue_.begin() + i);
      continue;
    }
    Closure& c = *it->second;
    if (dispatch_limit_.has_value() && c.step_id > *dispatch_limit_) {
      ++i;
      continue;
    }
    if (CanRun(w, c.function) &&
        (c.avoid_worker != w.id || !AnotherWorkerCanRun(c, w.id))) {
      queue_.erase(queue_.begin() + i);
      return &c;
    }
    ++i;
  }
  return nullptr;
}

Task Scheduler::MakeTask(const Closure& c) const {
  Task t;
  t.closure_id = c.id;
  t.job_id = c.job->spec.job_id;
  t.function_name = c.function;
  t.args = *c.args;
  t.step_id = c.step_id;
  t.attempt = c.attempts;
  t.replica_index = c.replica;
  t.replicas_per_step = c.replicas;
  t.time_budget = c.job->spec.closure_timeout;
  return t;
}

void Scheduler::FinishClosure(Closure& c, ClosureState state,
                              absl::Status error, std::string result) {
  Job& job = *c.job;
  --job.counts[c.state];
  ++job.counts[state];
  c.state = state;
  c.error = std::move(error);
  c.result = std::move(result);
  if (c.running_on != 0) {
    auto w = workers_.find(c.running_on);
    if (w != workers_.end() && w->second->running_closure == c.id) {
      w->second->running_closure = 0;
    }
    c.running_on = 0;
  }
  if (state == ClosureState::kSucceeded) {
    auto step = job.unfinished_steps.find(c.step_id);
    if (step != job.unfinished_steps.end() && --step->second == 0) {
      job.unfinished_steps.erase(step);
    }
  }
}

void Scheduler::EndJob(Job& job, JobState state, absl::Status error) {
  for (uint64_t id : job.closure_ids) {
    Closure& c = *closures_[id];
    if (IsFinal(c.state)) continue;
    FinishClosure(
        c, ClosureState::kCancelled,
        state == JobState::kCancelled
            ? error
            : Annotate(error, absl::StrCat("job ", job.spec.job_id, " failed")),
        "");
  }
  job.state = state;
  job.error = std::move(error);
  job.finished_at = clock_->Now();
}

void Scheduler::UpdateJobState(Job& job) {
  if (job.state == JobState::kRunning && !job.closure_ids.empty() &&
      job.pending() == 0) {
    job.state = JobState::kSucceeded;
    job.finished_at = clock_->Now();
  }
}

void Scheduler::Requeue(Closure& c, bool failure, const absl::Status& why,
                        uint64_t avoid_worker) {
  Job& job = *c.job;
  if (c.running_on != 0) {
    auto w = workers_.find(c.running_on);
    if (w != workers_.end() && w->second->running_closure == c.id) {
      w->second->running_closure = 0;
    }
    c.running_on = 0;
  }
  if (failure && ++c.failures >= job.spec.max_attempts) {
    absl::Status error(
        why.code(), absl::StrCat("closure ", c.id, " (step ", c.step_id,
                                 ") of job ", job.spec.job_id, " failed ",
                                 c.failures, " times; last: ", why.message()));
    FinishClosure(c, ClosureState::kFailed, error, "");
    EndJob(job, JobState::kFailed, error);
    return;
  }
  --job.counts[c.state];
  ++job.counts[ClosureState::kQueued];
  c.state = ClosureState::kQueued;
  c.avoid_worker = avoid_worker;
  ++job.requeues;
  queue_.push_front(c.id);
}

absl::StatusOr<Scheduler::Worker*> Scheduler::CurrentWorker(
    uint64_t worker_id, uint64_t incarnation) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second->incarnation != incarnation) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrCat(
            "worker id ", worker_id, " incarnation ", incarnation,
            " is not a current worker of the scheduler; register again")),
        ErrorReason::kStaleIncarnation);
  }
  return it->second.get();
}

absl::Status Scheduler::AddWorker(uint64_t worker_id, uint64_t incarnation,
                                  std::vector<std::string> functions) {
  absl::MutexLock lock(&mu_);
  auto it = workers_.find(worker_id);
  if (it != workers_.end()) {
    Worker& w = *it->second;
    if (incarnation < w.incarnation) {
      return WithReason(
          absl::FailedPreconditionError(absl::StrCat(
              "worker id ", worker_id, " incarnation ", incarnation,
              " is older than its current ", w.incarnation)),
          ErrorReason::kStaleIncarnation);
    }
    if (incarnation == w.incarnation) {
      w.functions = std::set<std::string>(functions.begin(), functions.end());
      Changed();
      return absl::OkStatus();
    }
    if (w.running_closure != 0) {
      Requeue(*closures_[w.running_closure], /*failure=*/true,
              absl::UnavailableError(absl::StrCat(
                  "worker id ", worker_id, " restarted (incarnation ",
                  w.incarnation, " replaced by ", incarnation, ")")),
              /*avoid_worker=*/0);
    }
    workers_.erase(it);
  }
  auto w = std::make_unique<Worker>();
  w->id = worker_id;
  w->incarnation = incarnation;
  w->functions = std::set<std::string>(functions.begin(), functions.end());
  workers_.emplace(worker_id, std::move(w));
  Changed();
  return absl::OkStatus();
}

std::vector<uint64_t> Scheduler::RemoveWorker(uint64_t worker_id,
                                              uint64_t incarnation,
                                              absl::string_view reason,
                                              bool failure) {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> requeued;
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second->incarnation != incarnation) {
    return requeued;
  }
  if (uint64_t running = it->second->running_closure; running != 0) {
    Closure& c = *closures_[running];
    Requeue(c, failure,
            absl::UnavailableError(
                absl::StrCat("worker id ", worker_id, " was lost: ", reason)),
            worker_id);
    if (c.state == ClosureState::kQueued) requeued.push_back(running);
  }
  workers_.erase(it);
  Changed();
  return requeued;
}

absl::Status Scheduler::DrainWorker(uint64_t worker_id, uint64_t incarnation) {
  absl::MutexLock lock(&mu_);
  PLEXUS_ASSIGN_OR_RETURN(Worker * w, CurrentWorker(worker_id, incarnation));
  w->draining = true;
  Changed();
  return absl::OkStatus();
}

absl::StatusOr<NextTaskResult> Scheduler::NextTask(uint64_t worker_id,
                                                   uint64_t incarnation,
                                                   absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (true) {
    PLEXUS_ASSIGN_OR_RETURN(Worker * w, CurrentWorker(worker_id, incarnation));
    NextTaskResult result;
    if (w->draining) {
      result.no_task_reason = NoTaskReason::kDraining;
      return result;
    }
    if (w->running_closure != 0) {
      result.task = MakeTask(*closures_[w->running_closure]);
      return result;
    }
    if (!paused_) {
      if (Closure* c = PickClosure(*w); c != nullptr) {
        Job& job = *c->job;
        --job.counts[ClosureState::kQueued];
        ++job.counts[ClosureState::kRunning];
        c->state = ClosureState::kRunning;
        ++c->attempts;
        c->running_on = w->id;
        c->deadline = job.spec.closure_timeout > absl::ZeroDuration()
                          ? clock_->Now() + job.spec.closure_timeout
                          : absl::InfiniteFuture();
        w->running_closure = c->id;
        result.task = MakeTask(*c);
        Changed();
        return result;
      }
    }
    if (clock_->Now() >= deadline) {
      result.retry_after = options_.retry_after;
      if (paused_ || dispatch_limit_.has_value()) {
        result.no_task_reason = NoTaskReason::kPaused;
      } else if (RunningJobIdsLocked().empty()) {
        result.no_task_reason = NoTaskReason::kNoJob;
      } else {
        result.no_task_reason = NoTaskReason::kQueueEmpty;
      }
      return result;
    }
    WaitUntil(deadline);
  }
}

absl::StatusOr<ReportDisposition> Scheduler::ReportResult(
    uint64_t worker_id, uint64_t incarnation, const Report& report) {
  absl::MutexLock lock(&mu_);
  PLEXUS_ASSIGN_OR_RETURN(Worker * w, CurrentWorker(worker_id, incarnation));
  auto it = closures_.find(report.closure_id);
  if (it == closures_.end()) {
    return absl::NotFoundError(
        absl::StrCat("unknown closure ", report.closure_id));
  }
  Closure& c = *it->second;
  Job& job = *c.job;
  bool this_attempt = c.state == ClosureState::kRunning &&
                      c.running_on == w->id && c.attempts == report.attempt;
  ReportDisposition disposition = ReportDisposition::kDuplicate;
  if (IsFinal(c.state) || report.attempt < c.min_valid_attempt) {
    disposition = ReportDisposition::kDuplicate;
  } else if (report.handed_back) {
    if (this_attempt) {
      Requeue(c, /*failure=*/false, absl::UnavailableError("handed back"),
              /*avoid_worker=*/w->id);
      disposition = ReportDisposition::kRequeued;
    }
  } else if (report.error.ok()) {
    // First result wins, whichever attempt produced it.
    FinishClosure(c, ClosureState::kSucceeded, absl::OkStatus(), report.result);
    UpdateJobState(job);
    disposition = ReportDisposition::kAccepted;
  } else if (this_attempt) {
    absl::Status error(
        report.error.code(),
        absl::StrCat("closure ", c.id, " (step ", c.step_id, ") of job ",
                     job.spec.job_id, " on worker id ", worker_id, ": ",
                     report.error.message()));
    if (IsRetryable(report.error)) {
      Requeue(c, /*failure=*/true, error, /*avoid_worker=*/w->id);
      disposition = c.state == ClosureState::kQueued
                        ? ReportDisposition::kRequeued
                        : ReportDisposition::kFailed;
    } else {
      FinishClosure(c, ClosureState::kFailed, error, "");
      EndJob(job, JobState::kFailed, error);
      disposition = ReportDisposition::kFailed;
    }
  }
  Changed();
  return disposition;
}

JobStatus Scheduler::StatusOf(const Job& job) const {
  JobStatus s;
  s.job_id = job.spec.job_id;
  s.state = job.state;
  s.closures_total = job.closure_ids.size();
  s.closures_succeeded = job.count(ClosureState::kSucceeded);
  s.closures_running = job.count(ClosureState::kRunning);
  s.closures_queued = job.count(ClosureState::kQueued);
  s.closures_failed = job.count(ClosureState::kFailed);
  s.closures_cancelled = job.count(ClosureState::kCancelled);
  s.requeues = job.requeues;
  s.completed_through_step_id = job.unfinished_steps.empty()
                                    ? job.max_step_id
                                    : job.unfinished_steps.begin()->first - 1;
  s.error = job.error;
  s.submitted_at = job.submitted_at;
  s.finished_at = job.finished_at;
  s.workers_alive = CapableWorkers(job);
  return s;
}

absl::StatusOr<JobStatus> Scheduler::Join(absl::string_view job_id,
                                          absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (true) {
    PLEXUS_ASSIGN_OR_RETURN(Job * job, GetJob(job_id));
    switch (job->state) {
      case JobState::kSucceeded:
        return StatusOf(*job);
      case JobState::kFailed:
      case JobState::kCancelled:
        return job->error;
      case JobState::kRunning:
        if (job->pending() == 0) return StatusOf(*job);
        break;
    }
    absl::Time now = clock_->Now();
    absl::Time give_up =
        job->no_worker_since == absl::InfiniteFuture()
            ? absl::InfiniteFuture()
            : job->no_worker_since + job->spec.no_worker_timeout;
    if (now >= give_up) {
      return absl::UnavailableError(absl::StrCat(
          "no live worker able to run job ", job_id, " (functions ",
          absl::StrJoin(job->functions, ", "), ") for ",
          absl::FormatDuration(now - job->no_worker_since), "; ",
          job->pending(), " closures pending"));
    }
    if (now >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "job ", job_id, " not finished by the deadline: ", job->pending(),
          " of ", job->closure_ids.size(), " closures pending"));
    }
    WaitUntil(std::min(deadline, give_up));
  }
}

absl::StatusOr<ClosureResult> Scheduler::Fetch(uint64_t closure_id,
                                               absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  while (true) {
    auto it = closures_.find(closure_id);
    if (it == closures_.end()) {
      return absl::NotFoundError(absl::StrCat("unknown closure ", closure_id));
    }
    const Closure& c = *it->second;
    if (IsFinal(c.state) || clock_->Now() >= deadline) {
      ClosureResult r;
      r.closure_id = c.id;
      r.job_id = c.job->spec.job_id;
      r.state = c.state;
      r.result = c.result;
      r.error = c.error;
      r.step_id = c.step_id;
      r.attempts = c.attempts;
      return r;
    }
    WaitUntil(deadline);
  }
}

absl::StatusOr<JobStatus> Scheduler::Cancel(absl::string_view job_id,
                                            absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  PLEXUS_ASSIGN_OR_RETURN(Job * job, GetJob(job_id));
  if (job->state == JobState::kRunning) {
    EndJob(*job, JobState::kCancelled,
           absl::CancelledError(reason.empty() ? "cancelled" : reason));
    Changed();
  }
  return StatusOf(*job);
}

absl::Status Scheduler::FailJob(absl::string_view job_id, absl::Status error) {
  absl::MutexLock lock(&mu_);
  PLEXUS_ASSIGN_OR_RETURN(Job * job, GetJob(job_id));
  if (job->state == JobState::kRunning || job->state == JobState::kSucceeded) {
    if (error.ok()) error = absl::UnknownError("failed");
    EndJob(*job, JobState::kFailed, std::move(error));
    Changed();
  }
  return absl::OkStatus();
}

absl::StatusOr<JobStatus> Scheduler::GetJobStatus(
    absl::string_view job_id) const {
  absl::MutexLock lock(&mu_);
  if (job_id.empty()) {
    if (job_order_.empty()) return absl::NotFoundError("no job submitted yet");
    job_id = job_order_.back();
  }
  PLEXUS_ASSIGN_OR_RETURN(const Job* job, GetJob(job_id));
  return StatusOf(*job);
}

std::vector<std::string> Scheduler::RunningJobIdsLocked() const {
  std::vector<std::string> out;
  for (const std::string& id : job_order_) {
    if (FindJob(id)->state == JobState::kRunning) out.push_back(id);
  }
  return out;
}

std::vector<std::string> Scheduler::RunningJobIds() const {
  absl::MutexLock lock(&mu_);
  return RunningJobIdsLocked();
}

void Scheduler::Pause(absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  paused_ = true;
  pause_reason_ = std::string(reason);
  Changed();
}

void Scheduler::SetDispatchLimit(std::optional<uint64_t> max_step_id) {
  absl::MutexLock lock(&mu_);
  dispatch_limit_ = max_step_id;
  Changed();
}

absl::StatusOr<uint64_t> Scheduler::RequeueStepsAfter(absl::string_view job_id,
                                                      uint64_t step_id) {
  absl::MutexLock lock(&mu_);
  PLEXUS_ASSIGN_OR_RETURN(Job * job, GetJob(job_id));
  if (job->state == JobState::kFailed || job->state == JobState::kCancelled) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is ", JobStateName(job->state)));
  }
  uint64_t n = 0;
  // Walk backwards so that push_front leaves the queue in step order.
  for (auto id = job->closure_ids.rbegin(); id != job->closure_ids.rend();
       ++id) {
    Closure& c = *closures_[*id];
    if (c.step_id <= step_id) continue;
    if (c.state == ClosureState::kSucceeded) {
      --job->counts[ClosureState::kSucceeded];
      ++job->counts[ClosureState::kQueued];
      ++job->unfinished_steps[c.step_id];
      c.state = ClosureState::kQueued;
      c.result.clear();
      queue_.push_front(c.id);
    } else if (c.state == ClosureState::kRunning) {
      Requeue(c, /*failure=*/false, absl::AbortedError("restored"), 0);
      --job->requeues;  // counted below
    } else {
      // A queued closure may still have an attempt out there that ran
      // against the pre-restore state: one a previous coordinator
      // dispatched after its last save (see Restore's attempt gap).
      if (c.state == ClosureState::kQueued) {
        c.min_valid_attempt = c.attempts + 1;
      }
      continue;
    }
    c.min_valid_attempt = c.attempts + 1;
    ++job->requeues;
    ++n;
  }
  if (n > 0 && job->state == JobState::kSucceeded) {
    job->state = JobState::kRunning;
    job->finished_at = absl::InfiniteFuture();
  }
  Changed();
  return n;
}

void Scheduler::Resume() {
  absl::MutexLock lock(&mu_);
  paused_ = false;
  pause_reason_.clear();
  Changed();
}

SchedulerSnapshot Scheduler::Snapshot() const {
  absl::MutexLock lock(&mu_);
  SchedulerSnapshot s;
  s.next_closure_id = next_closure_id_;
  s.next_job_number = next_job_number_;
  for (const std::string& id : job_order_) {
    const Job& job = *FindJob(id);
    JobRecord r;
    r.spec = job.spec;
    r.state = job.state;
    r.error = job.error;
    r.requeues = job.requeues;
    r.max_step_id = job.max_step_id;
    r.submitted_at = job.submitted_at;
    r.finished_at = job.finished_at;
    for (uint64_t cid : job.closure_ids) {
      const Closure& c = *closures_.at(cid);
      ClosureRecord cr;
      cr.closure_id = c.id;
      cr.function_name = c.function;
      cr.args = *c.args;
      cr.step_id = c.step_id;
      cr.replica_index = c.replica;
      cr.replicas_per_step = c.replicas;
      cr.state = c.state;
      cr.attempts = c.attempts;
      cr.failures = c.failures;
      cr.min_valid_attempt = c.min_valid_attempt;
      cr.result = c.result;
      cr.error = c.error;
      r.closures.push_back(std::move(cr));
    }
    s.jobs.push_back(std::move(r));
  }
  return s;
}

absl::StatusOr<std::unique_ptr<Scheduler>> Scheduler::Restore(
    const SchedulerSnapshot& snapshot, SchedulerOptions options, Clock* clock) {
  auto s = std::make_unique<Scheduler>(options, clock);
  absl::MutexLock lock(&s->mu_);
  s->next_closure_id_ = snapshot.next_closure_id;
  s->next_job_number_ = snapshot.next_job_number;
  for (const JobRecord& r : snapshot.jobs) {
    PLEXUS_RETURN_IF_ERROR(ValidateName(r.spec.job_id, "job id"),
                           "scheduler snapshot");
    if (s->jobs_.count(r.spec.job_id) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "scheduler snapshot: job ", r.spec.job_id, " appears twice"));
    }
    auto job = std::make_unique<Job>();
    Job& j = *job;
    j.spec = r.spec;
    j.state = r.state;
    j.error = r.error;
    j.requeues = r.requeues;
    j.max_step_id = r.max_step_id;
    j.submitted_at = r.submitted_at;
    j.finished_at = r.finished_at;
    s->jobs_.emplace(r.spec.job_id, std::move(job));
    s->job_order_.push_back(r.spec.job_id);
    size_t listed = 0;
    if (const auto* list =
            std::get_if<std::vector<ClosureSpec>>(&r.spec.work)) {
      listed = list->size();
    }
    for (const ClosureRecord& cr : r.closures) {
      if (cr.closure_id == 0 || cr.closure_id >= snapshot.next_closure_id ||
          s->closures_.count(cr.closure_id) != 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("scheduler snapshot: bad closure id ", cr.closure_id));
      }
      auto c = std::make_unique<Closure>();
      c->id = cr.closure_id;
      c->job = &j;
      c->function = cr.function_name;
      c->args = std::make_shared<const std::string>(cr.args);
      c->step_id = cr.step_id;
      c->replica = cr.replica_index;
      c->replicas = cr.replicas_per_step;
      c->state =
          cr.state == ClosureState::kRunning ? ClosureState::kQueued : cr.state;
      c->attempts = cr.attempts;
      if (!IsFinal(c->state)) {
        // The coordinator that saved this may have dispatched further
        // attempts before it died; this one numbers its own past them, so
        // that a restore (RequeueStepsAfter) can fence those unknown ones.
        c->attempts = static_cast<uint32_t>(std::min<uint64_t>(
            uint64_t{cr.attempts} + kRestartAttemptGap, UINT32_MAX - 1));
      }
      c->failures = cr.failures;
      c->min_valid_attempt = cr.min_valid_attempt;
      c->result = cr.result;
      c->error = cr.error;
      j.closure_ids.push_back(c->id);
      if (j.listed_ids.size() < listed) j.listed_ids.push_back(c->id);
      ++j.counts[c->state];
      if (c->state != ClosureState::kSucceeded)
        ++j.unfinished_steps[c->step_id];
      j.functions.insert(c->function);
      if (c->state == ClosureState::kQueued) s->queue_.push_back(c->id);
      s->closures_.emplace(c->id, std::move(c));
    }
  }
  s->Changed();
  return s;
}

}  // namespace plexus::coordinator::scheduling
