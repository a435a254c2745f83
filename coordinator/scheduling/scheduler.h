// The closure queue: jobs, closures (remote values), dispatch to workers,
// re-queue on failure, Join and Fetch. Pure logic over an injected Clock; the
// gRPC glue maps SubmitJob/Schedule/NextTask/ReportResult/Join/Fetch/CancelJob
// onto it one to one.
//
// Model.
//   * A job is a step loop (one named function run for num_steps steps,
//     replicas_per_step closures per step), an explicit list of closures, or
//     empty (interactive: Schedule adds closures). Every closure gets a
//     closure id (its remote value id) and a step id.
//   * Workers are added with the functions they registered (AddWorker, after
//     Membership::Register) and removed when they die or leave (RemoveWorker,
//     after a health event). A worker runs at most one closure at a time.
//   * NextTask hands the oldest queued closure the worker can run (FIFO over
//     all jobs; re-queued closures go to the front) and may wait for one until
//     a deadline; any change that could give a waiting worker work wakes it,
//     so every idle live worker is busy whenever there is work it can run.
//   * Report records a result (first result wins; later ones are DUPLICATE), or
//     re-queues the closure on a retryable error (UNAVAILABLE, ABORTED,
//     DEADLINE_EXCEEDED) or a hand-back, or fails the closure and its job on
//     any other error.
//   * A worker that dies (RemoveWorker, or AddWorker with a newer incarnation)
//     has its in-flight closure re-queued with its attempt count kept; the
//     closure prefers another worker for its next attempt when one can run it.
//   * A closure that failed max_attempts times (retryable errors, worker
//     deaths, attempts past the job's closure_timeout; hand-backs do not
//     count) fails permanently.
//   * Checkpoints and restores: SetDispatchLimit(C) holds back steps > C;
//     RequeueStepsAfter(job, C) runs every step > C again (reports of the
//     attempts that ran before it are DUPLICATE). Pause/Resume stop dispatch.
//   * Join waits for every closure of a job: OK once all succeeded; the job's
//     error once it failed; CANCELLED once cancelled; UNAVAILABLE once no live
//     worker could run its pending closures for no_worker_timeout (the job is
//     not failed: it resumes if a worker comes); DEADLINE_EXCEEDED at the
//     caller's deadline.
//
// Time. Deadlines are instants of the injected Clock. Waiting uses real
// condition-variable timeouts computed from it, and every state change wakes
// waiters; the service calls Tick() every so often (NextTimeout() says when it
// matters) to apply closure time budgets, and tests with a FakeClock call it
// after advancing the clock so waiters re-read it. Nothing here sleeps.
//
// Persistence: Snapshot()/Restore(); coordinator/state stores them.
//
// Thread safety: every method may be called from any thread; NextTask, Join
// and Fetch block (up to their deadline) without holding up other calls.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace plexus::coordinator::scheduling {

struct SchedulerOptions {
  // Join's UNAVAILABLE bound when a job has none. > 0.
  absl::Duration no_worker_timeout = absl::Minutes(1);
  // Failed attempts (retryable errors, worker deaths) before a closure fails
  // permanently, when a job has none. >= 1.
  uint32_t max_attempts = 10;
  // What NextTask tells a worker to wait before asking again when it returns
  // no task.
  absl::Duration retry_after = absl::Milliseconds(200);
  // Closures one job may hold; more is INVALID_ARGUMENT. Each costs about
  // 300 bytes plus its argument and result bytes.
  uint64_t max_closures_per_job = uint64_t{1} << 22;
};

// One closure to schedule.
struct ClosureSpec {
  std::string function_name;
  // Opaque argument bytes.
  std::string args;
  // 0: one more than the job's highest step so far.
  uint64_t step_id = 0;
  friend bool operator==(const ClosureSpec&, const ClosureSpec&) = default;
};

// A named step function run for a range of steps.
struct StepLoop {
  std::string function_name;
  // > 0.
  uint64_t num_steps = 0;
  // 0: 1.
  uint64_t first_step_id = 0;
  std::string args;
  // Closures per step; 0 or 1: one.
  uint32_t replicas_per_step = 1;
  friend bool operator==(const StepLoop&, const StepLoop&) = default;
};

// Interactive (empty), a step loop, or an explicit closure list.
using JobWork =
    std::variant<std::monostate, StepLoop, std::vector<ClosureSpec>>;

