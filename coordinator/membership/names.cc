#include "coordinator/membership/names.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace plexus::coordinator {

absl::Status ValidateName(absl::string_view name, absl::string_view what) {
  if (name.empty())
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is ", name.size(),
                                                   " bytes, over the limit of ",
                                                   kMaxNameBytes));
  }
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '.' || c == ':' ||
              c == '/' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", absl::CEscape(name),
                       "\" has a character outside [A-Za-z0-9_.:/-]"));
    }
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " \"", name, "\" has a path-like component"));
    }
  }
  return absl::OkStatus();
}

absl::Status WithReason(absl::Status status, ErrorReason reason) {
  if (status.ok()) return status;
  status.SetPayload(kErrorReasonPayloadUrl,
                    absl::Cord(std::to_string(static_cast<int>(reason))));
  return status;
}

std::optional<ErrorReason> GetReason(const absl::Status& status) {
  auto payload = status.GetPayload(kErrorReasonPayloadUrl);
  if (!payload.has_value()) return std::nullopt;
  std::string text(*payload);
  if (text.size() != 1 || text[0] < '0' ||
      text[0] > '0' + static_cast<int>(ErrorReason::kRestartBudgetExceeded)) {
    return std::nullopt;
  }
  return static_cast<ErrorReason>(text[0] - '0');
}

}  // namespace plexus::coordinator
