// Status helpers used at every boundary of Plexus.
//
// Fallible functions return absl::Status / absl::StatusOr<T>. The code tells
// the caller what to do: UNAVAILABLE retry the call, ABORTED retry the larger
// operation, FAILED_PRECONDITION wait for state to change, INVALID_ARGUMENT the
// caller is wrong. These macros return early and may add context on the way up:
//
//   PLEXUS_RETURN_IF_ERROR(OpenTable(name));
//   PLEXUS_RETURN_IF_ERROR(OpenTable(name), "restoring shard 3");
//   PLEXUS_ASSIGN_OR_RETURN(auto table, OpenTable(name));
//   PLEXUS_ASSIGN_OR_RETURN(auto table, OpenTable(name), "restoring shard 3");
//
// Context is prepended to the message ("restoring shard 3: <message>"); the
// code is kept.
#pragma once

#include <utility>
#include "absl/strings/string_view.h"

#include "absl/base/optimization.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace plexus {

// Returns `status` with "context: " prepended to its message, or `status`
// unchanged when it is OK or `context` is empty.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

}  // namespace plexus

#define PLEXUS_INTERNAL_CONCAT_(a, b) a##b
#define PLEXUS_INTERNAL_CONCAT(a, b) PLEXUS_INTERNAL_CONCAT_(a, b)

#define PLEXUS_INTERNAL_RETURN_IF_ERROR(expr, context, ...) \
  do {                                                      \
    ::absl::Status plexus_status_ = (expr);                 \
    if (ABSL_PREDICT_FALSE(!plexus_status_.ok())) {         \
      return ::plexus::Annotate(plexus_status_, (context)); \
    }                                                       \
  } while (0)

// PLEXUS_RETURN_IF_ERROR(expr[, context])
#define PLEXUS_RETURN_IF_ERROR(...) \
  PLEXUS_INTERNAL_RETURN_IF_ERROR(__VA_ARGS__, "", "")

#define PLEXUS_INTERNAL_ASSIGN_OR_RETURN(tmp, lhs, rexpr, context, ...) \
  auto tmp = (rexpr);                                                   \
  if (ABSL_PREDICT_FALSE(!tmp.ok())) {                                  \
    return ::plexus::Annotate(tmp.status(), (context));                 \
  }                                                                     \
  lhs = std::move(tmp).value()

// PLEXUS_ASSIGN_OR_RETURN(lhs, rexpr[, context])
#define PLEXUS_ASSIGN_OR_RETURN(lhs, ...)                                   \
  PLEXUS_INTERNAL_ASSIGN_OR_RETURN(                                         \
      PLEXUS_INTERNAL_CONCAT(plexus_statusor_, __LINE__), lhs, __VA_ARGS__, \
      "", "")
