// A client for the standard gRPC health service (grpc.health.v1.Health) that
// every Plexus daemon serves.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/tls.h"

namespace plexus {

enum class Health { kServing, kNotServing };

// Asks `target` ("host:port") for its overall health within `timeout`.
// UNAVAILABLE or DEADLINE_EXCEEDED when it cannot be reached.
absl::StatusOr<Health> CheckHealth(const std::string& target,
                                   absl::Duration timeout,
                                   const ClientTlsOptions& tls = {});

// Polls CheckHealth until it reports SERVING or `timeout` passes.
absl::Status WaitUntilServing(const std::string& target, absl::Duration timeout,
                              const ClientTlsOptions& tls = {});

}  // namespace plexus
