// Failpoints: named places in the code where a test can inject a fault.
//
//   PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT("ps.apply.after_write_before_ack"));
//
// A failpoint is off unless configured; when every failpoint is off, evaluating
// one costs a single relaxed atomic load. They are configured by the
// `--failpoints` flag, the PLEXUS_FAILPOINTS environment variable (read by
// InitProcess), an admin RPC, or in-process through Set()/Configure().
//
// Spec grammar: `name=action[;name=action...]`, where action is one of
//   off                 disable the point
//   crash               log, then kill this process with SIGKILL (a lost
//   machine) hang                log "failpoint <name>: hanging", block until
//   Release(name),
//                       Clear(name) or ClearAll()
//   sleep(MS)           log "failpoint <name>: sleeping", wait MS
//                       milliseconds, then pass (a slow call in flight)
//   error(CODE)         return absl::Status with that code (e.g. UNAVAILABLE)
//   error(CODE,message) same with a message
// and may be prefixed by `N*`: pass the first N hits, then act on every later
// one.
//
// Every hit is counted (HitCount) and every firing logged at WARNING level with
// the name, so process-level tests can latch on the log line.
//
// Thread safety: all functions may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace plexus::failpoint {

// Applies a spec (see above). On error nothing is changed.
absl::Status Configure(absl::string_view spec);
// Sets one point's action (see above). On error nothing is changed.
absl::Status Set(absl::string_view name, absl::string_view action);
// Turns one point off and releases threads hanging at it.
void Clear(absl::string_view name);
// Turns every point off and releases every hanging thread.
void ClearAll();
// Releases the threads hanging at `name` now; the point stays configured.
void Release(absl::string_view name);
// How many times `name` was evaluated while configured (fired or passed).
int64_t HitCount(absl::string_view name);
// Every point that is on, as "name=action" in the spec grammar, sorted.
std::vector<std::string> Active();
// Blocks until at least one thread hangs at `name`, or `timeout` passes.
// Returns whether one does.
bool WaitUntilHanging(absl::string_view name, absl::Duration timeout);

// The slow path of PLEXUS_FAILPOINT; use the macro.
absl::Status Evaluate(absl::string_view name);

namespace internal {
extern std::atomic<int> g_enabled_count;
}  // namespace internal

}  // namespace plexus::failpoint

// Evaluates a failpoint: OK unless it is configured to fail.
#define PLEXUS_FAILPOINT(name)                          \
  (::plexus::failpoint::internal::g_enabled_count.load( \
       std::memory_order_relaxed) == 0                  \
       ? ::absl::OkStatus()                             \
       : ::plexus::failpoint::Evaluate(name))
