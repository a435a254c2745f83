#include "coordinator/health/failure_detector.h"

#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/clock.h"
#include "coordinator/membership/names.h"

namespace plexus::coordinator::health {
namespace {

using ::testing::HasSubstr;

class FailureDetectorTest : public ::testing::Test {
 protected:
  FailureDetectorTest()
      : detector_({.suspect_timeout = absl::Seconds(5),
                   .dead_timeout = absl::Seconds(15)},
                  &clock_) {}
  FakeClock clock_;
  FailureDetector detector_;
};

TEST_F(FailureDetectorTest, SuspectedThenDeadWithoutHeartbeats) {
  absl::Time start = clock_.Now();
  detector_.Track(1, 100);
  EXPECT_EQ(detector_.NextDeadline(), start + absl::Seconds(5));
  clock_.Advance(absl::Seconds(4));
  EXPECT_TRUE(detector_.Poll().empty());
  clock_.Advance(absl::Seconds(1));
  std::vector<HealthEvent> events = detector_.Poll();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].worker_id, 1u);
  EXPECT_EQ(events[0].incarnation, 100u);
  EXPECT_EQ(events[0].from, Liveness::kAlive);
  EXPECT_EQ(events[0].to, Liveness::kSuspected);
  EXPECT_EQ(events[0].at, start + absl::Seconds(5));
  EXPECT_EQ(detector_.Get(1)->liveness, Liveness::kSuspected);
  EXPECT_EQ(detector_.NextDeadline(), start + absl::Seconds(15));
  clock_.Advance(absl::Seconds(10));
  events = detector_.Poll();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].to, Liveness::kDead);
  EXPECT_THAT(events[0].reason, HasSubstr("no heartbeat for 15s"));
  EXPECT_EQ(detector_.NextDeadline(), absl::InfiniteFuture());
  // Dead is final for that incarnation.
  clock_.Advance(absl::Hours(1));
  EXPECT_TRUE(detector_.Poll().empty());
  EXPECT_EQ(detector_.Heartbeat(1, 100, {}).code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(FailureDetectorTest, HeartbeatsKeepAliveAndRecordProgress) {
  detector_.Track(1, 100);
  for (uint64_t step = 1; step <= 10; ++step) {
    clock_.Advance(absl::Seconds(4));
    ASSERT_TRUE(detector_
                    .Heartbeat(1, 100,
                               {.last_finished_step_id = step,
                                .current_closure_id = step + 1,
                                .current_step_id = step + 1,
                                .closures_finished = step})
                    .ok());
    EXPECT_TRUE(detector_.Poll().empty());
  }
  ProcessHealth h = *detector_.Get(1);
  EXPECT_EQ(h.liveness, Liveness::kAlive);
  EXPECT_EQ(h.progress.last_finished_step_id, 10u);
  EXPECT_EQ(h.progress.current_step_id, 11u);
  EXPECT_EQ(h.heartbeats, 10u);
  EXPECT_EQ(h.last_progress, clock_.Now());
  // Progress never goes back, and a heartbeat without progress keeps the
  // time of the last progress.
  absl::Time progressed = clock_.Now();
  clock_.Advance(absl::Seconds(1));
  ASSERT_TRUE(
      detector_
          .Heartbeat(1, 100,
                     {.last_finished_step_id = 3, .closures_finished = 10})
          .ok());
  h = *detector_.Get(1);
  EXPECT_EQ(h.progress.last_finished_step_id, 10u);
  EXPECT_EQ(h.last_progress, progressed);
  EXPECT_EQ(h.last_heartbeat, clock_.Now());
}

TEST_F(FailureDetectorTest, SuspectedProcessThatHeartbeatsIsAliveAgain) {
  detector_.Track(1, 100);
  clock_.Advance(absl::Seconds(6));
  ASSERT_EQ(detector_.Poll().size(), 1u);
  ASSERT_TRUE(detector_.Heartbeat(1, 100, {}).ok());
  std::vector<HealthEvent> events = detector_.Poll();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].from, Liveness::kSuspected);
  EXPECT_EQ(events[0].to, Liveness::kAlive);
  clock_.Advance(absl::Seconds(14));
  events = detector_.Poll();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].to, Liveness::kSuspected);
}

TEST_F(FailureDetectorTest, LongSilenceGoesStraightToDead) {
  detector_.Track(1, 100);
  clock_.Advance(absl::Seconds(20));
  std::vector<HealthEvent> events = detector_.Poll();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].from, Liveness::kAlive);
  EXPECT_EQ(events[0].to, Liveness::kDead);
}

TEST_F(FailureDetectorTest, DeadProcessComesBackWithNewIncarnation) {
  detector_.Track(1, 100);
  clock_.Advance(absl::Seconds(15));
  ASSERT_EQ(detector_.Poll().back().to, Liveness::kDead);
  // The zombie's heartbeat is refused; the restarted process is tracked anew.
  EXPECT_EQ(detector_.Heartbeat(1, 100, {}).code(),
            absl::StatusCode::kFailedPrecondition);
  detector_.Track(1, 200);
  std::vector<HealthEvent> events = detector_.Poll();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].from, Liveness::kDead);
  EXPECT_EQ(events[0].to, Liveness::kAlive);
  EXPECT_EQ(events[0].incarnation, 200u);
  EXPECT_EQ(events[0].previous_incarnation, 100u);
  EXPECT_TRUE(detector_.Heartbeat(1, 200, {}).ok());
  absl::Status stale = detector_.Heartbeat(1, 100, {});
  EXPECT_EQ(stale.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(stale.message()), HasSubstr("stale incarnation"));
  EXPECT_EQ(GetReason(stale), ErrorReason::kStaleIncarnation);
  // An older incarnation cannot be tracked over a newer one.
  detector_.Track(1, 150);
  EXPECT_EQ(detector_.Get(1)->incarnation, 200u);
  EXPECT_TRUE(detector_.Poll().empty());
}

