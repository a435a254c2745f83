#include "coordinator/rendezvous/rendezvous.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "coordinator/membership/names.h"

namespace plexus::coordinator::rendezvous {

struct Rendezvous::Group {
  std::string name;
  uint64_t epoch = 1;
  uint32_t size = 0;
  // Rank -> its holder; kept across epochs while the holder lives.
  std::map<int, GroupMember> holders;
  // Ranks that joined the current epoch.
  std::set<int> joined;
  // Worker id -> the rank it held before it was freed, given back when the
  // same worker joins again and the rank is still free.
  std::map<uint64_t, int> previous_rank;

  const GroupMember* HolderOf(uint64_t worker_id) const {
    for (const auto& [rank, m] : holders) {
      if (m.worker_id == worker_id) return &m;
    }
    return nullptr;
  }
};

namespace {

absl::Status StaleEpoch(absl::string_view group, uint64_t epoch,
                        uint64_t current) {
  return WithReason(absl::FailedPreconditionError(absl::StrCat(
                        "group ", group, " epoch ", epoch,
                        " is stale: the group is at epoch ", current)),
                    ErrorReason::kStaleGroupEpoch);
}

}  // namespace

Rendezvous::Rendezvous(RendezvousOptions options, Clock* clock)
    : options_(options), clock_(clock) {}

Rendezvous::~Rendezvous() = default;

void Rendezvous::Tick() {
  absl::MutexLock lock(&mu_);
  cv_.SignalAll();
}

void Rendezvous::WaitUntil(absl::Time deadline) {
  absl::Duration left = deadline - clock_->Now();
  if (left <= absl::ZeroDuration()) return;
  cv_.WaitWithTimeout(&mu_, left);
}

Rendezvous::Group* Rendezvous::FindGroup(absl::string_view name) {
  auto it = groups_.find(name);
  return it == groups_.end() ? nullptr : it->second.get();
}

const Rendezvous::Group* Rendezvous::FindGroup(absl::string_view name) const {
  auto it = groups_.find(name);
  return it == groups_.end() ? nullptr : it->second.get();
}

absl::Status Rendezvous::CheckNamespace(absl::string_view group,
                                        uint64_t epoch) const {
  const Group* g = FindGroup(group);
  if (epoch == 0 || g == nullptr || epoch == g->epoch) return absl::OkStatus();
  if (epoch < g->epoch) return StaleEpoch(group, epoch, g->epoch);
  return absl::FailedPreconditionError(
      absl::StrCat("group ", group, " has not reached epoch ", epoch,
                   " (it is at ", g->epoch, ")"));
}

absl::Status Rendezvous::Set(absl::string_view group, uint64_t epoch,
                             absl::string_view key, std::string value) {
  PLEXUS_RETURN_IF_ERROR(ValidateName(group, "group"));
  PLEXUS_RETURN_IF_ERROR(ValidateName(key, "key"));
  if (value.size() > options_.max_value_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("value of key ", key, " is ", value.size(),
                     " bytes, over the limit of ", options_.max_value_bytes));
  }
  absl::MutexLock lock(&mu_);
  PLEXUS_RETURN_IF_ERROR(CheckNamespace(group, epoch));
  auto& ns = kv_[{std::string(group), epoch}];
  auto it = ns.find(key);
  if (it == ns.end()) {
    if (ns.size() >= options_.max_keys_per_namespace) {
      return absl::ResourceExhaustedError(
          absl::StrCat("group ", group, " epoch ", epoch, " already holds ",
                       ns.size(), " keys"));
    }
    ns.emplace(std::string(key), std::move(value));
  } else {
    it->second = std::move(value);
  }
  cv_.SignalAll();
  return absl::OkStatus();
}

