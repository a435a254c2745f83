#include "examples/mlp/runtime_store.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "plexus/worker/runtime.h"

namespace plexus::examples {
namespace {

class RuntimeStore : public collectives::Store {
 public:
  RuntimeStore(worker::Runtime* runtime, std::string group, uint64_t epoch)
      : runtime_(runtime), group_(std::move(group)), epoch_(epoch) {}

  absl::Status Set(absl::string_view key, absl::string_view value) override {
    return runtime_->RendezvousSet(group_, epoch_, std::string(key),
                                   std::string(value));
  }

  absl::StatusOr<std::string> Get(absl::string_view key,
                                  absl::Time deadline) override {
    PLEXUS_ASSIGN_OR_RETURN(
        std::vector<std::string> values,
        runtime_->RendezvousWait(group_, epoch_, {std::string(key)}, deadline),
        absl::StrCat("rendezvous key '", key, "' of group ", group_));
    if (values.size() != 1) {
      return absl::InternalError(absl::StrCat(
          "the coordinator answered ", values.size(), " values for one key"));
    }
    return std::move(values[0]);
  }

  absl::Status Wait(absl::Span<const std::string> keys,
                    absl::Time deadline) override {
    if (keys.empty()) return absl::OkStatus();
    return runtime_
        ->RendezvousWait(group_, epoch_,
                         std::vector<std::string>(keys.begin(), keys.end()),
                         deadline)
        .status();
  }

  absl::StatusOr<int64_t> Add(absl::string_view key, int64_t delta) override {
    return absl::UnimplementedError(absl::StrCat(
        "counter '", key,
        "': the coordinator's rendezvous has no counters (Set/Get/Wait only)"));
  }

 private:
  worker::Runtime* const runtime_;
  const std::string group_;
  const uint64_t epoch_;
};

}  // namespace

std::unique_ptr<collectives::Store> NewRuntimeStore(worker::Runtime* runtime,
                                                    std::string group,
                                                    uint64_t group_epoch) {
  return std::make_unique<RuntimeStore>(runtime, std::move(group), group_epoch);
}

}  // namespace plexus::examples
