// The standard gRPC health service (grpc.health.v1.Health), served by every
// Plexus daemon. gRPC's built-in one keeps Watch streams open through a drain,
// so a watching load balancer would hold a SIGTERM'd daemon for its whole
// grace period; this one ends them once they have seen NOT_SERVING.
//
// The overall status is the empty service name; other names are unknown
// (Check: NOT_FOUND; Watch: SERVICE_UNKNOWN).
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include <set>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace plexus {

class HealthService final : public grpc::health::v1::Health::CallbackService {
 public:
  using Response = grpc::health::v1::HealthCheckResponse;
  using Request = grpc::health::v1::HealthCheckRequest;

  HealthService() = default;
  // REQUIRES: the server is shut down (no watcher left).
  ~HealthService() override = default;

  // Sets the overall status and tells every watcher.
  void SetServing(bool serving);
  // NOT_SERVING for good: watchers are told, then their streams end OK.
  void Shutdown();
  // Whether the overall status is SERVING.
  bool serving();

  grpc::ServerUnaryReactor* Check(grpc::CallbackServerContext* ctx,
                                  const Request* request,
                                  Response* response) override;
  grpc::ServerWriteReactor<Response>* Watch(grpc::CallbackServerContext* ctx,
                                            const Request* request) override;

 private:
  class Watcher;
  void Remove(Watcher* w);

  absl::Mutex mu_;
  Response::ServingStatus status_ ABSL_GUARDED_BY(mu_) = Response::NOT_SERVING;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::set<Watcher*> watchers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus
