#include "coordinator/rendezvous/rendezvous.h"

#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/clock.h"
#include "coordinator/membership/names.h"

namespace plexus::coordinator::rendezvous {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr absl::Duration kGuard = absl::Seconds(30);

class RendezvousTest : public ::testing::Test {
 protected:
  RendezvousTest() : rdv_({}, &clock_) {}

  JoinGroupRequest Req(uint64_t worker, uint32_t size = 3,
                       uint64_t incarnation = 1) {
    return {.group = "g",
            .size = size,
            .worker_id = worker,
            .incarnation = incarnation,
            .hostname = "h"};
  }

  // Joins `workers` concurrently; returns each one's result, in order.
  std::vector<absl::StatusOr<GroupInfo>> JoinAll(
      const std::vector<JoinGroupRequest>& reqs) {
    std::vector<absl::StatusOr<GroupInfo>> out(reqs.size(),
                                               absl::UnknownError("unset"));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < reqs.size(); ++i) {
      threads.emplace_back(
          [&, i] { out[i] = rdv_.JoinGroup(reqs[i], clock_.Now() + kGuard); });
    }
    for (std::thread& t : threads) t.join();
    return out;
  }

  FakeClock clock_;
  Rendezvous rdv_;
};

TEST_F(RendezvousTest, SetGetAndLastWriterWins) {
  EXPECT_EQ(rdv_.Get("boot", 0, "k").status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(rdv_.Set("boot", 0, "k", "v1").ok());
  ASSERT_TRUE(rdv_.Set("boot", 0, "k", "v2").ok());
  EXPECT_EQ(*rdv_.Get("boot", 0, "k"), "v2");
  // Namespaces are separate.
  EXPECT_EQ(rdv_.Get("boot", 1, "k").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(rdv_.Get("other", 0, "k").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RendezvousTest, ValidatesNamesAndSizes) {
  EXPECT_EQ(rdv_.Set("", 0, "k", "").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rdv_.Set("g", 0, "a b", "").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rdv_.Set("g", 0, "k", std::string((1 << 20) + 1, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(rdv_.Set("g", 0, "k", std::string(1 << 20, 'x')).ok());
  EXPECT_EQ(rdv_.Wait("g", 0, {}, clock_.Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rdv_.JoinGroup(Req(1, 0), clock_.Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rdv_.JoinGroup(Req(0), clock_.Now()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(rdv_.GetGroup("nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(rdv_.BumpEpoch("nope", 1, -1, "").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(RendezvousTest, KeyLimitPerNamespace) {
  Rendezvous small({.max_keys_per_namespace = 2}, &clock_);
  ASSERT_TRUE(small.Set("g", 0, "a", "").ok());
  ASSERT_TRUE(small.Set("g", 0, "b", "").ok());
  ASSERT_TRUE(small.Set("g", 0, "b", "again").ok());
  EXPECT_EQ(small.Set("g", 0, "c", "").code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(RendezvousTest, WaitReturnsValuesInRequestOrderOnceAllExist) {
  absl::StatusOr<std::vector<std::string>> got;
  std::thread waiter([&] {
    got = rdv_.Wait("boot", 0, {"rank1", "rank0"}, clock_.Now() + kGuard);
  });
  ASSERT_TRUE(rdv_.Set("boot", 0, "rank0", "addr0").ok());
  ASSERT_TRUE(rdv_.Set("boot", 0, "rank1", "addr1").ok());
  waiter.join();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_THAT(*got, ElementsAre("addr1", "addr0"));
}

TEST_F(RendezvousTest, WaitTimesOutOnTheInjectedClockNamingMissingKeys) {
  ASSERT_TRUE(rdv_.Set("boot", 0, "a", "1").ok());
  absl::StatusOr<std::vector<std::string>> got;
  absl::Time deadline = clock_.Now() + absl::Seconds(5);
  std::thread waiter([&] { got = rdv_.Wait("boot", 0, {"a", "b"}, deadline); });
  clock_.Advance(absl::Seconds(5));
  rdv_.Tick();
  waiter.join();
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("missing 1 of 2"));
  EXPECT_THAT(std::string(got.status().message()), HasSubstr(": b"));
}

TEST_F(RendezvousTest, GroupFormsWithRanksAndWaitsForEveryone) {
  std::vector<absl::StatusOr<GroupInfo>> r =
      JoinAll({Req(10), Req(20), Req(30)});
  std::set<int> ranks;
  for (const auto& info : r) {
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->epoch, 1u);
    EXPECT_EQ(info->size, 3u);
    EXPECT_TRUE(info->complete);
    ASSERT_EQ(info->members.size(), 3u);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(info->members[i].rank, i);
    ranks.insert(info->my_rank);
  }
  EXPECT_EQ(ranks, (std::set<int>{0, 1, 2}));
  absl::StatusOr<GroupInfo> g = rdv_.GetGroup("g", 20);
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->my_rank, r[1]->my_rank);
  EXPECT_EQ(rdv_.GetGroup("g", 99)->my_rank, -1);
  // Joining again in the same epoch is idempotent.
  absl::StatusOr<GroupInfo> again = rdv_.JoinGroup(Req(20), clock_.Now());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->my_rank, r[1]->my_rank);
}

TEST_F(RendezvousTest, JoinTimesOutWhileForming) {
  absl::StatusOr<GroupInfo> r = rdv_.JoinGroup(Req(10), clock_.Now());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("1 of 3"));
  absl::StatusOr<GroupInfo> g = rdv_.GetGroup("g", 10);
  EXPECT_FALSE(g->complete);
  EXPECT_EQ(g->my_rank, 0);
  EXPECT_EQ(rdv_.JoinGroup(Req(20, 4), clock_.Now()).status().code(),
            absl::StatusCode::kInvalidArgument);  // size mismatch
}

TEST_F(RendezvousTest, FullGroupRefusesAnExtraMember) {
  for (uint64_t w : {10, 20, 30}) (void)rdv_.JoinGroup(Req(w), clock_.Now());
  EXPECT_EQ(rdv_.JoinGroup(Req(40), clock_.Now()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(RendezvousTest,
       MemberDeathBumpsEpochTellsSurvivorsAndReplacementTakesFreeRank) {
  std::vector<absl::StatusOr<GroupInfo>> r =
      JoinAll({Req(10), Req(20), Req(30)});
  int rank_of_20 = r[1]->my_rank;
  ASSERT_TRUE(rdv_.Set("g", 1, "nccl-id", "abc").ok());
  // A collective waiting on epoch 1 fails as soon as the epoch moves.
  absl::StatusOr<std::vector<std::string>> stuck;
  std::thread waiter(
      [&] { stuck = rdv_.Wait("g", 1, {"never"}, clock_.Now() + kGuard); });
  std::vector<ReformNotice> notices = rdv_.MemberDied(20, 1);
  waiter.join();
  EXPECT_EQ(stuck.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetReason(stuck.status()), ErrorReason::kStaleGroupEpoch);
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].group, "g");
  EXPECT_EQ(notices[0].new_epoch, 2u);
  EXPECT_THAT(notices[0].failed_ranks, ElementsAre(rank_of_20));
  EXPECT_THAT(notices[0].survivors, UnorderedElementsAre(10, 30));
  // The old epoch's namespace is gone and refused.
  EXPECT_EQ(rdv_.Get("g", 1, "nccl-id").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(rdv_.GetGroup("g")->epoch, 2u);
  EXPECT_TRUE(rdv_.GetGroup("g")->members.empty());
  // Survivors keep their ranks; the replacement takes the freed one.
  std::vector<absl::StatusOr<GroupInfo>> r2 =
      JoinAll({Req(10), Req(30), Req(40)});
  for (const auto& info : r2) {
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->epoch, 2u);
  }
  EXPECT_EQ(r2[0]->my_rank, r[0]->my_rank);
  EXPECT_EQ(r2[1]->my_rank, r[2]->my_rank);
  EXPECT_EQ(r2[2]->my_rank, rank_of_20);
  EXPECT_TRUE(rdv_.Set("g", 2, "nccl-id", "def").ok());
  // Unrelated death: nothing happens.
  EXPECT_TRUE(rdv_.MemberDied(99, 1).empty());
}

TEST_F(RendezvousTest, JoinerOfAnOldEpochIsToldToJoinAgain) {
  absl::StatusOr<GroupInfo> first;
  std::thread joiner(
      [&] { first = rdv_.JoinGroup(Req(10), clock_.Now() + kGuard); });
  // Wait until the joiner is in, then fail the epoch under it.
  while (true) {
    absl::StatusOr<GroupInfo> g = rdv_.GetGroup("g");
    if (g.ok() && g->members.size() == 1) break;
    std::this_thread::yield();
  }
  ASSERT_TRUE(rdv_.BumpEpoch("g", 1, -1, "collective failed").ok());
  joiner.join();
  EXPECT_EQ(first.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetReason(first.status()), ErrorReason::kStaleGroupEpoch);
}

TEST_F(RendezvousTest, BumpIsIdempotentPerExpectedEpoch) {
  // Concurrent joiners get ranks in either order; read them back.
  std::vector<absl::StatusOr<GroupInfo>> first =
      JoinAll({Req(10, 2), Req(20, 2)});
  ASSERT_TRUE(first[0].ok() && first[1].ok());
  int rank_of_10 = first[0]->my_rank;
  int rank_of_20 = first[1]->my_rank;
  absl::StatusOr<BumpResult> a =
      rdv_.BumpEpoch("g", 1, rank_of_20, "rank died");
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(a->notice.has_value());
  EXPECT_EQ(a->group.epoch, 2u);
  EXPECT_THAT(a->notice->failed_ranks, ElementsAre(rank_of_20));
  EXPECT_THAT(a->notice->survivors, ElementsAre(10));
  absl::StatusOr<BumpResult> b =
      rdv_.BumpEpoch("g", 1, rank_of_20, "rank died");
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->notice.has_value());
  EXPECT_EQ(b->group.epoch, 2u);
  EXPECT_EQ(rdv_.BumpEpoch("g", 5, -1, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  // The member reported failed comes back (same worker): it gets its rank.
  std::vector<absl::StatusOr<GroupInfo>> r = JoinAll({Req(20, 2), Req(10, 2)});
  ASSERT_TRUE(r[0].ok() && r[1].ok());
  EXPECT_EQ(r[0]->my_rank, rank_of_20);
  EXPECT_EQ(r[1]->my_rank, rank_of_10);
}

TEST_F(RendezvousTest, GroupShrinksWhenTheFirstJoinerOfAnEpochSaysSo) {
  (void)JoinAll({Req(10), Req(20), Req(30)});
  std::vector<ReformNotice> n = rdv_.MemberDied(10, 1);  // rank 0 freed
  ASSERT_EQ(n.size(), 1u);
  std::vector<absl::StatusOr<GroupInfo>> r = JoinAll({Req(20, 2), Req(30, 2)});
  ASSERT_TRUE(r[0].ok() && r[1].ok());
  EXPECT_EQ(r[0]->size, 2u);
  std::set<int> ranks{r[0]->my_rank, r[1]->my_rank};
  EXPECT_EQ(ranks, (std::set<int>{0, 1}));
}

TEST_F(RendezvousTest, StaleIncarnationCannotTakeBackARank) {
  (void)rdv_.JoinGroup(Req(10, 3, /*incarnation=*/5), clock_.Now());
  absl::StatusOr<GroupInfo> old =
      rdv_.JoinGroup(Req(10, 3, /*incarnation=*/4), clock_.Now());
  EXPECT_EQ(old.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(GetReason(old.status()), ErrorReason::kStaleIncarnation);
  // A dead incarnation older than the holder's does not free the rank.
  EXPECT_EQ(rdv_.MemberDied(10, 4).size(), 0u);
  EXPECT_EQ(rdv_.MemberDied(10, 5).size(), 1u);
}

TEST_F(RendezvousTest, NamespacesOfUnformedGroupsAcceptAnyEpoch) {
  EXPECT_TRUE(rdv_.Set("free", 7, "k", "v").ok());
  EXPECT_EQ(*rdv_.Get("free", 7, "k"), "v");
  (void)JoinAll({Req(10, 1)});
  EXPECT_EQ(rdv_.Set("g", 2, "k", "v").code(),
            absl::StatusCode::kFailedPrecondition);  // not reached
  EXPECT_TRUE(rdv_.Set("g", 0, "k", "v").ok());      // outside any epoch
}

}  // namespace
}  // namespace plexus::coordinator::rendezvous
