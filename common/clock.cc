#include "common/clock.h"

#include <glog/logging.h>

namespace plexus {
namespace {

class RealClock : public Clock {
 public:
  absl::Time Now() const override { return absl::Now(); }
};

}  // namespace

Clock* Clock::Real() {
  static RealClock* clock = new RealClock();
  return clock;
}

FakeClock::FakeClock() : FakeClock(absl::UnixEpoch() + absl::Hours(24)) {}

FakeClock::FakeClock(absl::Time start) : now_(start) {}

absl::Time FakeClock::Now() const {
  absl::MutexLock lock(&mu_);
  return now_;
}

void FakeClock::Advance(absl::Duration d) {
  CHECK_GE(d, absl::ZeroDuration()) << "a clock never goes back";
  absl::MutexLock lock(&mu_);
  now_ += d;
}

void FakeClock::Set(absl::Time t) {
  absl::MutexLock lock(&mu_);
  CHECK_GE(t, now_) << "a clock never goes back";
  now_ = t;
}

}  // namespace plexus
