#include "common/grpc_status.h"

#include <string>

#include "common/error_info.h"

namespace plexus {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string details;
  if (auto info = status.GetPayload(kErrorInfoPayloadUrl); info.has_value()) {
    details = std::string(*info);
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()), details);
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  int code = static_cast<int>(status.error_code());
  // Codes outside google.rpc.Code (none today) read as UNKNOWN.
  if (code < 0 || code > 16)
    code = static_cast<int>(absl::StatusCode::kUnknown);
  absl::Status out(static_cast<absl::StatusCode>(code), status.error_message());
  if (!status.error_details().empty()) {
    out.SetPayload(kErrorInfoPayloadUrl, absl::Cord(status.error_details()));
  }
  return out;
}

}  // namespace plexus
