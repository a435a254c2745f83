#include "absl/strings/str_cat.h"
#include "collectives/rendezvous/store.h"

namespace plexus::collectives {
namespace {

class PrefixStore : public Store {
 public:
  PrefixStore(Store* base, std::string prefix)
      : base_(base), prefix_(std::move(prefix) + "/") {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    return base_->Set(Key(key), value);
  }
  absl::StatusOr<std::string> Get(absl::string_view key,
                                  absl::Time deadline) override {
    return base_->Get(Key(key), deadline);
  }
  absl::Status Wait(absl::Span<const std::string> keys,
                    absl::Time deadline) override {
    std::vector<std::string> full;
    for (const auto& k : keys) full.push_back(Key(k));
    return base_->Wait(full, deadline);
  }
  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override {
    return base_->Add(Key(key), delta);
  }

 private:
  std::string Key(absl::string_view key) const {
    return absl::StrCat(prefix_, key);
  }
  Store* const base_;
  const std::string prefix_;
};

}  // namespace

std::unique_ptr<Store> NewPrefixStore(Store* base, std::string prefix) {
  return std::make_unique<PrefixStore>(base, std::move(prefix));
}

std::string GroupEpochPrefix(absl::string_view group, int64_t epoch) {
  return absl::StrCat("group/", group, "/epoch/", epoch);
}

}  // namespace plexus::collectives
