#include "coordinator/membership/names.h"

#include <string>

#include <gtest/gtest.h>

namespace plexus::coordinator {
namespace {

TEST(NamesTest, AcceptsNamesOfTheAllowedAlphabet) {
  EXPECT_TRUE(ValidateName("job-1", "job id").ok());
  EXPECT_TRUE(ValidateName("allreduce/group_0:v1.2", "group").ok());
  EXPECT_TRUE(ValidateName(std::string(kMaxNameBytes, 'a'), "key").ok());
}

TEST(NamesTest, RejectsBadNames) {
  for (const std::string& bad :
       {std::string(), std::string(kMaxNameBytes + 1, 'a'), std::string("a b"),
        std::string("a\nb"), std::string(".."), std::string("a/../b"),
        std::string("./a"), std::string("caf\xc3\xa9")}) {
    absl::Status s = ValidateName(bad, "job id");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("job id"), absl::string_view::npos);
  }
}

TEST(NamesTest, ReasonsTravelInTheStatus) {
  absl::Status s = WithReason(absl::FailedPreconditionError("stale"),
                              ErrorReason::kStaleGroupEpoch);
  EXPECT_EQ(GetReason(s), ErrorReason::kStaleGroupEpoch);
  EXPECT_EQ(GetReason(absl::FailedPreconditionError("x")), std::nullopt);
  EXPECT_TRUE(WithReason(absl::OkStatus(), ErrorReason::kPeerDead).ok());
}

}  // namespace
}  // namespace plexus::coordinator
