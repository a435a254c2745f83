// Many ranks in one process (one thread each) over the in-memory store and the
// UCX transport in blocking progress mode (threads outnumber the cores).
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "collectives/rendezvous/store.h"
#include "gtest/gtest.h"
#include "plexus/collectives/communicator.h"
#include "tests/collectives/coll_check.h"
#include "tests/collectives/coll_matrix.h"

namespace plexus::collectives {
namespace {

CommunicatorOptions BlockingOptions() {
  CommunicatorOptions o;
  o.progress = ProgressMode::kBlocking;
  o.default_timeout = absl::Seconds(60);
  return o;
}

// Creates an n-rank group and runs fn(rank, comm) on one thread per rank.
void RunGroup(int n, const CommunicatorOptions& options,
              const std::function<void(int, Communicator*)>& fn) {
  auto store = NewMemoryStore();
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      auto comm = Communicator::Create(store.get(), r, n, options);
      ASSERT_TRUE(comm.ok()) << comm.status();
      fn(r, comm->get());
    });
  }
  for (auto& t : threads) t.join();
}

// Every operation, type, reduction and count on a group of n with options o,
// against the host reference.
void ExpectMatrixCorrect(int n, const CommunicatorOptions& o) {
  RunGroup(n, o, [&](int r, Communicator* comm) {
    auto res = testing::RunMatrix(comm, {0, 1, 7, 1000, 4099});
    EXPECT_TRUE(res.error.ok()) << "rank " << r << ": " << res.error;
    EXPECT_GT(res.checks, 100);
    for (const auto& f : res.failures)
      ADD_FAILURE() << "rank " << r << ": " << f;
  });
}

class MatrixTest : public ::testing::TestWithParam<int> {};

TEST_P(MatrixTest, EveryOpDtypeReductionAndCount) {
  ExpectMatrixCorrect(GetParam(), BlockingOptions());
}

INSTANTIATE_TEST_SUITE_P(GroupSizes, MatrixTest,
                         ::testing::Values(1, 2, 3, 5, 8));

// Every operation, type, reduction and count again with the ring moving data
// by single-copy reads (from one byte up) in small pieces.
class SingleCopyMatrixTest : public ::testing::TestWithParam<int> {};

TEST_P(SingleCopyMatrixTest, EveryOpDtypeReductionAndCount) {
  CommunicatorOptions o = BlockingOptions();
  o.single_copy_bytes = 1;
  o.pipeline_bytes = 256;
  ExpectMatrixCorrect(GetParam(), o);
}

INSTANTIATE_TEST_SUITE_P(GroupSizes, SingleCopyMatrixTest,
                         ::testing::Values(2, 3, 5, 8));

// Reads change how the ring's data moves, never the order of its additions:
// the ring's fp32 sums (order-sensitive values, in place and out of place)
// are the same bits with reads as with messages, on every rank.
TEST(CommunicatorTest, SingleCopyReadsGiveTheSameBitsAsMessages) {
  for (int n : {2, 3, 5}) {
    const size_t count = 100003;
    auto input = [](int r) {
      std::mt19937 gen(99 + r);
      std::uniform_real_distribution<float> mant(-1, 1);
      std::uniform_int_distribution<int> exp(-20, 20);
      std::vector<float> v(count);
      for (auto& x : v) x = std::ldexp(mant(gen), exp(gen));
      return v;
    };
    // results[reads][rank][in place]
    std::vector<std::vector<float>> results[2][5];
    for (int reads = 0; reads < 2; ++reads) {
      CommunicatorOptions o = BlockingOptions();
      o.single_copy_bytes = reads ? 1 : 0;
      o.pipeline_bytes = 16 << 10;
      RunGroup(n, o, [&](int r, Communicator* comm) {
        auto v = input(r);
        std::vector<float> out(count);
        ASSERT_TRUE(comm->AllReduce(v.data(), out.data(), count,
                                    DataType::kFloat32, ReduceOp::kSum,
                                    {.algorithm = Algorithm::kRing})
                        .ok());
        ASSERT_TRUE(comm->AllReduce(v.data(), v.data(), count,
                                    DataType::kFloat32, ReduceOp::kSum,
                                    {.algorithm = Algorithm::kRing})
                        .ok());
        results[reads][r] = {out, v};
      });
    }
    for (int r = 0; r < n; ++r) {
      for (int reads = 0; reads < 2; ++reads) {
        for (int in_place = 0; in_place < 2; ++in_place) {
          EXPECT_EQ(std::memcmp(results[reads][r][in_place].data(),
                                results[0][0][0].data(), count * 4),
                    0)
              << "n=" << n << " rank " << r << " reads=" << reads
              << " in_place=" << in_place;
        }
      }
    }
  }
}

