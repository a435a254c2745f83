// Pure parts below the communicator: reductions, the cost model, and process
// liveness.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "collectives/algorithms/cost_model.h"
#include "collectives/algorithms/reduce_ops.h"
#include "collectives/liveness/process_liveness.h"
#include "gtest/gtest.h"

namespace plexus::collectives {
namespace {

TEST(ReduceOpsTest, EveryOpOnInt32) {
  auto run = [](ReduceOp op) {
    std::vector<int32_t> a = {1, -5, 7}, b = {3, 2, -7};
    ReduceInto(DataType::kInt32, op, a.data(), b.data(), 3);
    return a;
  };
  EXPECT_EQ(run(ReduceOp::kSum), (std::vector<int32_t>{4, -3, 0}));
  EXPECT_EQ(run(ReduceOp::kAvg), (std::vector<int32_t>{4, -3, 0}));
  EXPECT_EQ(run(ReduceOp::kProd), (std::vector<int32_t>{3, -10, -49}));
  EXPECT_EQ(run(ReduceOp::kMin), (std::vector<int32_t>{1, -5, -7}));
  EXPECT_EQ(run(ReduceOp::kMax), (std::vector<int32_t>{3, 2, 7}));
  std::vector<int32_t> c = {7, -7};
  FinishAvg(DataType::kInt32, c.data(), 2, 2);
  EXPECT_EQ(c, (std::vector<int32_t>{3, -3}));  // truncates toward zero
}

TEST(ReduceOpsTest, HalfAndBFloat16RoundTripAndReduce) {
  for (float f : {0.0f, 1.0f, -2.5f, 1024.0f, 0.333251953125f}) {
    EXPECT_EQ(HalfToFloat(FloatToHalf(f)), f);
  }
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(3.0f)), 3.0f);
  // bf16 keeps 8 significant bits: 257 rounds to even (256).
  EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(257.0f)), 256.0f);
  std::vector<uint16_t> a = {FloatToHalf(1.5f)}, b = {FloatToHalf(2.25f)};
  ReduceInto(DataType::kFloat16, ReduceOp::kSum, a.data(), b.data(), 1);
  EXPECT_EQ(HalfToFloat(a[0]), 3.75f);
  std::vector<uint16_t> c = {FloatToBFloat16(6.0f)};
  FinishAvg(DataType::kBFloat16, c.data(), 1, 3);
  EXPECT_EQ(BFloat16ToFloat(c[0]), 2.0f);
}

TEST(CostModelTest, SmallMessagesLogDepthLargeMessagesRing) {
  CostModel m;
  for (int n : {2, 4, 8, 16}) {
    EXPECT_EQ(ChooseAllReduce(m, n, 8, 256 << 10),
              Algorithm::kRecursiveDoubling)
        << n;
  }
  // Non-powers of two pay two extra doubling rounds: the tree's 2 * depth
  // hops win for small messages at n = 3, 5.
  EXPECT_EQ(ChooseAllReduce(m, 3, 8, 256 << 10), Algorithm::kTree);
  for (int n : {2, 3, 5, 8, 16}) {
    EXPECT_EQ(ChooseAllReduce(m, n, 256 << 20, 256 << 10), Algorithm::kRing)
        << n;
  }
  // Costs grow with size and are zero for one rank.
  EXPECT_EQ(AllReduceCostUs(Algorithm::kRing, m, 1, 1 << 20, 1 << 18), 0);
  EXPECT_LT(AllReduceCostUs(Algorithm::kTree, m, 8, 1 << 10, 1 << 18),
            AllReduceCostUs(Algorithm::kTree, m, 8, 1 << 20, 1 << 18));
  // A huge latency makes the log-depth algorithms win at mid sizes.
  CostModel slow = m;
  slow.alpha_us = 1e4;
  EXPECT_NE(ChooseAllReduce(slow, 16, 1 << 20, 256 << 10), Algorithm::kRing);
}

TEST(LivenessTest, SelfAliveExitedChildDeadStoppedChildAlive) {
  ProcessId self = Self();
  EXPECT_TRUE(IsAlive(self));
  auto parsed = ProcessId::Parse(self.Serialize());
  ASSERT_TRUE(parsed.has_value());
  EXPECT_EQ(parsed->pid, self.pid);
  EXPECT_EQ(parsed->start_time, self.start_time);
  EXPECT_FALSE(ProcessId::Parse("garbage").has_value());

  // A recycled pid (same pid, other start time) is not the process.
  ProcessId other = self;
  other.start_time += 1;
  EXPECT_FALSE(IsAlive(other));

  pid_t child = fork();
  if (child == 0) {
    pause();
    _exit(0);
  }
  ASSERT_GT(child, 0);
  std::optional<ProcessId> child_id = ProcessIdOf(child);
  ASSERT_TRUE(child_id.has_value());
  const ProcessId id = *child_id;
  ASSERT_TRUE(IsAlive(id));
  ASSERT_EQ(kill(child, SIGSTOP), 0);
  EXPECT_TRUE(IsAlive(id));  // stopped is alive
  ASSERT_EQ(kill(child, SIGKILL), 0);
  int status;
  // Not yet reaped: a zombie already counts as dead.
  siginfo_t info;
  ASSERT_EQ(waitid(P_PID, child, &info, WEXITED | WNOWAIT), 0);
  EXPECT_FALSE(IsAlive(id));
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_FALSE(IsAlive(id));
}

}  // namespace
}  // namespace plexus::collectives
