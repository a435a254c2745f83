#include "common/clock.h"

#include <gtest/gtest.h>

namespace plexus {
namespace {

TEST(RealClock, MovesForward) {
  absl::Time a = Clock::Real()->Now();
  absl::Time b = Clock::Real()->Now();
  EXPECT_LE(a, b);
  EXPECT_GT(a, absl::FromUnixSeconds(1700000000));
}

TEST(FakeClock, StandsStillUntilAdvanced) {
  FakeClock clock;
  absl::Time t0 = clock.Now();
  EXPECT_EQ(clock.Now(), t0);
  clock.Advance(absl::Milliseconds(1500));
  EXPECT_EQ(clock.Now(), t0 + absl::Milliseconds(1500));
  clock.Set(t0 + absl::Seconds(10));
  EXPECT_EQ(clock.Now(), t0 + absl::Seconds(10));
}

TEST(FakeClock, StartsWhereTold) {
  absl::Time start = absl::FromUnixSeconds(12345);
  FakeClock clock(start);
  EXPECT_EQ(clock.Now(), start);
}

TEST(FakeClockDeathTest, NeverGoesBack) {
  FakeClock clock;
  EXPECT_DEATH(clock.Advance(absl::Seconds(-1)), "never goes back");
  EXPECT_DEATH(clock.Set(clock.Now() - absl::Seconds(1)), "never goes back");
}

}  // namespace
}  // namespace plexus
