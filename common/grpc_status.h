// The one place where absl::Status and grpc::Status are converted. Codes map
// one to one (both follow google.rpc.Code); messages are kept; an ErrorInfo
// payload (common/error_info.h) travels as the status details.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace plexus {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace plexus