absl::StatusOr<std::string> Rendezvous::Get(absl::string_view group,
                                            uint64_t epoch,
                                            absl::string_view key) {
  PLEXUS_RETURN_IF_ERROR(ValidateName(group, "group"));
  PLEXUS_RETURN_IF_ERROR(ValidateName(key, "key"));
  absl::MutexLock lock(&mu_);
  PLEXUS_RETURN_IF_ERROR(CheckNamespace(group, epoch));
  auto ns = kv_.find({std::string(group), epoch});
  if (ns != kv_.end()) {
    auto it = ns->second.find(key);
    if (it != ns->second.end()) return it->second;
  }
  return absl::NotFoundError(absl::StrCat("key ", key, " is not set in group ",
                                          group, " epoch ", epoch));
}

absl::StatusOr<std::vector<std::string>> Rendezvous::Wait(
    absl::string_view group, uint64_t epoch,
    const std::vector<std::string>& keys, absl::Time deadline) {
  PLEXUS_RETURN_IF_ERROR(ValidateName(group, "group"));
  if (keys.empty()) return absl::InvalidArgumentError("wait for no keys");
  for (const std::string& key : keys) {
    PLEXUS_RETURN_IF_ERROR(ValidateName(key, "key"));
  }
  std::pair<std::string, uint64_t> name{std::string(group), epoch};
  absl::MutexLock lock(&mu_);
  while (true) {
    PLEXUS_RETURN_IF_ERROR(CheckNamespace(group, epoch));
    std::vector<std::string> values;
    std::vector<absl::string_view> missing;
    auto ns = kv_.find(name);
    for (const std::string& key : keys) {
      if (ns != kv_.end()) {
        if (auto it = ns->second.find(key); it != ns->second.end()) {
          values.push_back(it->second);
          continue;
        }
      }
      missing.push_back(key);
    }
    if (missing.empty()) return values;
    if (clock_->Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "group ", group, " epoch ", epoch, ": still missing ", missing.size(),
          " of ", keys.size(), " keys: ",
          absl::StrJoin(missing.begin(),
                        missing.begin() + std::min<size_t>(missing.size(), 8),
                        ", "),
          missing.size() > 8 ? ", ..." : ""));
    }
    WaitUntil(deadline);
  }
}

GroupInfo Rendezvous::InfoOf(const Group& g, uint64_t worker_id) const {
  GroupInfo info;
  info.group = g.name;
  info.epoch = g.epoch;
  info.size = g.size;
  for (const auto& [rank, m] : g.holders) {
    if (g.joined.count(rank) != 0) info.members.push_back(m);
    if (worker_id != 0 && m.worker_id == worker_id) info.my_rank = rank;
  }
  info.complete = info.members.size() == g.size;
  return info;
}

absl::StatusOr<GroupInfo> Rendezvous::JoinGroup(const JoinGroupRequest& req,
                                                absl::Time deadline) {
  PLEXUS_RETURN_IF_ERROR(ValidateName(req.group, "group"));
  if (req.size == 0) {
    return absl::InvalidArgumentError("a group needs size > 0");
  }
  if (req.worker_id == 0) {
    return absl::InvalidArgumentError("joining a group needs a worker id");
  }
  absl::MutexLock lock(&mu_);
  auto [it, created] = groups_.try_emplace(req.group);
  if (created) {
    it->second = std::make_unique<Group>();
    it->second->name = req.group;
    it->second->size = req.size;
  }
  Group& g = *it->second;
  if (g.size != req.size) {
    if (!g.joined.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("group ", req.group, " epoch ", g.epoch, " has size ",
                       g.size, ", not ", req.size));
    }
    // The first joiner of an epoch resizes the group.
    g.size = req.size;
    for (auto h = g.holders.lower_bound(static_cast<int>(g.size));
         h != g.holders.end();) {
      g.previous_rank[h->second.worker_id] = h->first;
      h = g.holders.erase(h);
    }
  }

  int rank = -1;
  for (auto& [r, m] : g.holders) {
    if (m.worker_id != req.worker_id) continue;
    if (req.incarnation < m.incarnation) {
      return WithReason(
          absl::FailedPreconditionError(absl::StrCat(
              "worker id ", req.worker_id, " incarnation ", req.incarnation,
              " is older than the one holding rank ", r, " of group ",
              req.group)),
          ErrorReason::kStaleIncarnation);
    }
    rank = r;
  }
  if (rank < 0) {
    auto prev = g.previous_rank.find(req.worker_id);
    if (prev != g.previous_rank.end() &&
        prev->second < static_cast<int>(g.size) &&
        g.holders.count(prev->second) == 0) {
      rank = prev->second;
    } else {
      for (int r = 0; r < static_cast<int>(g.size); ++r) {
        if (g.holders.count(r) == 0) {
          rank = r;
          break;
        }
      }
    }
    if (rank < 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("group ", req.group, " has no free rank (size ", g.size,
                       ", epoch ", g.epoch, ")"));
    }
    g.previous_rank.erase(req.worker_id);
  }
  GroupMember& m = g.holders[rank];
  m.worker_id = req.worker_id;
  m.incarnation = req.incarnation;
  m.rank = rank;
  m.hostname = req.hostname;
  m.has_gpu = req.has_gpu;
  g.joined.insert(rank);
  const uint64_t epoch = g.epoch;
  cv_.SignalAll();

  while (true) {
    if (g.epoch != epoch) return StaleEpoch(req.group, epoch, g.epoch);
    if (g.joined.size() == g.size) return InfoOf(g, req.worker_id);
    if (clock_->Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("group ", req.group, " epoch ", epoch, " has ",
                       g.joined.size(), " of ", g.size, " members"));
    }
    WaitUntil(deadline);
  }
}

