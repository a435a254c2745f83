// Naming rules and machine-readable error reasons shared by the coordinator's
// logic modules.
//
// Names (jobs, groups, keys) follow common.proto: non-empty, at most 256
// bytes, of [A-Za-z0-9_.:/-], never a path-like "." or ".." component.
//
// Reasons: FAILED_PRECONDITION and RESOURCE_EXHAUSTED errors from the logic
// modules carry a small payload saying why, so the gRPC glue can attach the
// matching plexus.v1.ErrorInfo reason without parsing messages.
//
// Thread safety: pure functions.
#pragma once

#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace plexus::coordinator {

inline constexpr size_t kMaxNameBytes = 256;

// OK, or INVALID_ARGUMENT naming `what` (e.g. "job id").
absl::Status ValidateName(absl::string_view name, absl::string_view what);

// Mirrors plexus.v1.ErrorInfo.Reason values the logic modules produce.
enum class ErrorReason {
  kStaleIncarnation,      // REASON_STALE_INCARNATION
  kStaleGroupEpoch,       // REASON_STALE_GROUP_EPOCH
  kPeerDead,              // REASON_PEER_DEAD
  kRestartBudgetExceeded  // REASON_RESTART_BUDGET_EXCEEDED
};

// The payload type URL the reason travels under inside an absl::Status.
inline constexpr char kErrorReasonPayloadUrl[] = "plexus.coordinator/reason";

// `status` with the reason attached (OK stays OK).
absl::Status WithReason(absl::Status status, ErrorReason reason);
// The reason attached to `status`, if any.
std::optional<ErrorReason> GetReason(const absl::Status& status);

}  // namespace plexus::coordinator