// Small pipeline pieces force many sub-chunks per step.
TEST(CommunicatorTest, PipelinedPiecesGiveTheSameResults) {
  CommunicatorOptions o = BlockingOptions();
  o.pipeline_bytes = 64;
  RunGroup(3, o, [&](int r, Communicator* comm) {
    for (Algorithm a : {Algorithm::kRing, Algorithm::kTree}) {
      const size_t count = 1001;
      auto in =
          testing::MakeInput(DataType::kFloat32, ReduceOp::kSum, r, count, 5);
      ASSERT_TRUE(comm->AllReduce(in.data(), in.data(), count,
                                  DataType::kFloat32, ReduceOp::kSum,
                                  {.algorithm = a})
                      .ok());
      EXPECT_EQ(testing::CheckReduced(DataType::kFloat32, ReduceOp::kSum, 3,
                                      in.data(), count, 5),
                "");
    }
  });
}

// fp32 sums of values spanning many magnitudes: the result depends on the
// order of additions. Deterministic mode must give the same bits every time,
// on every rank, and in a second communicator.
TEST(CommunicatorTest, DeterministicModeIsBitwiseReproducible) {
  const int n = 5;
  const size_t count = 10007;
  auto input = [](int r) {
    std::mt19937 gen(1234 + r);
    std::uniform_real_distribution<float> mant(-1, 1);
    std::uniform_int_distribution<int> exp(-20, 20);
    std::vector<float> v(count);
    for (auto& x : v) x = std::ldexp(mant(gen), exp(gen));
    return v;
  };
  CommunicatorOptions o = BlockingOptions();
  o.deterministic = true;
  o.pipeline_bytes = 4096;
  for (Algorithm a :
       {Algorithm::kRing, Algorithm::kTree, Algorithm::kRecursiveDoubling}) {
    std::vector<std::vector<float>> results(2 * n);
    for (int round = 0; round < 2; ++round) {
      RunGroup(n, o, [&](int r, Communicator* comm) {
        for (int rep = 0; rep < 2; ++rep) {
          auto v = input(r);
          absl::Status s =
              comm->AllReduce(v.data(), v.data(), count, DataType::kFloat32,
                              ReduceOp::kSum, {.algorithm = a});
          ASSERT_TRUE(s.ok()) << s;
          if (rep == 0) {
            results[round * n + r] = v;
          } else {
            EXPECT_EQ(
                std::memcmp(v.data(), results[round * n + r].data(), count * 4),
                0);
          }
        }
      });
    }
    for (int i = 1; i < 2 * n; ++i) {
      EXPECT_EQ(std::memcmp(results[0].data(), results[i].data(), count * 4), 0)
          << AlgorithmName(a) << " result " << i << " differs";
    }
    // And the order does matter for these values: a plain left-to-right sum
    // differs from a reversed one somewhere.
    std::vector<float> fwd(count, 0), bwd(count, 0);
    for (int r = 0; r < n; ++r) {
      auto v = input(r), w = input(n - 1 - r);
      for (size_t i = 0; i < count; ++i) {
        fwd[i] += v[i];
        bwd[i] += w[i];
      }
    }
    EXPECT_NE(std::memcmp(fwd.data(), bwd.data(), count * 4), 0);
  }
}