absl::StatusOr<GroupInfo> Rendezvous::GetGroup(absl::string_view group,
                                               uint64_t worker_id) const {
  absl::MutexLock lock(&mu_);
  const Group* g = FindGroup(group);
  if (g == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown group ", group));
  }
  return InfoOf(*g, worker_id);
}

ReformNotice Rendezvous::Bump(Group& g, std::vector<int> failed_ranks) {
  ++g.epoch;
  g.joined.clear();
  for (int rank : failed_ranks) {
    auto h = g.holders.find(rank);
    if (h == g.holders.end()) continue;
    g.previous_rank[h->second.worker_id] = rank;
    g.holders.erase(h);
  }
  for (auto ns = kv_.lower_bound({g.name, 1}); ns != kv_.end() &&
                                               ns->first.first == g.name &&
                                               ns->first.second < g.epoch;) {
    ns = kv_.erase(ns);
  }
  ReformNotice notice;
  notice.group = g.name;
  notice.new_epoch = g.epoch;
  notice.failed_ranks = std::move(failed_ranks);
  for (const auto& [rank, m] : g.holders)
    notice.survivors.push_back(m.worker_id);
  cv_.SignalAll();
  return notice;
}

absl::StatusOr<BumpResult> Rendezvous::BumpEpoch(absl::string_view group,
                                                 uint64_t expected_epoch,
                                                 int failed_rank,
                                                 absl::string_view reason) {
  absl::MutexLock lock(&mu_);
  Group* g = FindGroup(group);
  if (g == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown group ", group));
  }
  BumpResult result;
  if (expected_epoch > g->epoch) {
    return absl::InvalidArgumentError(
        absl::StrCat("group ", group, " has not reached epoch ", expected_epoch,
                     " (it is at ", g->epoch, ")"));
  }
  if (expected_epoch == g->epoch) {
    std::vector<int> failed;
    if (failed_rank >= 0) failed.push_back(failed_rank);
    result.notice = Bump(*g, std::move(failed));
  }
  result.group = InfoOf(*g, 0);
  return result;
}

std::vector<ReformNotice> Rendezvous::MemberDied(uint64_t worker_id,
                                                 uint64_t incarnation) {
  absl::MutexLock lock(&mu_);
  std::vector<ReformNotice> notices;
  for (auto& [name, g] : groups_) {
    for (const auto& [rank, m] : g->holders) {
      if (m.worker_id == worker_id && m.incarnation <= incarnation) {
        notices.push_back(Bump(*g, {rank}));
        break;
      }
    }
  }
  return notices;
}

}  // namespace plexus::coordinator::rendezvous
