// Pure planning for device (GPU) buffers: from what every member published
// (its GPU and node, see collectives/device_collectives.h), whether the group
// uses NCCL, flat or hierarchical, and this rank's place in its node. No
// CUDA, no I/O: tested exhaustively on machines without a GPU.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives::patterns {

// What one member published.
struct MemberInfo {
  std::string gpu;   // its GPU's PCI bus id; empty: no usable GPU
  std::string node;  // where it runs (non-empty)
};
// "<gpu or -> <node>" (the node may contain spaces, the bus id not).
std::string FormatMemberInfo(const MemberInfo& info);
// nullopt for a malformed value.
std::optional<MemberInfo> ParseMemberInfo(absl::string_view value);

struct DevicePlan {
  enum class Kind { kNone, kFlat, kHierarchical };
  Kind kind = Kind::kNone;
  // kNone: why device buffers are not served (for the error users see).
  std::string why_none;
  // kHierarchical (and kFlat, with one node): nodes in order of their
  // lowest rank; this rank's node index, its rank among its node's members
  // (in rank order) and their number.
  int num_nodes = 0;
  int node = 0;
  int local_rank = 0;
  int local_size = 0;
};

// `members[r]` is what rank r published (nullopt: nothing, i.e. a rank
// linked without GPU support). `backend` is resolved (not from the
// environment); kUcx plans kNone. FAILED_PRECONDITION when kNccl or
// kHierarchical is forced and a member has no usable GPU or two members of
// one node share a GPU; INVALID_ARGUMENT for a rank out of range.
absl::StatusOr<DevicePlan> PlanDevices(
    absl::Span<const std::optional<MemberInfo>> members, int rank,
    Backend backend);

}  // namespace plexus::collectives::patterns