struct JobSpec {
  // Naming rules of common.proto. Empty: "job-<n>" is assigned.
  std::string job_id;
  JobWork work;
  // 0 (ZeroDuration): SchedulerOptions::no_worker_timeout.
  absl::Duration no_worker_timeout = absl::ZeroDuration();
  // 0: SchedulerOptions::max_attempts.
  uint32_t max_attempts = 0;
  // Time budget of one attempt of a closure: past it the attempt counts as
  // failed (DEADLINE_EXCEEDED) and the closure is re-queued; a late success
  // report from it is still accepted if it comes first. 0: none.
  absl::Duration closure_timeout = absl::ZeroDuration();
};

enum class JobState {
  kRunning = 1,
  kSucceeded = 3,
  kFailed = 4,
  kCancelled = 5
};
enum class ClosureState {
  kQueued = 1,
  kRunning = 2,
  kSucceeded = 3,
  kFailed = 4,
  kCancelled = 5
};
absl::string_view JobStateName(JobState state);
absl::string_view ClosureStateName(ClosureState state);

struct SubmitResult {
  std::string job_id;
  // Closure ids of an explicit list, in order. Empty for a step loop.
  std::vector<uint64_t> closure_ids;
  // False when the same job was submitted before (idempotent retry).
  bool created = true;
};

struct Scheduled {
  uint64_t closure_id = 0;
  uint64_t step_id = 0;
};

// A closure handed to a worker.
struct Task {
  uint64_t closure_id = 0;
  std::string job_id;
  std::string function_name;
  std::string args;
  uint64_t step_id = 0;
  // From 1; one more on every dispatch.
  uint32_t attempt = 0;
  uint32_t replica_index = 0;
  uint32_t replicas_per_step = 1;
  // JobSpec::closure_timeout; 0: none.
  absl::Duration time_budget = absl::ZeroDuration();
};

enum class NoTaskReason {
  kNone = 0,        // a task is returned
  kQueueEmpty = 1,  // nothing this worker can run now
  kPaused = 2,      // Pause() in effect, or only steps past the limit left
  kNoJob = 3,       // no job is running
  kDraining = 4,    // this worker was told to drain: ask no more
};

struct NextTaskResult {
  std::optional<Task> task;
  NoTaskReason no_task_reason = NoTaskReason::kNone;
  // When no task: ask again after this long.
  absl::Duration retry_after = absl::ZeroDuration();
};

// A worker's report on one attempt of a closure.
struct Report {
  uint64_t closure_id = 0;
  uint32_t attempt = 0;
  // True: not finished, given back (SIGTERM); error/result are ignored.
  bool handed_back = false;
  // OK: success with `result`. Otherwise the function's error.
  absl::Status error;
  std::string result;
};

enum class ReportDisposition {
  kAccepted = 1,   // recorded as the closure's result
  kDuplicate = 2,  // closure already finished, cancelled, or an old attempt
  kRequeued = 3,   // retryable error or hand-back: queued again
  kFailed = 4,     // permanent error: closure and job failed
};

// A remote value.
struct ClosureResult {
  uint64_t closure_id = 0;
  std::string job_id;
  ClosureState state = ClosureState::kQueued;
  // Set when kSucceeded.
  std::string result;
  // Set when kFailed or kCancelled.
  absl::Status error;
  uint64_t step_id = 0;
  // Dispatches so far.
  uint32_t attempts = 0;
};

struct JobStatus {
  std::string job_id;
  JobState state = JobState::kRunning;
  uint64_t closures_total = 0;
  uint64_t closures_succeeded = 0;
  uint64_t closures_running = 0;
  uint64_t closures_queued = 0;
  uint64_t closures_failed = 0;
  uint64_t closures_cancelled = 0;
  // Re-queue events (worker deaths, retryable errors, hand-backs).
  uint64_t requeues = 0;
  // Highest S such that every step <= S succeeded. 0: none.
  uint64_t completed_through_step_id = 0;
  // Why it failed or was cancelled; OK otherwise.
  absl::Status error;
  absl::Time submitted_at;
  // InfiniteFuture: not finished.
  absl::Time finished_at = absl::InfiniteFuture();
  // Live, non-draining workers that can run its functions.
  uint32_t workers_alive = 0;
};

// Everything needed to rebuild the queue after a coordinator restart.
struct ClosureRecord {
  uint64_t closure_id = 0;
  std::string function_name;
  std::string args;
  uint64_t step_id = 0;
  uint32_t replica_index = 0;
  uint32_t replicas_per_step = 1;
  ClosureState state = ClosureState::kQueued;
  uint32_t attempts = 0;
  uint32_t failures = 0;
  // Reports of attempts below this are DUPLICATE (set by RequeueStepsAfter).
  uint32_t min_valid_attempt = 0;
  std::string result;
  absl::Status error;
};
struct JobRecord {
  JobSpec spec;
  JobState state = JobState::kRunning;
  absl::Status error;
  uint64_t requeues = 0;
  uint64_t max_step_id = 0;
  absl::Time submitted_at;
  absl::Time finished_at = absl::InfiniteFuture();
  std::vector<ClosureRecord> closures;  // in dispatch order
};
struct SchedulerSnapshot {
  uint64_t next_closure_id = 1;
  uint64_t next_job_number = 1;
  std::vector<JobRecord> jobs;  // in submission order
};

class Scheduler {
 public:
  // `clock` is borrowed and must outlive this object.
  Scheduler(SchedulerOptions options, Clock* clock);
  // Rebuilds from a snapshot. Closures that were running become queued again
  // (their attempt counts kept): a worker still running one may report it,
  // and the first result wins. Workers must be added again.
  static absl::StatusOr<std::unique_ptr<Scheduler>> Restore(
      const SchedulerSnapshot& snapshot, SchedulerOptions options,
      Clock* clock);
  ~Scheduler();

  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // ---- jobs (chief / CLI) ----

  // Submits a job. Idempotent on job_id: the same work again returns the
  // existing job (created = false); different work is ALREADY_EXISTS.
  // INVALID_ARGUMENT: bad job id or function name, num_steps == 0, too many
  // closures.
  absl::StatusOr<SubmitResult> SubmitJob(const JobSpec& spec);

  // Adds a closure to a job (a finished job that succeeded runs again).
  // NOT_FOUND: unknown job. FAILED_PRECONDITION: failed or cancelled job.
  absl::StatusOr<Scheduled> Schedule(absl::string_view job_id,
                                     const ClosureSpec& closure);

  // Waits until the job is finished or `deadline` passes (see the header
  // comment for the codes). NOT_FOUND: unknown job.
  absl::StatusOr<JobStatus> Join(absl::string_view job_id, absl::Time deadline);

  // Waits until the closure is finished (succeeded, failed or cancelled) or
  // `deadline` passes, then returns its state (so a past deadline reads it
  // without waiting). NOT_FOUND: unknown closure.
  absl::StatusOr<ClosureResult> Fetch(uint64_t closure_id, absl::Time deadline);

  // Cancels a job: queued closures are dropped, running ones are marked
  // cancelled (their reports become DUPLICATE) and their workers are free
  // for new work. Idempotent; a finished job is returned unchanged.
  // NOT_FOUND: unknown job.
  absl::StatusOr<JobStatus> Cancel(absl::string_view job_id,
                                   absl::string_view reason);

  // Fails a running job with `error` (e.g. the restart budget's
  // RESOURCE_EXHAUSTED naming the worker); like Cancel otherwise.
  // NOT_FOUND: unknown job.
  absl::Status FailJob(absl::string_view job_id, absl::Status error);

  // A job's progress. Empty id: the most recently submitted job.
  // NOT_FOUND: unknown job (or none yet).
  absl::StatusOr<JobStatus> GetJobStatus(absl::string_view job_id) const;
  // Ids of jobs that are running, in submission order.
  std::vector<std::string> RunningJobIds() const;

  // ---- workers ----

  // Makes a worker available for dispatch with the functions it registered.
  // A newer incarnation replaces the old one (whose in-flight closure is
  // re-queued); an older or equal one than known is FAILED_PRECONDITION
  // (equal: the same call repeated, which is OK when functions match).
  absl::Status AddWorker(uint64_t worker_id, uint64_t incarnation,
                         std::vector<std::string> functions);

  // The worker died or left: its in-flight closure is re-queued (a failure
  // for the attempt count unless `failure` is false) and it gets no more
  // work. Stale incarnations are ignored. Returns the closures re-queued.
  std::vector<uint64_t> RemoveWorker(uint64_t worker_id, uint64_t incarnation,
                                     absl::string_view reason,
                                     bool failure = true);

