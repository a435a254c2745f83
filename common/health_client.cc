#include "common/health_client.h"

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/status.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace plexus {

absl::StatusOr<Health> CheckHealth(const std::string& target,
                                   absl::Duration timeout,
                                   const ClientTlsOptions& tls) {
  PLEXUS_ASSIGN_OR_RETURN(auto credentials, MakeChannelCredentials(tls));
  auto channel = grpc::CreateChannel(target, credentials);
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  grpc::Status st = stub->Check(&ctx, req, &resp);
  if (!st.ok()) {
    return Annotate(FromGrpcStatus(st),
                    absl::StrCat("health check of ", target));
  }
  return resp.status() == grpc::health::v1::HealthCheckResponse::SERVING
             ? Health::kServing
             : Health::kNotServing;
}

absl::Status WaitUntilServing(const std::string& target, absl::Duration timeout,
                              const ClientTlsOptions& tls) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::DeadlineExceededError("not checked");
  absl::Duration step = absl::Milliseconds(5);
  while (absl::Now() < deadline) {
    auto h = CheckHealth(
        target, std::min(absl::Seconds(1), deadline - absl::Now()), tls);
    if (h.ok() && *h == Health::kServing) return absl::OkStatus();
    last = h.ok() ? absl::UnavailableError("NOT_SERVING") : h.status();
    absl::SleepFor(step);
    step = std::min(step * 2, absl::Milliseconds(100));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(target, " not serving after ", absl::FormatDuration(timeout),
                   " (last: ", last.ToString(), ")"));
}

}  // namespace plexus
