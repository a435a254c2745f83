// The coordinator's own RocksDB: its epoch, membership and scheduler state,
// so a restarted coordinator continues the job without restarting workers or
// PS shards (FAULTS.md F9), and fences out the coordinator it replaces.
//
// Use at start-up:
//   PLEXUS_ASSIGN_OR_RETURN(auto store, StateStore::Open(data_dir + "/state"));
//   PLEXUS_ASSIGN_OR_RETURN(uint64_t epoch, store->BumpEpoch());  // synced
//   PLEXUS_ASSIGN_OR_RETURN(auto membership_snapshot, store->LoadMembership());
//   ... Membership::Restore(*snapshot, {.coordinator_epoch = epoch, ...}) ...
// and after every state change that must survive (registration, dispatch,
// report, submit), Save(...) (one synced write batch, so a crash leaves the
// previous or the new state, never a mix).
//
// The folder is the coordinator's alone: RocksDB's LOCK file makes a second
// Open of it fail (UNAVAILABLE) while the first is open.
//
// Thread safety: every method may be called from any thread (RocksDB is
// thread-safe and the epoch bump is serialised).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "coordinator/membership/membership.h"
#include "coordinator/scheduling/scheduler.h"

namespace rocksdb {
class DB;
}  // namespace rocksdb

namespace plexus::coordinator::state {

class StateStore {
 public:
  // Opens (creating if missing) the store in `dir`.
  static absl::StatusOr<std::unique_ptr<StateStore>> Open(
      const std::string& dir);
  ~StateStore();

  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // The stored epoch + 1 (1 for a new store), stored and synced before it is
  // returned.
  absl::StatusOr<uint64_t> BumpEpoch();
  // The stored epoch; 0 for a new store.
  absl::StatusOr<uint64_t> Epoch() const;

  // Stores both snapshots in one synced batch.
  absl::Status Save(const membership::MembershipSnapshot& membership,
                    const scheduling::SchedulerSnapshot& scheduler);
  absl::Status SaveMembership(const membership::MembershipSnapshot& snapshot);
  absl::Status SaveScheduler(const scheduling::SchedulerSnapshot& snapshot);

  // The stored snapshots; nullopt when none was saved. DATA_LOSS when the
  // stored bytes are damaged.
  absl::StatusOr<std::optional<membership::MembershipSnapshot>> LoadMembership()
      const;
  absl::StatusOr<std::optional<scheduling::SchedulerSnapshot>> LoadScheduler()
      const;

 private:
  explicit StateStore(std::unique_ptr<rocksdb::DB> db);
  absl::StatusOr<std::optional<std::string>> Read(const std::string& key) const;

  const std::unique_ptr<rocksdb::DB> db_;
  absl::Mutex epoch_mu_;  // serialises BumpEpoch
};

}  // namespace plexus::coordinator::state
