#include "common/error_info.h"

#include <string>

namespace plexus {

absl::Status WithErrorInfo(absl::Status status, const v1::ErrorInfo& info) {
  status.SetPayload(kErrorInfoPayloadUrl, absl::Cord(info.SerializeAsString()));
  return status;
}

std::optional<v1::ErrorInfo> GetErrorInfo(const absl::Status& status) {
  auto payload = status.GetPayload(kErrorInfoPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  v1::ErrorInfo info;
  if (!info.ParseFromString(std::string(*payload))) return std::nullopt;
  return info;
}

}  // namespace plexus
