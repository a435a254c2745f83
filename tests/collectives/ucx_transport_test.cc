#include <memory>
#include <numeric>
#include <thread>
#include <vector>

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
