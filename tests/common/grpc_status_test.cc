#include "common/grpc_status.h"

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

TEST(GrpcStatus, UnknownWireCodeReadsAsUnknown) {
  grpc::Status g(static_cast<grpc::StatusCode>(99), "odd");
  absl::Status st = FromGrpcStatus(g);
  EXPECT_EQ(st.code(), absl::StatusCode::kUnknown);
  EXPECT_EQ(st.message(), "odd");
}

}  // namespace
}  // namespace plexus
