#include <algorithm>
#include <memory>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "collectives/rendezvous/store.h"
#include "collectives/transport/ucx/ucx_transport.h"
#include "gtest/gtest.h"

namespace plexus::collectives::ucx {
namespace {

using Progress = UcxTransportOptions::Progress;

// Creates `n` connected transports in this process (one per thread, since
// creation blocks until every address is published).
std::vector<std::unique_ptr<Transport>> Connect(int n, Progress progress) {
  auto store = NewMemoryStore();
  std::vector<std::unique_ptr<Transport>> out(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto t = NewUcxTransport(store.get(), r, n,
                               UcxTransportOptions{.progress = progress});
      ASSERT_TRUE(t.ok()) << t.status();
      out[r] = std::move(*t);
    });
  }
  for (auto& t : threads) t.join();
  return out;
}

class UcxTransportTest : public ::testing::TestWithParam<Progress> {};

TEST_P(UcxTransportTest, RingExchangeOfManySizes) {
  const int n = 3;
  auto ts = Connect(n, GetParam());
  ASSERT_EQ(ts.size(), 3u);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      Transport* t = ts[r].get();
      for (size_t bytes : {0ul, 1ul, 4096ul, 1ul << 20}) {
        std::vector<char> out(bytes, static_cast<char>('a' + r)), in(bytes);
        auto rq = t->IRecv((r + n - 1) % n, Tag{1, 7}, in.data(), bytes);
        auto sq = t->ISend((r + 1) % n, Tag{1, 7}, out.data(), bytes);
        ASSERT_TRUE(rq.ok()) << rq.status();
        ASSERT_TRUE(sq.ok()) << sq.status();
        Request* reqs[] = {rq->get(), sq->get()};
        absl::Status s = t->Wait(reqs, absl::Now() + absl::Seconds(20));
        ASSERT_TRUE(s.ok()) << s;
        EXPECT_EQ(in, std::vector<char>(bytes, 'a' + (r + n - 1) % n));
      }
    });
  }
  for (auto& t : threads) t.join();
}

TEST_P(UcxTransportTest, SizeMismatchIsInvalidArgument) {
  auto ts = Connect(2, GetParam());
  std::vector<char> big(100), small(10);
  absl::Status recv_status;
  std::thread receiver([&] {
    auto rq = ts[1]->IRecv(0, Tag{2, 0}, small.data(), small.size());
    ASSERT_TRUE(rq.ok());
    Request* reqs[] = {rq->get()};
    recv_status = ts[1]->Wait(reqs, absl::Now() + absl::Seconds(20));
  });
  auto sq = ts[0]->ISend(1, Tag{2, 0}, big.data(), big.size());
  ASSERT_TRUE(sq.ok());
  Request* reqs[] = {sq->get()};
  // The send side may or may not notice; it must not hang.
  (void)ts[0]->Wait(reqs, absl::Now() + absl::Seconds(5));
  receiver.join();
  EXPECT_EQ(recv_status.code(), absl::StatusCode::kInvalidArgument)
      << recv_status;
}

TEST_P(UcxTransportTest, DeadlineNamesThePeerAndIsSticky) {
  auto ts = Connect(2, GetParam());
  char buf[8];
  auto rq = ts[0]->IRecv(1, Tag{3, 0}, buf, sizeof(buf));
  ASSERT_TRUE(rq.ok());
  Request* reqs[] = {rq->get()};
  absl::Status s = ts[0]->Wait(reqs, absl::Now() + absl::Milliseconds(50));
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s;
  EXPECT_EQ(ts[0]->status(), s);
  EXPECT_EQ(ts[0]->ISend(1, Tag{3, 1}, buf, 1).status(), s);
}

TEST_P(UcxTransportTest, AbortWakesAWaiterPromptly) {
  auto ts = Connect(2, GetParam());
  char buf[8];
  absl::Status s;
  absl::Time start = absl::Now();
  auto rq = ts[0]->IRecv(1, Tag{4, 0}, buf, sizeof(buf));
  ASSERT_TRUE(rq.ok());
  std::thread waiter([&] {
    Request* reqs[] = {rq->get()};
    s = ts[0]->Wait(reqs, absl::InfiniteFuture());
  });
  ts[0]->Abort(absl::AbortedError("test abort"));
  waiter.join();
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
}