  // The worker takes no new work (NextTask answers kDraining); its running
  // closure may still be reported. FAILED_PRECONDITION: unknown/stale.
  absl::Status DrainWorker(uint64_t worker_id, uint64_t incarnation);

  // The next closure for this worker, waiting until `deadline` for one. A
  // worker asking again while it holds a closure gets that closure again
  // (a lost response). FAILED_PRECONDITION: worker not added, removed, or a
  // stale incarnation (also while waiting).
  absl::StatusOr<NextTaskResult> NextTask(uint64_t worker_id,
                                          uint64_t incarnation,
                                          absl::Time deadline);

  // Records a report (see ReportDisposition). FAILED_PRECONDITION: stale
  // incarnation; NOT_FOUND: unknown closure.
  absl::StatusOr<ReportDisposition> ReportResult(uint64_t worker_id,
                                                 uint64_t incarnation,
                                                 const Report& report);

  // ---- control ----

  // Stops handing out closures (checkpoint cut, PS recovery) until Resume.
  void Pause(absl::string_view reason);
  void Resume();

  // Hands out no closure of a step above `max_step_id` (a checkpoint at step
  // C stops dispatch past C); nullopt lifts the limit.
  void SetDispatchLimit(std::optional<uint64_t> max_step_id);

  // After a restore to step C: every closure of the job with a step > C runs
  // again. Succeeded ones are queued again (their results dropped); running
  // ones are re-queued and their current attempt's report will be DUPLICATE;
  // a job that had succeeded runs again. Returns the closures re-queued.
  // NOT_FOUND: unknown job; FAILED_PRECONDITION: failed or cancelled job.
  absl::StatusOr<uint64_t> RequeueStepsAfter(absl::string_view job_id,
                                             uint64_t step_id);

  // Applies closure time budgets at clock->Now() and wakes every waiter so
  // it re-reads the clock. The service calls it periodically (or at
  // NextTimeout()); tests call it after FakeClock::Advance.
  void Tick();

  // The earliest instant at which Tick() could expire a closure or a Join
  // could give up for lack of workers; InfiniteFuture when none.
  absl::Time NextTimeout() const;

  SchedulerSnapshot Snapshot() const;

 private:
  struct Closure;
  struct Job;
  struct Worker;

  Job* FindJob(absl::string_view job_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const Job* FindJob(absl::string_view job_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // FindJob, or NOT_FOUND "unknown job <id>".
  absl::StatusOr<Job*> GetJob(absl::string_view job_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<const Job*> GetJob(absl::string_view job_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t AddClosure(Job& job, const std::string& function,
                      std::shared_ptr<const std::string> args, uint64_t step_id,
                      uint32_t replica, uint32_t replicas)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Requeue(Closure& c, bool failure, const absl::Status& why,
               uint64_t avoid_worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishClosure(Closure& c, ClosureState state, absl::Status error,
                     std::string result) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EndJob(Job& job, JobState state, absl::Status error)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateJobState(Job& job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateStarvation(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ExpireClosures(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t CapableWorkers(const Job& job) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool CanRun(const Worker& w, const std::string& function) const;
  bool AnotherWorkerCanRun(const Closure& c, uint64_t worker_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Closure* PickClosure(const Worker& w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Task MakeTask(const Closure& c) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  JobStatus StatusOf(const Job& job) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<std::string> RunningJobIdsLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<Worker*> CurrentWorker(uint64_t worker_id,
                                        uint64_t incarnation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Waits on cv_ until `deadline` (of clock_) at most.
  void WaitUntil(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Changed() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const SchedulerOptions options_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  uint64_t next_closure_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_job_number_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<std::string, std::unique_ptr<Job>, std::less<>> jobs_
      ABSL_GUARDED_BY(mu_);
  std::vector<std::string> job_order_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::unique_ptr<Closure>> closures_ ABSL_GUARDED_BY(mu_);
  // Queued closure ids in dispatch order; entries whose closure is no longer
  // queued are skipped and dropped lazily.
  std::deque<uint64_t> queue_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::unique_ptr<Worker>> workers_ ABSL_GUARDED_BY(mu_);
  bool paused_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<uint64_t> dispatch_limit_ ABSL_GUARDED_BY(mu_);
  std::string pause_reason_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::coordinator::scheduling
