// Step functions a worker can run, by name: what RegisterStep("train", fn)
// records and what the worker advertises to the coordinator as its
// capabilities (only closures with these names are dispatched to it).
//
// Thread safety: Register before the runtime starts; Find and Names may then
// be called from any thread (the registry is not changed while running).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace plexus::worker {

class PsClient;

// What a running step sees. Owned by the runtime; valid only during the call.
class StepContext {
 public:
  virtual ~StepContext() = default;
  // The closure's step id (>= 1), closure id (>= 1), attempt (>= 1), job.
  virtual uint64_t step_id() const = 0;
  virtual uint64_t closure_id() const = 0;
  virtual uint32_t attempt() const = 0;
  virtual const std::string& job_id() const = 0;
  // This worker's id and incarnation as the coordinator assigned them.
  virtual uint64_t worker_id() const = 0;
  virtual uint64_t incarnation() const = 0;
  // A PS client whose requests carry this worker's identity, and whose calls
  // made with default StepOptions carry this closure's step id, closure id
  // and a push_seq assigned in call order (0, 1, ...), so the PS applies
  // each push of the closure exactly once even when the closure is re-run.
  // Pushes are refused with FAILED_PRECONDITION (stale incarnation) once the
  // coordinator has fenced this incarnation out, and wait while the worker
  // cannot prove it is still alive (its heartbeat lease lapsed). Null when
  // the runtime was started without PS shards.
  virtual PsClient* ps() = 0;
  // True once the worker was told to stop (SIGTERM past the drain grace, or
  // fenced out): a long step may return early with an error; the runtime
  // then hands the closure back.
  virtual bool cancelled() const = 0;
};

// A step function: gets the closure's argument bytes and its context,
// returns result bytes (the remote value) or an error. Errors with codes
// UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED make the coordinator re-queue
// the closure; other codes fail it (and its job).
using StepFn = std::function<absl::StatusOr<std::string>(absl::string_view args,
                                                         StepContext& ctx)>;

class StepRegistry {
 public:
  // INVALID_ARGUMENT: empty name or null fn. ALREADY_EXISTS: name taken.
  absl::Status Register(const std::string& name, StepFn fn);
  // Null when no such step.
  const StepFn* Find(absl::string_view name) const;
  // Registered names, sorted.
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, StepFn, std::less<>> steps_;
};

}  // namespace plexus::worker
