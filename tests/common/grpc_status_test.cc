#include "common/grpc_status.h"

#include "common/error_info.h"

#include <gtest/gtest.h>

namespace plexus {
namespace {

TEST(GrpcStatus, OkMapsToOk) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
}

TEST(GrpcStatus, EveryCodeRoundTripsWithItsMessage) {
  for (int c = 1; c <= 16; ++c) {
    auto code = static_cast<absl::StatusCode>(c);
    absl::Status in(code, "message " + std::to_string(c));
    grpc::Status g = ToGrpcStatus(in);
    EXPECT_EQ(static_cast<int>(g.error_code()), c);
    EXPECT_EQ(g.error_message(), "message " + std::to_string(c));
    absl::Status back = FromGrpcStatus(g);
    EXPECT_EQ(back, in) << absl::StatusCodeToString(code);
  }
}

TEST(GrpcStatus, NamedCodesMatch) {
  EXPECT_EQ(ToGrpcStatus(absl::UnavailableError("x")).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ToGrpcStatus(absl::FailedPreconditionError("x")).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "x"))
                .code(),
            absl::StatusCode::kUnauthenticated);
}

TEST(GrpcStatus, ErrorInfoTravelsInTheDetails) {
  v1::ErrorInfo info;
  info.set_reason(v1::ErrorInfo::REASON_STALE_SHARD_MAP);
  info.set_current_shard_map_version(7);
  absl::Status in = WithErrorInfo(absl::FailedPreconditionError("stale"), info);
  grpc::Status g = ToGrpcStatus(in);
  EXPECT_FALSE(g.error_details().empty());
  // Across the wire only the code, message and details survive.
  grpc::Status wire(g.error_code(), g.error_message(), g.error_details());
  absl::Status back = FromGrpcStatus(wire);
  EXPECT_EQ(back.code(), absl::StatusCode::kFailedPrecondition);
  auto got = GetErrorInfo(back);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->reason(), v1::ErrorInfo::REASON_STALE_SHARD_MAP);
  EXPECT_EQ(got->current_shard_map_version(), 7u);
  EXPECT_FALSE(GetErrorInfo(absl::InternalError("x")).has_value());
}

}  // namespace
}  // namespace plexus
