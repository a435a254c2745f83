#include "collectives/patterns/device_plan.h"

#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace plexus::collectives::patterns {

std::string FormatMemberInfo(const MemberInfo& info) {
  return absl::StrCat(info.gpu.empty() ? "-" : info.gpu, " ", info.node);
}

std::optional<MemberInfo> ParseMemberInfo(absl::string_view value) {
  const size_t space = value.find(' ');
  if (space == absl::string_view::npos || space == 0 ||
      space + 1 == value.size()) {
    return std::nullopt;
  }
  MemberInfo info;
  absl::string_view gpu = value.substr(0, space);
  if (gpu != "-") info.gpu = std::string(gpu);
  info.node = std::string(value.substr(space + 1));
  return info;
}

absl::StatusOr<DevicePlan> PlanDevices(
    absl::Span<const std::optional<MemberInfo>> members, int rank,
    Backend backend) {
  const int size = static_cast<int>(members.size());
  if (rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", rank, " of ", size, " is out of range"));
  }
  DevicePlan plan;
  if (backend == Backend::kUcx) {
    plan.why_none = "the backend is ucx";
    return plan;
  }
  const bool forced =
      backend == Backend::kNccl || backend == Backend::kHierarchical;
  auto refuse = [&](std::string why) -> absl::StatusOr<DevicePlan> {
    if (forced) {
      return absl::FailedPreconditionError(
          absl::StrCat("collectives backend ", BackendName(backend),
                       " was asked for, but ", why));
    }
    plan.why_none = std::move(why);
    return plan;
  };
  std::vector<int> without_gpu;
  for (int r = 0; r < size; ++r) {
    if (!members[r].has_value() || members[r]->gpu.empty()) {
      without_gpu.push_back(r);
    }
  }
  if (!without_gpu.empty()) {
    return refuse(
        absl::StrCat("not every member has a usable GPU (ranks "
                     "without one: ",
                     absl::StrJoin(without_gpu, ", "), ")"));
  }
  // NCCL refuses two ranks of one communicator on one GPU.
  std::map<std::pair<std::string, std::string>, int> owner;
  for (int r = 0; r < size; ++r) {
    auto [it, fresh] =
        owner.emplace(std::make_pair(members[r]->node, members[r]->gpu), r);
    if (!fresh) {
      return refuse(
          absl::StrCat("ranks ", it->second, " and ", r, " share GPU ",
                       members[r]->gpu, " on node ", members[r]->node,
                       ", which NCCL refuses (give each rank its own GPU)"));
    }
  }
  std::map<std::string, int> node_index;
  for (int r = 0; r < size; ++r) {
    node_index.emplace(members[r]->node, static_cast<int>(node_index.size()));
  }
  const std::string& mine = members[rank]->node;
  plan.num_nodes = static_cast<int>(node_index.size());
  plan.node = node_index[mine];
  for (int r = 0; r < size; ++r) {
    if (members[r]->node != mine) continue;
    if (r < rank) ++plan.local_rank;
    ++plan.local_size;
  }
  const bool hierarchical = backend == Backend::kHierarchical ||
                            (backend == Backend::kAuto && plan.num_nodes > 1);
  plan.kind =
      hierarchical ? DevicePlan::Kind::kHierarchical : DevicePlan::Kind::kFlat;
  return plan;
}

}  // namespace plexus::collectives::patterns
