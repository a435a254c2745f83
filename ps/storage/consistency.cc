#include "ps/storage/consistency.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/tsan.h"

namespace plexus::ps {

ConsistencyState::ConsistencyState(const ConsistencyConfig& config,
                                   uint64_t applied_step)
    : config_(config), last_applied_step_(applied_step) {}

bool ConsistencyState::Contribution::complete() const {
  for (const auto& [seq, c] : chunks) {
    if (c.second.size() < std::max<uint32_t>(1, c.first)) return false;
  }
  return !chunks.empty();
}

absl::Status ConsistencyState::CheckSyncPush(uint64_t step) const {
  if (step == 0) {
    return absl::InvalidArgumentError(
        "a push to a synchronous target needs a step id");
  }
  MutexLock lock(&mu_);
  auto it = pending_.find(step);
  if ((it == pending_.end() && step <= last_applied_step_) ||
      (it != pending_.end() && it->second.applying)) {
    return absl::FailedPreconditionError(
        absl::StrCat("step ", step, " was already applied"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<std::vector<GradPiece>>>
ConsistencyState::AddSyncContribution(uint64_t step, uint64_t closure,
                                      uint32_t push_seq, uint32_t chunk_index,
                                      uint32_t num_chunks, GradPiece piece) {
  MutexLock lock(&mu_);
  auto found = pending_.find(step);
  if ((found == pending_.end() && step <= last_applied_step_) ||
      (found != pending_.end() && found->second.applying)) {
    return absl::FailedPreconditionError(
        absl::StrCat("step ", step, " was already applied"));
  }
  PendingStep& ps = pending_[step];
  Contribution& c = ps.closures[closure];
  const bool was_complete = c.complete();
  auto& [expected, seen] = c.chunks[push_seq];
  expected = std::max(expected, num_chunks);
  if (std::find(seen.begin(), seen.end(), chunk_index) == seen.end()) {
    seen.push_back(chunk_index);
  }
  c.pieces.emplace_back(std::make_pair(push_seq, chunk_index),
                        std::move(piece));
  if (!was_complete && c.complete()) ++ps.complete_closures;
  if (ps.complete_closures < static_cast<int>(config_.num_workers)) {
    return std::optional<std::vector<GradPiece>>();
  }
  ps.applying = true;
  std::vector<GradPiece> out;
  for (auto& [id, contribution] : ps.closures) {  // ascending closure id
    std::stable_sort(
        contribution.pieces.begin(), contribution.pieces.end(),
        [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [key, p] : contribution.pieces) out.push_back(std::move(p));
  }
  ps.closures.clear();
  return std::optional<std::vector<GradPiece>>(std::move(out));
}

void ConsistencyState::MarkApplied(uint64_t step) {
  MutexLock lock(&mu_);
  if (is_sync()) pending_.erase(step);
  last_applied_step_ = std::max(last_applied_step_, step);
  ++updates_applied_;
}

void ConsistencyState::RecordProgress(uint64_t worker, uint64_t step) {
  MutexLock lock(&mu_);
  uint64_t& p = progress_[worker];
  p = std::max(p, step);
}

uint64_t ConsistencyState::SlowestProgress() const {
  if (config_.num_workers > 0 && progress_.size() < config_.num_workers) {
    return 0;
  }
  uint64_t slowest = UINT64_MAX;
  for (const auto& [w, p] : progress_) slowest = std::min(slowest, p);
  return progress_.empty() ? 0 : slowest;
}

bool ConsistencyState::PullReady(uint64_t step) const {
  if (shutdown_ || step == 0) return true;
  switch (config_.mode) {
    case ConsistencyMode::kSync:
      return last_applied_step_ + 1 >= step &&
             (pending_.empty() || pending_.begin()->first >= step);
    case ConsistencyMode::kBoundedStaleness: {
      const uint64_t lag = uint64_t{config_.staleness_bound} + 1;
      return step <= lag || SlowestProgress() >= step - lag;
    }
    default:
      return true;
  }
}

absl::Status ConsistencyState::WaitForPull(uint64_t step, absl::Time deadline) {
  if (config_.mode == ConsistencyMode::kAsync) return absl::OkStatus();
  MutexLock lock(&mu_);
  auto ready = [this, step]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return PullReady(step);
  };
  AwaitWithDeadline(&mu_, absl::Condition(&ready), deadline);
  if (shutdown_) return absl::UnavailableError("engine is shutting down");
  if (!PullReady(step)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "pull at step ", step, " still waiting at its deadline (last applied ",
        last_applied_step_, ", slowest worker ", SlowestProgress(), ")"));
  }
  return absl::OkStatus();
}

void ConsistencyState::Shutdown() {
  MutexLock lock(&mu_);
  shutdown_ = true;
}

uint64_t ConsistencyState::last_applied_step() const {
  MutexLock lock(&mu_);
  return last_applied_step_;
}

int64_t ConsistencyState::updates_applied() const {
  MutexLock lock(&mu_);
  return updates_applied_;
}

}  // namespace plexus::ps
