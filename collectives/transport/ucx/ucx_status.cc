#include "collectives/transport/ucx/ucx_status.h"

#include "absl/strings/str_cat.h"

namespace plexus::collectives::ucx {

absl::Status FromUcs(ucs_status_t status, absl::string_view context) {
  if (status == UCS_OK) return absl::OkStatus();
  std::string msg =
      absl::StrCat(context, ": ", ucs_status_string(status), " (UCX)");
  switch (status) {
    case UCS_ERR_CANCELED:
      return absl::AbortedError(msg);
    case UCS_ERR_ENDPOINT_TIMEOUT:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_SOME_CONNECTS_FAILED:
      return absl::UnavailableError(msg);
    case UCS_ERR_MESSAGE_TRUNCATED:
    case UCS_ERR_INVALID_PARAM:
      return absl::InvalidArgumentError(msg);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(msg);
    case UCS_ERR_UNSUPPORTED:
    case UCS_ERR_NO_DEVICE:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

}  // namespace plexus::collectives::ucx
