// Rendezvous: the key-value store collectives bootstrap through (UCX worker
// addresses, NCCL unique ids), and collective-group membership with ranks and
// epochs. Pure logic over an injected Clock; the gRPC glue maps
// RendezvousSet/Get/Wait, JoinGroup, GetGroup and BumpGroupEpoch onto it.
//
// KV. Keys live in the namespace (group, group_epoch). A group need not have
// been formed by JoinGroup (tests and bootstrap may use any name, and epoch 0
// is a namespace outside any epoch). Once a group is formed, a group_epoch
// other than its current one (or 0) is FAILED_PRECONDITION with
// ErrorReason::kStaleGroupEpoch, and namespaces of older epochs are dropped.
// Set is last-writer-wins; Wait blocks until every key exists, failing as
// soon as the group moves to a newer epoch. Keys follow the name rules;
// values are at most max_value_bytes (INVALID_ARGUMENT).
//
// Groups. A group has a size and an epoch (from 1). JoinGroup gives the
// caller a rank and waits until `size` members joined the current epoch.
// Ranks are stable across epochs: a member joining again keeps its rank; a
// replacement takes the lowest free rank. When a member dies (MemberDied, from
// the failure detector) or a survivor reports a failed rank (BumpEpoch), the
// epoch is bumped: everyone must JoinGroup again, the dead member's rank is
// freed, waiters of the old epoch fail with kStaleGroupEpoch, and the returned
// ReformNotice lists the survivors to tell (ReformGroupCommand). The first
// joiner of an epoch may change the size (a group that shrinks); members whose
// rank no longer fits take the lowest free rank.
//
// Time. As in scheduling: deadlines are instants of the injected Clock; tests
// with FakeClock call Tick() after advancing it. Nothing sleeps.
//
// Thread safety: every method may be called from any thread; Wait and
// JoinGroup block up to their deadline without holding up other calls.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace plexus::coordinator::rendezvous {

struct RendezvousOptions {
  // Largest value Set accepts, bytes.
  size_t max_value_bytes = size_t{1} << 20;
  // Most keys one namespace may hold (RESOURCE_EXHAUSTED past it).
  size_t max_keys_per_namespace = size_t{1} << 16;
};

struct GroupMember {
  uint64_t worker_id = 0;
  // Its incarnation when it joined this epoch.
  uint64_t incarnation = 0;
  int rank = -1;
  std::string hostname;
  bool has_gpu = false;
};

// A group at one epoch.
struct GroupInfo {
  std::string group;
  uint64_t epoch = 0;
  uint32_t size = 0;
  // Members that joined this epoch, by rank.
  std::vector<GroupMember> members;
  // The caller's rank; -1: not a member (or not asked).
  int my_rank = -1;
  // members.size() == size.
  bool complete = false;
};

struct JoinGroupRequest {
  std::string group;
  // Members the group needs; > 0.
  uint32_t size = 0;
  uint64_t worker_id = 0;
  uint64_t incarnation = 0;
  std::string hostname;
  bool has_gpu = false;
};

// What survivors must be told after an epoch bump.
struct ReformNotice {
  std::string group;
  uint64_t new_epoch = 0;
  // Ranks that failed in the previous epoch; empty: unknown.
  std::vector<int> failed_ranks;
  // Worker ids holding the other ranks.
  std::vector<uint64_t> survivors;
};

struct BumpResult {
  // The group at its new (or already newer) epoch.
  GroupInfo group;
  // Set when this call bumped the epoch.
  std::optional<ReformNotice> notice;
};

class Rendezvous {
 public:
  // `clock` is borrowed and must outlive this object.
  Rendezvous(RendezvousOptions options, Clock* clock);
  ~Rendezvous();

  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  // ---- KV ----

  absl::Status Set(absl::string_view group, uint64_t epoch,
                   absl::string_view key, std::string value);
  // NOT_FOUND if absent.
  absl::StatusOr<std::string> Get(absl::string_view group, uint64_t epoch,
                                  absl::string_view key);
  // Values of `keys` (at least one), in order, once all exist.
  // DEADLINE_EXCEEDED naming the missing keys; FAILED_PRECONDITION
  // (kStaleGroupEpoch) once the group moves past `epoch`.
  absl::StatusOr<std::vector<std::string>> Wait(
      absl::string_view group, uint64_t epoch,
      const std::vector<std::string>& keys, absl::Time deadline);

  // ---- groups ----

  // Joins (or joins again) and waits until the group is complete at the
  // epoch joined. INVALID_ARGUMENT: bad name, size 0, worker id 0, or a size
  // different from this epoch's. FAILED_PRECONDITION: no free rank, an older
  // incarnation than the rank's holder, or (kStaleGroupEpoch) the epoch moved
  // on while waiting. DEADLINE_EXCEEDED: still forming at `deadline` (the
  // caller stays joined; joining again is idempotent).
  absl::StatusOr<GroupInfo> JoinGroup(const JoinGroupRequest& request,
                                      absl::Time deadline);

  // The group at its current epoch; my_rank is `worker_id`'s rank (or -1).
  // NOT_FOUND: no such group.
  absl::StatusOr<GroupInfo> GetGroup(absl::string_view group,
                                     uint64_t worker_id = 0) const;

  // A survivor saw `expected_epoch` fail (rank `failed_rank`, or -1 if
  // unknown). Bumps the epoch unless the group is already past it
  // (idempotent per expected_epoch). NOT_FOUND: no such group.
  absl::StatusOr<BumpResult> BumpEpoch(absl::string_view group,
                                       uint64_t expected_epoch, int failed_rank,
                                       absl::string_view reason);

  // The failure detector declared this incarnation dead: every group holding
  // it frees its rank and bumps its epoch. Returns one notice per group.
  std::vector<ReformNotice> MemberDied(uint64_t worker_id,
                                       uint64_t incarnation);

  // Wakes every waiter so it re-reads the clock.
  void Tick();

 private:
  struct Group;

  Group* FindGroup(absl::string_view name) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const Group* FindGroup(absl::string_view name) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckNamespace(absl::string_view group, uint64_t epoch) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  GroupInfo InfoOf(const Group& g, uint64_t worker_id) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ReformNotice Bump(Group& g, std::vector<int> failed_ranks)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void WaitUntil(absl::Time deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const RendezvousOptions options_;
  Clock* const clock_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  // (group, epoch) -> key -> value.
  std::map<std::pair<std::string, uint64_t>,
           std::map<std::string, std::string, std::less<>>>
      kv_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::unique_ptr<Group>, std::less<>> groups_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::coordinator::rendezvous
