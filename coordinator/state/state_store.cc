#include "coordinator/state/state_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "coordinator/state/codec.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace plexus::coordinator::state {
namespace {

constexpr char kEpochKey[] = "coordinator/epoch";
constexpr char kMembershipKey[] = "coordinator/membership";
constexpr char kSchedulerKey[] = "coordinator/scheduler";

// The one translation of rocksdb::Status (CONVENTIONS.md habit 4).
absl::Status FromRocks(const rocksdb::Status& s, absl::string_view context) {
  if (s.ok()) return absl::OkStatus();
  std::string message = absl::StrCat(context, ": ", s.ToString());
  if (s.IsCorruption()) return absl::DataLossError(message);
  if (s.IsNotFound()) return absl::NotFoundError(message);
  if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    return absl::UnavailableError(message);
  }
  if (s.IsBusy() || s.IsTimedOut() || s.IsTryAgain()) {
    return absl::UnavailableError(message);
  }
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(message);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(message);
  return absl::InternalError(message);
}

std::string EncodeFixed64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(v >> (8 * i));
  return out;
}

absl::StatusOr<uint64_t> DecodeFixed64(absl::string_view in) {
  if (in.size() != 8) {
    return absl::DataLossError("coordinator state: the epoch is damaged");
  }
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v |= static_cast<uint64_t>(static_cast<uint8_t>(in[i])) << (8 * i);
  }
  return v;
}

rocksdb::WriteOptions Synced() {
  rocksdb::WriteOptions o;
  o.sync = true;
  return o;
}

}  // namespace

StateStore::StateStore(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {}
StateStore::~StateStore() = default;

absl::StatusOr<std::unique_ptr<StateStore>> StateStore::Open(
    const std::string& dir) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  rocksdb::DB* raw = nullptr;
  PLEXUS_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(options, dir, &raw),
                absl::StrCat("opening coordinator state in ", dir)));
  return std::unique_ptr<StateStore>(
      new StateStore(std::unique_ptr<rocksdb::DB>(raw)));
}

absl::StatusOr<std::optional<std::string>> StateStore::Read(
    const std::string& key) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), key, &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  PLEXUS_RETURN_IF_ERROR(FromRocks(s, absl::StrCat("reading ", key)));
  return std::optional<std::string>(std::move(value));
}

absl::StatusOr<uint64_t> StateStore::Epoch() const {
  PLEXUS_ASSIGN_OR_RETURN(std::optional<std::string> v, Read(kEpochKey));
  if (!v.has_value()) return uint64_t{0};
  return DecodeFixed64(*v);
}

absl::StatusOr<uint64_t> StateStore::BumpEpoch() {
  absl::MutexLock lock(&epoch_mu_);
  PLEXUS_ASSIGN_OR_RETURN(uint64_t epoch, Epoch());
  ++epoch;
  PLEXUS_RETURN_IF_ERROR(
      FromRocks(db_->Put(Synced(), kEpochKey, EncodeFixed64(epoch)),
                "storing the coordinator epoch"));
  return epoch;
}

absl::Status StateStore::Save(const membership::MembershipSnapshot& m,
                              const scheduling::SchedulerSnapshot& s) {
  rocksdb::WriteBatch batch;
  PLEXUS_RETURN_IF_ERROR(
      FromRocks(batch.Put(kMembershipKey, EncodeMembership(m)), "batch"));
  PLEXUS_RETURN_IF_ERROR(
      FromRocks(batch.Put(kSchedulerKey, EncodeScheduler(s)), "batch"));
  return FromRocks(db_->Write(Synced(), &batch),
                   "storing the coordinator state");
}

absl::Status StateStore::SaveMembership(
    const membership::MembershipSnapshot& snapshot) {
  return FromRocks(
      db_->Put(Synced(), kMembershipKey, EncodeMembership(snapshot)),
      "storing the membership");
}

absl::Status StateStore::SaveScheduler(
    const scheduling::SchedulerSnapshot& snapshot) {
  return FromRocks(db_->Put(Synced(), kSchedulerKey, EncodeScheduler(snapshot)),
                   "storing the scheduler state");
}

absl::StatusOr<std::optional<membership::MembershipSnapshot>>
StateStore::LoadMembership() const {
  PLEXUS_ASSIGN_OR_RETURN(std::optional<std::string> v, Read(kMembershipKey));
  if (!v.has_value()) return std::optional<membership::MembershipSnapshot>();
  PLEXUS_ASSIGN_OR_RETURN(membership::MembershipSnapshot s,
                          DecodeMembership(*v));
  return std::optional<membership::MembershipSnapshot>(std::move(s));
}

absl::StatusOr<std::optional<scheduling::SchedulerSnapshot>>
StateStore::LoadScheduler() const {
  PLEXUS_ASSIGN_OR_RETURN(std::optional<std::string> v, Read(kSchedulerKey));
  if (!v.has_value()) return std::optional<scheduling::SchedulerSnapshot>();
  PLEXUS_ASSIGN_OR_RETURN(scheduling::SchedulerSnapshot s, DecodeScheduler(*v));
  return std::optional<scheduling::SchedulerSnapshot>(std::move(s));
}

}  // namespace plexus::coordinator::state
