// The pure planning of device buffers (collectives/patterns/device_plan.h):
// runs everywhere, GPU or not, over group sizes 1, 2, 3, 5, 8, 11, 16 and
// every number of nodes.
#include "collectives/patterns/device_plan.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace plexus::collectives::patterns {
namespace {

using Members = std::vector<std::optional<MemberInfo>>;

// `size` members spread round-robin over `nodes` nodes, each with its own
// GPU in its node (bus ids repeat across nodes, as on identical machines).
Members Spread(int size, int nodes) {
  Members m(size);
  for (int r = 0; r < size; ++r) {
    m[r] = MemberInfo{absl::StrCat("0000:", r / nodes, ":00.0"),
                      absl::StrCat("host ", r % nodes)};
  }
  return m;
}

TEST(DevicePlanTest, MemberInfoRoundTripsAndRejectsMalformedValues) {
  for (MemberInfo in :
       {MemberInfo{"0000:1b:00.0", "node a"}, MemberInfo{"", "n"}}) {
    std::optional<MemberInfo> out = ParseMemberInfo(FormatMemberInfo(in));
    ASSERT_TRUE(out.has_value());
    EXPECT_EQ(out->gpu, in.gpu);
    EXPECT_EQ(out->node, in.node);
  }
  for (const char* bad : {"", "gpu", " node", "gpu "}) {
    EXPECT_FALSE(ParseMemberInfo(bad).has_value()) << "'" << bad << "'";
  }
}

TEST(DevicePlanTest, LayoutOverSizesAndNodes) {
  for (int size : {1, 2, 3, 5, 8, 11, 16}) {
    for (int nodes = 1; nodes <= size; ++nodes) {
      Members m = Spread(size, nodes);
      for (int rank = 0; rank < size; ++rank) {
        SCOPED_TRACE(
            absl::StrCat("size ", size, " nodes ", nodes, " rank ", rank));
        auto plan = PlanDevices(m, rank, Backend::kAuto);
        ASSERT_TRUE(plan.ok()) << plan.status();
        EXPECT_EQ(plan->kind, nodes > 1 ? DevicePlan::Kind::kHierarchical
                                        : DevicePlan::Kind::kFlat);
        EXPECT_EQ(plan->num_nodes, nodes);
        EXPECT_EQ(plan->node, rank % nodes);
        EXPECT_EQ(plan->local_rank, rank / nodes);
        EXPECT_EQ(plan->local_size, (size - rank % nodes + nodes - 1) / nodes);
        auto flat = PlanDevices(m, rank, Backend::kNccl);
        ASSERT_TRUE(flat.ok()) << flat.status();
        EXPECT_EQ(flat->kind, DevicePlan::Kind::kFlat);
        auto hier = PlanDevices(m, rank, Backend::kHierarchical);
        ASSERT_TRUE(hier.ok()) << hier.status();
        EXPECT_EQ(hier->kind, DevicePlan::Kind::kHierarchical);
        auto ucx = PlanDevices(m, rank, Backend::kUcx);
        ASSERT_TRUE(ucx.ok()) << ucx.status();
        EXPECT_EQ(ucx->kind, DevicePlan::Kind::kNone);
      }
    }
  }
}

TEST(DevicePlanTest, AMemberWithoutAGpuMeansNoNccl) {
  for (int size : {1, 2, 3, 5, 8}) {
    for (int missing = 0; missing < size; ++missing) {
      for (bool published : {false, true}) {
        Members m = Spread(size, 1);
        if (published) {
          m[missing]->gpu.clear();
        } else {
          m[missing].reset();
        }
        auto plan = PlanDevices(m, 0, Backend::kAuto);
        ASSERT_TRUE(plan.ok()) << plan.status();
        EXPECT_EQ(plan->kind, DevicePlan::Kind::kNone);
        EXPECT_NE(plan->why_none.find(absl::StrCat("without one: ", missing)),
                  std::string::npos)
            << plan->why_none;
        for (Backend forced : {Backend::kNccl, Backend::kHierarchical}) {
          EXPECT_EQ(PlanDevices(m, 0, forced).status().code(),
                    absl::StatusCode::kFailedPrecondition);
        }
      }
    }
  }
}

TEST(DevicePlanTest, RanksSharingAGpuInANodeMeanNoNccl) {
  Members m = {MemberInfo{"0000:1b:00.0", "a"},
               MemberInfo{"0000:1b:00.0", "b"},   // same bus, other node: fine
               MemberInfo{"0000:1b:00.0", "a"}};  // shares rank 0's GPU
  auto plan = PlanDevices(m, 1, Backend::kAuto);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->kind, DevicePlan::Kind::kNone);
  EXPECT_NE(plan->why_none.find("ranks 0 and 2 share GPU"), std::string::npos)
      << plan->why_none;
  absl::Status forced = PlanDevices(m, 1, Backend::kNccl).status();
  EXPECT_EQ(forced.code(), absl::StatusCode::kFailedPrecondition) << forced;
  m.pop_back();
  auto two = PlanDevices(m, 1, Backend::kAuto);
  ASSERT_TRUE(two.ok()) << two.status();
  EXPECT_EQ(two->kind, DevicePlan::Kind::kHierarchical);
}

TEST(DevicePlanTest, ARankOutOfRangeIsTheCallersMistake) {
  Members m = Spread(2, 1);
  EXPECT_EQ(PlanDevices(m, 2, Backend::kAuto).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanDevices(m, -1, Backend::kAuto).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanDevices({}, 0, Backend::kAuto).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace plexus::collectives::patterns