TEST_F(FailureDetectorTest, LeaveAndMarkDeadAreFinalAndIdempotent) {
  detector_.Track(1, 100);
  detector_.Track(2, 101);
  detector_.Leave(1, 100);
  detector_.Leave(1, 100);
  detector_.MarkDead(2, 999, "stale");  // ignored
  detector_.MarkDead(2, 101, "RPC failed: connection refused");
  detector_.MarkDead(2, 101, "again");
  std::vector<HealthEvent> events = detector_.Poll();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].to, Liveness::kLeft);
  EXPECT_EQ(events[1].to, Liveness::kDead);
  EXPECT_EQ(events[1].reason, "RPC failed: connection refused");
  clock_.Advance(absl::Hours(1));
  EXPECT_TRUE(detector_.Poll().empty());
}

TEST_F(FailureDetectorTest, UnknownWorkerAndForget) {
  EXPECT_EQ(detector_.Heartbeat(7, 1, {}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(detector_.Get(7).status().code(), absl::StatusCode::kNotFound);
  detector_.Track(7, 1);
  detector_.Forget(7);
  clock_.Advance(absl::Hours(1));
  EXPECT_TRUE(detector_.Poll().empty());
  EXPECT_TRUE(detector_.List().empty());
}

TEST_F(FailureDetectorTest, ConcurrentHeartbeatsAndPolls) {
  constexpr int kWorkers = 8;
  for (int w = 1; w <= kWorkers; ++w) detector_.Track(w, w * 10);
  std::vector<std::thread> threads;
  for (int w = 1; w <= kWorkers; ++w) {
    threads.emplace_back([this, w] {
      for (uint64_t i = 1; i <= 200; ++i) {
        ASSERT_TRUE(
            detector_.Heartbeat(w, w * 10, {.last_finished_step_id = i}).ok());
      }
    });
  }
  threads.emplace_back([this] {
    for (int i = 0; i < 200; ++i) EXPECT_TRUE(detector_.Poll().empty());
  });
  for (std::thread& t : threads) t.join();
  for (const ProcessHealth& h : detector_.List()) {
    EXPECT_EQ(h.progress.last_finished_step_id, 200u);
    EXPECT_EQ(h.heartbeats, 200u);
  }
}

}  // namespace
}  // namespace plexus::coordinator::health

namespace plexus::coordinator::health {
namespace {

TEST(FailureDetectorDisconnectTest, ClosedStreamIsDeadAfterDisconnectTimeout) {
  FakeClock clock;
  FailureDetector d({.suspect_timeout = absl::Seconds(5),
                     .dead_timeout = absl::Seconds(15),
                     .disconnect_timeout = absl::Seconds(2)},
                    &clock);
  absl::Time start = clock.Now();
  d.Track(1, 100);
  d.Disconnected(1, 100);
  EXPECT_EQ(d.NextDeadline(), start + absl::Seconds(2));
  clock.Advance(absl::Milliseconds(1999));
  EXPECT_TRUE(d.Poll().empty());
  clock.Advance(absl::Milliseconds(1));
  std::vector<HealthEvent> events = d.Poll();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].to, Liveness::kDead);
  EXPECT_EQ(events[0].at, start + absl::Seconds(2));
  EXPECT_THAT(events[0].reason, ::testing::HasSubstr("stream closed"));
}

TEST(FailureDetectorDisconnectTest, AHeartbeatAfterReconnectingCancelsIt) {
  FakeClock clock;
  FailureDetector d({.suspect_timeout = absl::Seconds(5),
                     .dead_timeout = absl::Seconds(15),
                     .disconnect_timeout = absl::Seconds(2)},
                    &clock);
  d.Track(1, 100);
  d.Disconnected(1, 100);
  clock.Advance(absl::Seconds(1));
  ASSERT_TRUE(d.Heartbeat(1, 100, {}).ok());
  clock.Advance(absl::Seconds(3));
  EXPECT_TRUE(d.Poll().empty());
  EXPECT_EQ(d.Get(1)->liveness, Liveness::kAlive);
  // A stale incarnation's closed stream, or a zero timeout, changes nothing.
  d.Disconnected(1, 99);
  clock.Advance(absl::Seconds(3));
  ASSERT_TRUE(d.Heartbeat(1, 100, {}).ok());
  EXPECT_TRUE(d.Poll().empty());
  FailureDetector off({.disconnect_timeout = absl::ZeroDuration()}, &clock);
  off.Track(2, 1);
  off.Disconnected(2, 1);
  clock.Advance(absl::Seconds(4));
  EXPECT_TRUE(off.Poll().empty());
}

}  // namespace
}  // namespace plexus::coordinator::health
