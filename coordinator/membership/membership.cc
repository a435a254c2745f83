#include "coordinator/membership/membership.h"

#include <algorithm>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "coordinator/membership/names.h"

namespace plexus::coordinator::membership {

absl::string_view ProcessStateName(ProcessState state) {
  switch (state) {
    case ProcessState::kAlive:
      return "alive";
    case ProcessState::kDead:
      return "dead";
    case ProcessState::kLeft:
      return "left";
  }
  return "?";
}

std::string DescribeProcess(const ProcessRecord& r) {
  std::string host =
      r.hostname.empty() ? "" : absl::StrCat(", host ", r.hostname);
  if (r.task_index >= 0) {
    return absl::StrCat(RoleName(r.role), " ", r.task_index, " (id ",
                        r.worker_id, host, ")");
  }
  return absl::StrCat(
      RoleName(r.role), " id ", r.worker_id,
      r.hostname.empty() ? "" : absl::StrCat(" (host ", r.hostname, ")"));
}

Membership::Membership(MembershipOptions options, Clock* clock)
    : clock_(clock),
      epoch_(options.coordinator_epoch),
      cluster_(std::move(options.cluster)),
      max_restarts_(options.max_restarts_per_worker) {}

absl::StatusOr<std::unique_ptr<Membership>> Membership::Restore(
    const MembershipSnapshot& snapshot, MembershipOptions options,
    Clock* clock) {
  if (options.coordinator_epoch <= snapshot.coordinator_epoch) {
    return absl::InvalidArgumentError(
        absl::StrCat("restoring membership of coordinator epoch ",
                     snapshot.coordinator_epoch, " needs a newer epoch, got ",
                     options.coordinator_epoch));
  }
  auto m = std::make_unique<Membership>(std::move(options), clock);
  absl::MutexLock lock(&m->mu_);
  m->next_worker_id_ = snapshot.next_worker_id;
  for (const ProcessRecord& r : snapshot.processes) {
    if (r.worker_id == 0 || r.worker_id >= snapshot.next_worker_id) {
      return absl::InvalidArgumentError(
          absl::StrCat("membership snapshot: bad worker id ", r.worker_id));
    }
    m->processes_[r.worker_id] = r;
    if (r.task_index >= 0) m->by_task_[{r.role, r.task_index}] = r.worker_id;
  }
  return m;
}

uint64_t Membership::NextIncarnation() {
  return (epoch_ << 32) | ++incarnation_seq_;
}

absl::StatusOr<Registration> Membership::Register(const RegisterRequest& req) {
  if (req.task_index < -1) {
    return absl::InvalidArgumentError(
        absl::StrCat("task_index ", req.task_index, " is not >= -1"));
  }
  const std::vector<std::string>& spec_tasks = cluster_.tasks(req.role);
  std::string address = req.address;
  if (req.task_index >= 0 && !spec_tasks.empty()) {
    if (static_cast<size_t>(req.task_index) >= spec_tasks.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat(RoleName(req.role), " task_index ", req.task_index,
                       " is outside the cluster spec (", spec_tasks.size(), " ",
                       RoleName(req.role), " tasks)"));
    }
    if (address.empty()) address = spec_tasks[req.task_index];
  }
  if (!address.empty()) {
    PLEXUS_RETURN_IF_ERROR(ValidateAddress(address, "address"));
  } else if (req.role == Role::kPs) {
    return absl::InvalidArgumentError("a PS must register with its address");
  }

  absl::MutexLock lock(&mu_);
  ProcessRecord* existing = nullptr;
  if (req.task_index >= 0) {
    auto it = by_task_.find({req.role, req.task_index});
    if (it != by_task_.end()) existing = &processes_[it->second];
  } else if (req.previous_worker_id != 0) {
    auto it = processes_.find(req.previous_worker_id);
    if (it != processes_.end() && it->second.role == req.role &&
        it->second.task_index < 0) {
      existing = &it->second;
    }
  }

  Registration result;
  ProcessRecord* record = existing;
  if (record == nullptr) {
    uint64_t id = next_worker_id_++;
    record = &processes_[id];
    record->worker_id = id;
    record->role = req.role;
    record->task_index = req.task_index;
    if (req.task_index >= 0) by_task_[{req.role, req.task_index}] = id;
  } else {
    if (record->state == ProcessState::kAlive) {
      result.replaced_incarnation = record->incarnation;
    }
    if (record->state != ProcessState::kLeft) ++record->restarts;
  }
  record->incarnation = NextIncarnation();
  record->address = address;
  record->hostname = req.hostname;
  record->pid = req.pid;
  record->step_functions = req.step_functions;
  record->has_gpu = req.has_gpu;
  record->state = ProcessState::kAlive;
  record->registered_at = clock_->Now();
  record->reason.clear();

