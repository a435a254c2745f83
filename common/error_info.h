// plexus.v1.ErrorInfo, the machine-readable detail of a failed call (stale
// shard map, stale incarnation, dead peer, ...), attached to an absl::Status
// as a payload. ToGrpcStatus/FromGrpcStatus carry it across the wire in the
// status details, so clients act on facts rather than parse messages.
#pragma once

#include <optional>

#include "absl/status/status.h"
#include "plexus/v1/common.pb.h"

namespace plexus {

// The payload type URL under which the ErrorInfo travels in an absl::Status.
inline constexpr char kErrorInfoPayloadUrl[] =
    "type.googleapis.com/plexus.v1.ErrorInfo";

// Returns `status` carrying `info`. REQUIRES: !status.ok().
absl::Status WithErrorInfo(absl::Status status, const v1::ErrorInfo& info);

// The ErrorInfo a status carries, if any.
std::optional<v1::ErrorInfo> GetErrorInfo(const absl::Status& status);

}  // namespace plexus
