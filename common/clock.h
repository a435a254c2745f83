// An injectable clock. Logic that reasons about time (failure detection,
// deadlines, backoff) takes a Clock* so that tests drive it with FakeClock
// instead of sleeping.
//
// Thread safety: every method of both implementations may be called from any
// thread.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace plexus {

class Clock {
 public:
  virtual ~Clock() = default;
  // The current time.
  virtual absl::Time Now() const = 0;
  // The process-wide real clock. Never null; never destroyed.
  static Clock* Real();
};

// A clock that moves only when told. Starts at the Unix epoch plus one day,
// unless given a start time.
class FakeClock : public Clock {
 public:
  FakeClock();
  explicit FakeClock(absl::Time start);

  absl::Time Now() const override;
  // Moves the clock forward. REQUIRES: d >= 0.
  void Advance(absl::Duration d);
  // Sets the clock. REQUIRES: t >= Now(); a clock never goes back.
  void Set(absl::Time t);

 private:
  mutable absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus
