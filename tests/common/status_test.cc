#include "common/status.h"

#include <gtest/gtest.h>

#include <memory>

namespace plexus {
namespace {

absl::Status Fails(absl::StatusCode code) { return absl::Status(code, "boom"); }

absl::Status ReturnsIfError(absl::Status in, bool* reached_end) {
  PLEXUS_RETURN_IF_ERROR(in);
  *reached_end = true;
  return absl::OkStatus();
}

absl::Status ReturnsWithContext(absl::Status in) {
  PLEXUS_RETURN_IF_ERROR(in, "loading table t");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<int>> MakeInt(absl::Status st, int v) {
  if (!st.ok()) return st;
  return std::make_unique<int>(v);
}

absl::StatusOr<int> AssignsOrReturns(absl::Status st) {
  PLEXUS_ASSIGN_OR_RETURN(std::unique_ptr<int> p, MakeInt(st, 41));
  PLEXUS_ASSIGN_OR_RETURN(auto q, MakeInt(absl::OkStatus(), 1), "second");
  return *p + *q;
}

absl::StatusOr<int> AssignsWithContext(absl::Status st) {
  PLEXUS_ASSIGN_OR_RETURN(auto p, MakeInt(st, 1), "opening shard 2");
  return *p;
}

TEST(StatusMacros, ReturnIfErrorPassesOkThrough) {
  bool end = false;
  EXPECT_TRUE(ReturnsIfError(absl::OkStatus(), &end).ok());
  EXPECT_TRUE(end);
}

TEST(StatusMacros, ReturnIfErrorReturnsTheErrorUnchanged) {
  bool end = false;
  absl::Status st = ReturnsIfError(Fails(absl::StatusCode::kUnavailable), &end);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(st.message(), "boom");
  EXPECT_FALSE(end);
}

TEST(StatusMacros, ReturnIfErrorAddsContextAndKeepsTheCode) {
  absl::Status st = ReturnsWithContext(Fails(absl::StatusCode::kDataLoss));
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(st.message(), "loading table t: boom");
}

TEST(StatusMacros, AssignOrReturnMovesTheValue) {
  auto v = AssignsOrReturns(absl::OkStatus());
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(*v, 42);
}

TEST(StatusMacros, AssignOrReturnReturnsTheError) {
  auto v = AssignsOrReturns(Fails(absl::StatusCode::kNotFound));
  EXPECT_EQ(v.status().code(), absl::StatusCode::kNotFound);
  auto w = AssignsWithContext(Fails(absl::StatusCode::kAborted));
  EXPECT_EQ(w.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(w.status().message(), "opening shard 2: boom");
}

TEST(Annotate, LeavesOkAndEmptyContextAlone) {
  EXPECT_TRUE(Annotate(absl::OkStatus(), "ctx").ok());
  absl::Status st = Fails(absl::StatusCode::kInternal);
  EXPECT_EQ(Annotate(st, ""), st);
}

TEST(Annotate, KeepsPayloads) {
  absl::Status st = Fails(absl::StatusCode::kInternal);
  st.SetPayload("type.plexus/rank", absl::Cord("3"));
  absl::Status a = Annotate(st, "ctx");
  ASSERT_TRUE(a.GetPayload("type.plexus/rank").has_value());
  EXPECT_EQ(std::string(*a.GetPayload("type.plexus/rank")), "3");
}

}  // namespace
}  // namespace plexus
