#include "common/failpoint.h"

#include <signal.h>

#include <gtest/gtest.h>

#include <thread>

#include "absl/synchronization/notification.h"

namespace plexus::failpoint {
namespace {

class FailpointTest : public ::testing::Test {
 protected:
  void TearDown() override { ClearAll(); }
};

absl::Status Guarded(const char* name) {
  absl::Status st = PLEXUS_FAILPOINT(name);
  if (!st.ok()) return st;
  return absl::OkStatus();
}

TEST_F(FailpointTest, OffByDefaultAndCostsNoHits) {
  EXPECT_TRUE(Guarded("test.off").ok());
  EXPECT_EQ(HitCount("test.off"), 0);
}

TEST_F(FailpointTest, ErrorActionReturnsTheCode) {
  ASSERT_TRUE(Set("test.err", "error(UNAVAILABLE)").ok());
  absl::Status st = Guarded("test.err");
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(HitCount("test.err"), 1);
  // Other points stay off.
  EXPECT_TRUE(Guarded("test.other").ok());
}

TEST_F(FailpointTest, ErrorActionCarriesAMessage) {
  ASSERT_TRUE(Set("test.msg", "error(DATA_LOSS, disk ate it)").ok());
  absl::Status st = Guarded("test.msg");
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(st.message(), "disk ate it");
}

TEST_F(FailpointTest, SkipCountPassesTheFirstHits) {
  ASSERT_TRUE(Set("test.skip", "2*error(ABORTED)").ok());
  EXPECT_TRUE(Guarded("test.skip").ok());
  EXPECT_TRUE(Guarded("test.skip").ok());
  EXPECT_EQ(Guarded("test.skip").code(), absl::StatusCode::kAborted);
  EXPECT_EQ(Guarded("test.skip").code(), absl::StatusCode::kAborted);
  EXPECT_EQ(HitCount("test.skip"), 4);
}

TEST_F(FailpointTest, FireCountTurnsThePointOffAfterwards) {
  ASSERT_TRUE(Set("test.once", "1*error(UNAVAILABLE)@2").ok());
  EXPECT_TRUE(Guarded("test.once").ok());
  EXPECT_EQ(Guarded("test.once").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Guarded("test.once").code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(Guarded("test.once").ok());
  EXPECT_TRUE(Active().empty());
  EXPECT_EQ(Set("p", "crash@0").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("p", "crash@x").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FailpointTest, ActiveListsWhatIsOn) {
  ASSERT_TRUE(Configure("b.x=hang;a.y=2*error(ABORTED,msg@home)").ok());
  EXPECT_EQ(Active(), (std::vector<std::string>{"a.y=2*error(ABORTED,msg@home)",
                                                "b.x=hang"}));
  EXPECT_EQ(Guarded("a.y").code(), absl::StatusCode::kOk);
  Clear("b.x");
  EXPECT_EQ(Active().size(), 1u);
}

TEST_F(FailpointTest, ClearTurnsAPointOff) {
  ASSERT_TRUE(Set("test.clear", "error(INTERNAL)").ok());
  Clear("test.clear");
  EXPECT_TRUE(Guarded("test.clear").ok());
}

TEST_F(FailpointTest, ConfigureTakesSeveralPoints) {
  ASSERT_TRUE(Configure("a.b=error(NOT_FOUND); c.d = error(INTERNAL)").ok());
  EXPECT_EQ(Guarded("a.b").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Guarded("c.d").code(), absl::StatusCode::kInternal);
}

TEST_F(FailpointTest, BadSpecsAreRejectedAndChangeNothing) {
  EXPECT_EQ(Configure("x.y=error(INTERNAL);bad=explode").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Guarded("x.y").ok()) << "a rejected spec must change nothing";
  EXPECT_EQ(Set("p", "error(NO_SUCH_CODE)").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("p", "x*crash").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("", "crash").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Set("has space", "crash").code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(FailpointTest, HangBlocksUntilReleased) {
  ASSERT_TRUE(Set("test.hang", "hang").ok());
  absl::Notification done;
  std::thread t([&] {
    EXPECT_TRUE(Guarded("test.hang").ok());
    done.Notify();
  });
  ASSERT_TRUE(WaitUntilHanging("test.hang", absl::Seconds(10)));
  EXPECT_FALSE(done.HasBeenNotified());
  Release("test.hang");
  t.join();
  EXPECT_TRUE(done.HasBeenNotified());
}

TEST_F(FailpointTest, ClearAllReleasesHangingThreads) {
  ASSERT_TRUE(Set("test.hang2", "hang").ok());
  std::thread t([&] { EXPECT_TRUE(Guarded("test.hang2").ok()); });
  ASSERT_TRUE(WaitUntilHanging("test.hang2", absl::Seconds(10)));
  ClearAll();
  t.join();
  EXPECT_TRUE(Guarded("test.hang2").ok());
}

TEST_F(FailpointTest, WaitUntilHangingTimesOutWhenNobodyHangs) {
  EXPECT_FALSE(WaitUntilHanging("test.nobody", absl::Milliseconds(10)));
}

TEST(FailpointDeathTest, CrashKillsTheProcessWithSigkill) {
  EXPECT_EXIT(
      {
        (void)Set("test.crash", "crash");
        (void)Guarded("test.crash");
      },
      ::testing::KilledBySignal(SIGKILL), "");
}

}  // namespace
}  // namespace plexus::failpoint
