#include "coordinator/health/failure_detector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "coordinator/membership/names.h"
#include "glog/logging.h"

namespace plexus::coordinator::health {

absl::string_view LivenessName(Liveness liveness) {
  switch (liveness) {
    case Liveness::kAlive:
      return "alive";
    case Liveness::kSuspected:
      return "suspected";
    case Liveness::kDead:
      return "dead";
    case Liveness::kLeft:
      return "left";
  }
  return "?";
}

namespace {
bool IsFinal(Liveness l) {
  return l == Liveness::kDead || l == Liveness::kLeft;
}

absl::Status StaleError(absl::string_view message) {
  return WithReason(absl::FailedPreconditionError(message),
                    ErrorReason::kStaleIncarnation);
}
}  // namespace

FailureDetector::FailureDetector(FailureDetectorOptions options, Clock* clock)
    : options_(options), clock_(clock) {
  CHECK_GT(options_.suspect_timeout, absl::ZeroDuration());
  CHECK_LE(options_.suspect_timeout, options_.dead_timeout);
}

void FailureDetector::Emit(ProcessHealth& p, Liveness to, absl::Time at,
                           std::string reason, uint64_t previous_incarnation) {
  HealthEvent e;
  e.worker_id = p.worker_id;
  e.incarnation = p.incarnation;
  e.from = p.liveness;
  e.to = to;
  e.previous_incarnation = previous_incarnation;
  e.at = at;
  e.reason = std::move(reason);
  p.liveness = to;
  events_.push_back(std::move(e));
}

ProcessHealth* FailureDetector::Live(uint64_t worker_id, uint64_t incarnation) {
  auto it = processes_.find(worker_id);
  if (it == processes_.end() || it->second.incarnation != incarnation ||
      IsFinal(it->second.liveness)) {
    return nullptr;
  }
  return &it->second;
}

void FailureDetector::Track(uint64_t worker_id, uint64_t incarnation) {
  absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = processes_.try_emplace(worker_id);
  ProcessHealth& p = it->second;
  if (!inserted && incarnation <= p.incarnation) return;
  Liveness from = inserted ? Liveness::kAlive : p.liveness;
  uint64_t previous = inserted ? 0 : p.incarnation;
  p = ProcessHealth{};
  p.worker_id = worker_id;
  p.incarnation = incarnation;
  p.liveness = from;
  p.last_heartbeat = now;
  p.last_progress = now;
  if (!inserted) {
    Emit(p, Liveness::kAlive, now,
         absl::StrCat("registered again as incarnation ", incarnation),
         previous);
  }
}

absl::Status FailureDetector::Heartbeat(uint64_t worker_id,
                                        uint64_t incarnation,
                                        const HeartbeatInfo& info) {
  absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  auto it = processes_.find(worker_id);
  if (it == processes_.end()) {
    return StaleError(absl::StrCat("heartbeat from worker id ", worker_id,
                                   ", which is not registered"));
  }
  ProcessHealth& p = it->second;
  if (p.incarnation != incarnation) {
    return StaleError(absl::StrCat(
        "heartbeat from stale incarnation ", incarnation, " of worker id ",
        worker_id, " (current ", p.incarnation, "); register again"));
  }
  if (IsFinal(p.liveness)) {
    return StaleError(
        absl::StrCat("worker id ", worker_id, " incarnation ", incarnation,
                     " is ", LivenessName(p.liveness), "; register again"));
  }
  p.last_heartbeat = now;
  p.disconnected_at = absl::InfinitePast();
  ++p.heartbeats;
  if (info.last_finished_step_id > p.progress.last_finished_step_id ||
      info.closures_finished > p.progress.closures_finished) {
    p.last_progress = now;
  }
  uint64_t best_step =
      std::max(p.progress.last_finished_step_id, info.last_finished_step_id);
  p.progress = info;
  p.progress.last_finished_step_id = best_step;
  if (p.liveness == Liveness::kSuspected) {
    Emit(p, Liveness::kAlive, now, "heartbeat resumed");
  }
  return absl::OkStatus();
}

void FailureDetector::Leave(uint64_t worker_id, uint64_t incarnation) {
  absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  ProcessHealth* p = Live(worker_id, incarnation);
  if (p == nullptr) return;
  Emit(*p, Liveness::kLeft, now, "left cleanly");
}

void FailureDetector::MarkDead(uint64_t worker_id, uint64_t incarnation,
                               absl::string_view reason) {
  absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  ProcessHealth* p = Live(worker_id, incarnation);
  if (p == nullptr) return;
  Emit(*p, Liveness::kDead, now, std::string(reason));
}

void FailureDetector::Forget(uint64_t worker_id) {
  absl::MutexLock lock(&mu_);
  processes_.erase(worker_id);
}

void FailureDetector::Disconnected(uint64_t worker_id, uint64_t incarnation) {
  if (options_.disconnect_timeout <= absl::ZeroDuration()) return;
  absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  ProcessHealth* p = Live(worker_id, incarnation);
  if (p == nullptr) return;
  p->disconnected_at = now;
}

std::vector<HealthEvent> FailureDetector::Poll() {
  absl::Time now = clock_->Now();
  absl::MutexLock lock(&mu_);
  for (auto& [id, p] : processes_) {
    if (IsFinal(p.liveness)) continue;
    if (p.disconnected_at != absl::InfinitePast() &&
        now - p.disconnected_at >= options_.disconnect_timeout) {
      Emit(p, Liveness::kDead, p.disconnected_at + options_.disconnect_timeout,
           absl::StrCat("heartbeat stream closed and not reopened for ",
                        absl::FormatDuration(options_.disconnect_timeout)));
      continue;
    }
    absl::Duration silence = now - p.last_heartbeat;
    if (p.liveness == Liveness::kAlive && silence >= options_.suspect_timeout &&
        silence < options_.dead_timeout) {
      Emit(p, Liveness::kSuspected, p.last_heartbeat + options_.suspect_timeout,
           absl::StrCat("no heartbeat for ",
                        absl::FormatDuration(options_.suspect_timeout)));
    }
    if (silence >= options_.dead_timeout) {
      Emit(p, Liveness::kDead, p.last_heartbeat + options_.dead_timeout,
           absl::StrCat("no heartbeat for ",
                        absl::FormatDuration(options_.dead_timeout)));
    }
  }
  std::vector<HealthEvent> out(std::make_move_iterator(events_.begin()),
                               std::make_move_iterator(events_.end()));
  events_.clear();
  return out;
}

absl::Time FailureDetector::NextDeadline() const {
  absl::MutexLock lock(&mu_);
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [id, p] : processes_) {
    if (p.liveness == Liveness::kAlive) {
      next = std::min(next, p.last_heartbeat + options_.suspect_timeout);
    } else if (p.liveness == Liveness::kSuspected) {
      next = std::min(next, p.last_heartbeat + options_.dead_timeout);
    }
    if (!IsFinal(p.liveness) && p.disconnected_at != absl::InfinitePast()) {
      next = std::min(next, p.disconnected_at + options_.disconnect_timeout);
    }
  }
  return next;
}

absl::StatusOr<ProcessHealth> FailureDetector::Get(uint64_t worker_id) const {
  absl::MutexLock lock(&mu_);
  auto it = processes_.find(worker_id);
  if (it == processes_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker id ", worker_id, " is not tracked"));
  }
  return it->second;
}

std::vector<ProcessHealth> FailureDetector::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<ProcessHealth> out;
  for (const auto& [id, p] : processes_) out.push_back(p);
  return out;
}

}  // namespace plexus::coordinator::health