  result.worker_id = record->worker_id;
  result.incarnation = record->incarnation;
  result.coordinator_epoch = epoch_;
  result.task_index = record->task_index;
  result.restarts = record->restarts;
  if (max_restarts_ >= 0 &&
      record->restarts > static_cast<uint32_t>(max_restarts_)) {
    result.budget_status = WithReason(
        absl::ResourceExhaustedError(absl::StrCat(
            DescribeProcess(*record),
            " exceeded its restart budget: restarted ", record->restarts,
            " times, at most ", max_restarts_, " allowed")),
        ErrorReason::kRestartBudgetExceeded);
  }
  return result;
}

absl::Status Membership::CheckCurrent(uint64_t worker_id,
                                      uint64_t incarnation) const {
  absl::MutexLock lock(&mu_);
  auto it = processes_.find(worker_id);
  if (it == processes_.end()) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrCat(
            "worker id ", worker_id, " is not registered; register again")),
        ErrorReason::kStaleIncarnation);
  }
  const ProcessRecord& r = it->second;
  if (r.incarnation != incarnation) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrCat(
            "stale incarnation ", incarnation, " of ", DescribeProcess(r),
            " (current ", r.incarnation, "); register again")),
        ErrorReason::kStaleIncarnation);
  }
  if (r.state != ProcessState::kAlive) {
    return WithReason(
        absl::FailedPreconditionError(absl::StrCat(
            DescribeProcess(r), " incarnation ", incarnation, " is ",
            ProcessStateName(r.state),
            r.reason.empty() ? "" : absl::StrCat(" (", r.reason, ")"),
            "; register again")),
        ErrorReason::kStaleIncarnation);
  }
  return absl::OkStatus();
}

bool Membership::MarkDead(uint64_t worker_id, uint64_t incarnation,
                          absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  auto it = processes_.find(worker_id);
  if (it == processes_.end() || it->second.incarnation != incarnation ||
      it->second.state != ProcessState::kAlive) {
    return false;
  }
  it->second.state = ProcessState::kDead;
  it->second.reason = std::string(reason);
  return true;
}

bool Membership::MarkLeft(uint64_t worker_id, uint64_t incarnation,
                          absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  auto it = processes_.find(worker_id);
  if (it == processes_.end() || it->second.incarnation != incarnation ||
      it->second.state != ProcessState::kAlive) {
    return false;
  }
  it->second.state = ProcessState::kLeft;
  it->second.reason = std::string(reason);
  return true;
}

void Membership::SetMaxRestartsPerWorker(int max_restarts) {
  absl::MutexLock lock(&mu_);
  max_restarts_ = max_restarts;
}

absl::StatusOr<ProcessRecord> Membership::Get(uint64_t worker_id) const {
  absl::MutexLock lock(&mu_);
  auto it = processes_.find(worker_id);
  if (it == processes_.end()) {
    return absl::NotFoundError(
        absl::StrCat("worker id ", worker_id, " was never registered"));
  }
  return it->second;
}

std::vector<ProcessRecord> Membership::List(bool include_dead,
                                            bool include_unclaimed) const {
  std::vector<ProcessRecord> out;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, r] : processes_) {
      if (include_dead || r.state == ProcessState::kAlive) out.push_back(r);
    }
    if (include_unclaimed) {
      for (Role role : kAllRoles) {
        const std::vector<std::string>& tasks = cluster_.tasks(role);
        for (size_t i = 0; i < tasks.size(); ++i) {
          if (by_task_.count({role, static_cast<int>(i)}) != 0) continue;
          ProcessRecord r;
          r.role = role;
          r.task_index = static_cast<int>(i);
          r.address = tasks[i];
          out.push_back(std::move(r));
        }
      }
    }
  }
  std::sort(out.begin(), out.end(),
            [](const ProcessRecord& a, const ProcessRecord& b) {
              return std::tie(a.role, a.task_index, a.worker_id) <
                     std::tie(b.role, b.task_index, b.worker_id);
            });
  return out;
}

std::vector<uint64_t> Membership::LiveWorkersWithFunction(
    absl::string_view function) const {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> out;
  for (const auto& [id, r] : processes_) {
    if (r.state != ProcessState::kAlive) continue;
    if (std::find(r.step_functions.begin(), r.step_functions.end(), function) !=
        r.step_functions.end()) {
      out.push_back(id);
    }
  }
  return out;
}

MembershipSnapshot Membership::Snapshot() const {
  absl::MutexLock lock(&mu_);
  MembershipSnapshot s;
  s.coordinator_epoch = epoch_;
  s.next_worker_id = next_worker_id_;
  for (const auto& [id, r] : processes_) s.processes.push_back(r);
  return s;
}

}  // namespace plexus::coordinator::membership