TEST(CommunicatorTest, DeadlineNamesTheMissingRankThenErrorsAreSticky) {
  auto store = NewMemoryStore();
  std::unique_ptr<Communicator> c0, c1;
  std::thread t([&] {
    auto c = Communicator::Create(store.get(), 1, 2, BlockingOptions());
    ASSERT_TRUE(c.ok());
    c1 = std::move(*c);
  });
  auto c = Communicator::Create(store.get(), 0, 2, BlockingOptions());
  ASSERT_TRUE(c.ok());
  c0 = std::move(*c);
  t.join();
  // Rank 1 never joins the all-reduce.
  float x = 1;
  absl::Status s =
      c0->AllReduce(&x, &x, 1, DataType::kFloat32, ReduceOp::kSum,
                    {.deadline = absl::Now() + absl::Milliseconds(200)});
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find("rank 1"), std::string::npos) << s;
  absl::Status next = c0->Barrier();
  EXPECT_EQ(next.code(), absl::StatusCode::kFailedPrecondition) << next;
  EXPECT_NE(next.message().find("rank 1"), std::string::npos) << next;
  EXPECT_EQ(c0->status().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(CommunicatorTest, AbortFailsTheOperationInFlightPromptly) {
  for (ProgressMode mode : {ProgressMode::kBusyPoll, ProgressMode::kBlocking}) {
    auto store = NewMemoryStore();
    std::unique_ptr<Communicator> c0, c1;
    CommunicatorOptions o;
    o.progress = mode;
    std::thread t([&] {
      auto c = Communicator::Create(store.get(), 1, 2, o);
      ASSERT_TRUE(c.ok());
      c1 = std::move(*c);
    });
    auto c = Communicator::Create(store.get(), 0, 2, o);
    ASSERT_TRUE(c.ok());
    c0 = std::move(*c);
    t.join();
    std::vector<float> v(1000);
    auto work = c0->AllReduceAsync(v.data(), v.data(), v.size(),
                                   DataType::kFloat32, ReduceOp::kSum,
                                   {.deadline = absl::InfiniteFuture()});
    const absl::Time start = absl::Now();
    c0->Abort();
    EXPECT_LT(absl::Now() - start, absl::Seconds(1));
    absl::Status s = work->Wait(start + absl::Seconds(1));
    EXPECT_TRUE(s.code() == absl::StatusCode::kAborted ||
                s.code() == absl::StatusCode::kFailedPrecondition)
        << s;
    EXPECT_EQ(c0->Barrier().code(), absl::StatusCode::kFailedPrecondition);
  }
}

TEST(CommunicatorTest, InvalidArgumentsDoNotBreakTheCommunicator) {
  RunGroup(2, BlockingOptions(), [&](int r, Communicator* comm) {
    EXPECT_EQ(
        comm->AllReduce(nullptr, nullptr, 4, DataType::kInt32, ReduceOp::kSum)
            .code(),
        absl::StatusCode::kInvalidArgument);
    int32_t x = 1;
    EXPECT_EQ(comm->Broadcast(&x, 1, DataType::kInt32, 7).code(),
              absl::StatusCode::kInvalidArgument);
    ASSERT_TRUE(
        comm->AllReduce(&x, &x, 1, DataType::kInt32, ReduceOp::kSum).ok());
    EXPECT_EQ(x, 2);
  });
}

TEST(CommunicatorTest, AlgorithmSelectionAndForcing) {
  RunGroup(2, BlockingOptions(), [&](int r, Communicator* comm) {
    EXPECT_EQ(comm->SelectAllReduce(8), Algorithm::kRecursiveDoubling);
    EXPECT_EQ(comm->SelectAllReduce(64 << 20), Algorithm::kRing);
    std::vector<float> big(1 << 16), small(2);
    auto w1 = comm->AllReduceAsync(small.data(), small.data(), 2,
                                   DataType::kFloat32, ReduceOp::kSum);
    auto w2 = comm->AllReduceAsync(big.data(), big.data(), big.size(),
                                   DataType::kFloat32, ReduceOp::kSum,
                                   {.algorithm = Algorithm::kTree});
    EXPECT_TRUE(w1->Wait().ok());
    EXPECT_TRUE(w2->Wait().ok());
    EXPECT_EQ(w1->algorithm(), Algorithm::kRecursiveDoubling);
    EXPECT_EQ(w2->algorithm(), Algorithm::kTree);
    EXPECT_TRUE(w2->Done());
  });
  setenv("PLEXUS_COLL_ALGO", "tree", 1);
  RunGroup(2, BlockingOptions(), [&](int r, Communicator* comm) {
    float x = 1;
    auto w =
        comm->AllReduceAsync(&x, &x, 1, DataType::kFloat32, ReduceOp::kSum);
    EXPECT_TRUE(w->Wait().ok());
    EXPECT_EQ(w->algorithm(), Algorithm::kTree);
  });
  setenv("PLEXUS_COLL_ALGO", "bogus", 1);
  auto store = NewMemoryStore();
  EXPECT_EQ(Communicator::Create(store.get(), 0, 1, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  unsetenv("PLEXUS_COLL_ALGO");
}

TEST(CommunicatorTest, CalibrationAgreesAcrossRanks) {
  CommunicatorOptions o = BlockingOptions();
  o.calibrate = true;
  std::vector<CostModel> models(3);
  RunGroup(3, o,
           [&](int r, Communicator* comm) { models[r] = comm->cost_model(); });
  for (int r = 1; r < 3; ++r) {
    EXPECT_EQ(models[r].alpha_us, models[0].alpha_us);
    EXPECT_EQ(models[r].beta_us_per_byte, models[0].beta_us_per_byte);
  }
  EXPECT_GT(models[0].alpha_us, 0);
}

}  // namespace
}  // namespace plexus::collectives
