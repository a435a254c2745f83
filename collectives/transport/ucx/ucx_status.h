// The one place where UCX status codes become absl::Status (CONVENTIONS.md,
// habit 4). Peer-loss codes map to UNAVAILABLE, cancellation to ABORTED, size
// mismatches to INVALID_ARGUMENT, anything else to INTERNAL.
#pragma once

#include <ucs/type/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace plexus::collectives::ucx {

// OK for UCS_OK; otherwise "<context>: <ucs_status_string>" with the mapped
// code. REQUIRES: status is not UCS_INPROGRESS.
absl::Status FromUcs(ucs_status_t status, absl::string_view context);

}  // namespace plexus::collectives::ucx
