#include <map>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "collectives/rendezvous/store.h"

namespace plexus::collectives {
namespace {

class MemoryStore : public Store {
 public:
  absl::Status Set(absl::string_view key, absl::string_view value) override {
    absl::MutexLock lock(&mu_);
    map_[std::string(key)] = std::string(value);
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> Get(absl::string_view key,
                                  absl::Time deadline) override {
    std::vector<std::string> keys = {std::string(key)};
    absl::MutexLock lock(&mu_);
    absl::Status status = WaitLocked(keys, deadline);
    if (!status.ok()) return status;
    return map_[keys[0]];
  }

  absl::Status Wait(absl::Span<const std::string> keys,
                    absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    return WaitLocked(keys, deadline);
  }

  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override {
    absl::MutexLock lock(&mu_);
    std::string& v = map_[std::string(key)];
    int64_t value = 0;
    if (!v.empty() && !absl::SimpleAtoi(v, &value)) {
      return absl::InvalidArgumentError(
          absl::StrCat("store key ", key, " is not a counter"));
    }
    value += delta;
    v = absl::StrCat(value);
    return value;
  }

 private:
  absl::Status WaitLocked(absl::Span<const std::string> keys,
                          absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    auto all_present = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      for (const auto& k : keys) {
        if (!map_.contains(k)) return false;
      }
      return true;
    };
    if (mu_.AwaitWithDeadline(absl::Condition(&all_present), deadline)) {
      return absl::OkStatus();
    }
    std::vector<std::string> missing;
    for (const auto& k : keys) {
      if (!map_.contains(k)) missing.push_back(k);
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "store: keys not set in time: ", absl::StrJoin(missing, ", ")));
  }

  absl::Mutex mu_;
  std::map<std::string, std::string> map_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<Store> NewMemoryStore() {
  return std::make_unique<MemoryStore>();
}

}  // namespace plexus::collectives
