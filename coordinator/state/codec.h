// Binary encoding of the coordinator's state (membership and scheduler
// snapshots) for its RocksDB. Not a wire format: only plexus-coordinator
// reads it back. Every record starts with a format version; decoding checks
// every length and tag and fails with DATA_LOSS (naming what was being read)
// on truncated, trailing or unknown data, so a damaged store is reported,
// never half-loaded.
//
// Thread safety: pure functions.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/membership/membership.h"
#include "coordinator/scheduling/scheduler.h"

namespace plexus::coordinator::state {

inline constexpr uint32_t kStateFormatVersion = 1;

std::string EncodeMembership(const membership::MembershipSnapshot& snapshot);
absl::StatusOr<membership::MembershipSnapshot> DecodeMembership(
    absl::string_view bytes);

std::string EncodeScheduler(const scheduling::SchedulerSnapshot& snapshot);
absl::StatusOr<scheduling::SchedulerSnapshot> DecodeScheduler(
    absl::string_view bytes);

}  // namespace plexus::coordinator::state