// Same-host ranks read each other's memory: the bytes a peer named arrive,
// however large (the kernel may copy in parts); a bad address is an error
// naming the peer, and it is sticky. Turned off, CanRead says so and Read
// refuses.
TEST_P(UcxTransportTest, SingleCopyReadsFromAPeer) {
  auto ts = Connect(2, GetParam());
  ASSERT_TRUE(ts[0]->CanRead());
  ASSERT_TRUE(ts[1]->CanRead());
  std::vector<uint32_t> theirs(3 << 20);
  std::iota(theirs.begin(), theirs.end(), 7u);
  std::vector<uint32_t> mine(theirs.size() - 1);
  const uint64_t addr = reinterpret_cast<uint64_t>(theirs.data());
  ASSERT_TRUE(ts[0]->Read(1, addr + 4, mine.data(), mine.size() * 4).ok());
  EXPECT_TRUE(std::equal(mine.begin(), mine.end(), theirs.begin() + 1));
  EXPECT_TRUE(ts[0]->Read(1, addr, mine.data(), 0).ok());
  EXPECT_EQ(ts[0]->Read(0, addr, mine.data(), 4).code(),
            absl::StatusCode::kInvalidArgument);

  absl::Status bad = ts[1]->Read(0, 8, mine.data(), 4);  // unmapped page
  EXPECT_EQ(bad.code(), absl::StatusCode::kInternal) << bad;
  EXPECT_NE(bad.message().find("rank 0"), std::string::npos) << bad;
  EXPECT_EQ(ts[1]->Read(0, addr, mine.data(), 4), bad);

  auto store = NewMemoryStore();
  std::vector<std::unique_ptr<Transport>> off(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      auto t = NewUcxTransport(
          store.get(), r, 2,
          UcxTransportOptions{.progress = GetParam(), .single_copy = false});
      ASSERT_TRUE(t.ok()) << t.status();
      off[r] = std::move(*t);
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(off[0]->CanRead());
  EXPECT_EQ(off[0]->Read(1, addr, mine.data(), 4).code(),
            absl::StatusCode::kFailedPrecondition);
}

// An intruder that learned rank 0's worker address (what a stale member of
// an older epoch, or a peer of another group, would need) sends with rank
// 1's rank and the same tag as the real rank 1. Rank 0 receives only the real
// rank 1's data; the intruder's message never matches, even when it is the
// only one left. With the intruder in the same group and epoch (the control
// case) its message does match, so the test would see a missing stamp.
enum class Intruder { kStaleEpoch, kForeignGroup, kSameGroupAndEpoch };

class GroupStampTest : public ::testing::TestWithParam<Intruder> {};

TEST_P(GroupStampTest, OnlyTheGroupsCurrentEpochIsReceived) {
  UcxTransportOptions group{.group = "trainers", .group_epoch = 2};
  UcxTransportOptions intruder_options = group;
  switch (GetParam()) {
    case Intruder::kStaleEpoch:
      intruder_options.group_epoch = 1;
      break;
    case Intruder::kForeignGroup:
      intruder_options.group = "evaluators";
      break;
    case Intruder::kSameGroupAndEpoch:
      break;
  }
  const bool same = GetParam() == Intruder::kSameGroupAndEpoch;
  ASSERT_EQ(same, GroupStamp(group.group, group.group_epoch) ==
                      GroupStamp(intruder_options.group,
                                 intruder_options.group_epoch));

  auto store = NewMemoryStore();
  std::vector<std::unique_ptr<Transport>> ts(2);
  {
    std::vector<std::thread> threads;
    for (int r = 0; r < 2; ++r) {
      threads.emplace_back([&, r] {
        auto t = NewUcxTransport(store.get(), r, 2, group);
        ASSERT_TRUE(t.ok()) << t.status();
        ts[r] = std::move(*t);
      });
    }
    for (auto& t : threads) t.join();
  }
  ASSERT_TRUE(ts[0] && ts[1]);
  // The intruder's own store holds rank 0's published address, process and
  // read probe, and a forged group entry that matches the intruder's own (an
  // honest stale peer is refused at connect:
  // PeersOfAnotherEpochAreNotConnected).
  auto intruder_store = NewMemoryStore();
  for (const char* key :
       {"ucx/addr/0", "ucx/proc/0", "ucx/cma/0", "ucx/cmaok/0"}) {
    auto v = store->Get(key, absl::Now() + absl::Seconds(5));
    ASSERT_TRUE(v.ok()) << v.status();
    ASSERT_TRUE(intruder_store->Set(key, *v).ok());
  }
  ASSERT_TRUE(
      intruder_store
          ->Set("ucx/group/0",
                absl::StrCat("epoch ", intruder_options.group_epoch,
                             " of group '", intruder_options.group, "'"))
          .ok());
  auto intruder = NewUcxTransport(intruder_store.get(), 1, 2, intruder_options);
  ASSERT_TRUE(intruder.ok()) << intruder.status();

  char stale[8] = {'S', 'T', 'A', 'L', 'E', '!', '!', '!'};
  char fresh[8] = {'F', 'R', 'E', 'S', 'H', '!', '!', '!'};
  absl::Status intruder_sent, real_sent;
  std::thread intruder_thread([&] {
    auto sq = (*intruder)->ISend(0, Tag{1, 5}, stale, sizeof(stale));
    ASSERT_TRUE(sq.ok()) << sq.status();
    Request* reqs[] = {sq->get()};
    intruder_sent = (*intruder)->Wait(reqs, absl::Now() + absl::Seconds(20));
  });
  std::thread real_thread([&] {
    auto sq = ts[1]->ISend(0, Tag{1, 5}, fresh, sizeof(fresh));
    ASSERT_TRUE(sq.ok()) << sq.status();
    Request* reqs[] = {sq->get()};
    real_sent = ts[1]->Wait(reqs, absl::Now() + absl::Seconds(20));
  });
  // Rank 0 receives twice with the same (peer, tag): the real message, then
  // whatever else matches within half a second.
  std::string got[2];
  absl::Status second;
  for (int i = 0; i < 2; ++i) {
    char buf[8] = {};
    auto rq = ts[0]->IRecv(1, Tag{1, 5}, buf, sizeof(buf));
    ASSERT_TRUE(rq.ok()) << rq.status();
    Request* reqs[] = {rq->get()};
    absl::Status st = ts[0]->Wait(
        reqs,
        absl::Now() + (i == 0 ? absl::Seconds(20) : absl::Milliseconds(500)));
    if (i == 0) {
      ASSERT_TRUE(st.ok()) << st;
      // The intruder's send has left before the second receive is posted.
      intruder_thread.join();
      ASSERT_TRUE(intruder_sent.ok()) << intruder_sent;
    } else {
      second = st;
    }
    if (st.ok()) got[i] = std::string(buf, sizeof(buf));
  }
  real_thread.join();
  EXPECT_TRUE(real_sent.ok()) << real_sent;
  if (same) {
    ASSERT_TRUE(second.ok()) << second;
    std::vector<std::string> both = {got[0], got[1]};
    std::sort(both.begin(), both.end());
    EXPECT_EQ(both, (std::vector<std::string>{"FRESH!!!", "STALE!!!"}));
  } else {
    EXPECT_EQ(got[0], "FRESH!!!");
    EXPECT_EQ(second.code(), absl::StatusCode::kDeadlineExceeded) << second;
    EXPECT_EQ(got[1], "");
  }
}

INSTANTIATE_TEST_SUITE_P(Intruders, GroupStampTest,
                         ::testing::Values(Intruder::kStaleEpoch,
                                           Intruder::kForeignGroup,
                                           Intruder::kSameGroupAndEpoch),
                         [](const auto& info) {
                           switch (info.param) {
                             case Intruder::kStaleEpoch:
                               return "StaleEpoch";
                             case Intruder::kForeignGroup:
                               return "ForeignGroup";
                             default:
                               return "SameGroupAndEpoch";
                           }
                         });

// Ranks that published different epochs of a group in one store (a stale
// member) are not connected: each side names the other's epoch.
TEST(GroupStampTest, PeersOfAnotherEpochAreNotConnected) {
  auto store = NewMemoryStore();
  absl::Status st[2];
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      UcxTransportOptions o{.connect_timeout = absl::Seconds(20),
                            .group = "trainers",
                            .group_epoch = r == 0 ? 3u : 2u};
      st[r] = NewUcxTransport(store.get(), r, 2, o).status();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(st[0].code(), absl::StatusCode::kFailedPrecondition) << st[0];
  EXPECT_TRUE(absl::StrContains(st[0].message(),
                                "rank 1 is in epoch 2 of group 'trainers'"))
      << st[0];
  EXPECT_EQ(st[1].code(), absl::StatusCode::kFailedPrecondition) << st[1];
  EXPECT_TRUE(absl::StrContains(st[1].message(), "rank 0 is in epoch 3"))
      << st[1];
}

TEST(GroupStampTest, EpochsLessThanSixteenApartDiffer) {
  for (uint64_t e = 0; e < 64; ++e) {
    for (uint64_t d = 1; d < 16; ++d) {
      EXPECT_NE(GroupStamp("g", e), GroupStamp("g", e + d)) << e << "+" << d;
    }
  }
}

TEST(UcxTransportFactoryTest, RejectsBadRank) {
  auto store = NewMemoryStore();
  EXPECT_EQ(NewUcxTransport(store.get(), 2, 2, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Modes, UcxTransportTest,
                         ::testing::Values(Progress::kBusyPoll,
                                           Progress::kBlocking),
                         [](const auto& info) {
                           return info.param == Progress::kBusyPoll
                                      ? "Busy"
                                      : "Blocking";
                         });

}  // namespace
}  // namespace plexus::collectives::ucx
