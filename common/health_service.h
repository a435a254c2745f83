// The standard gRPC health service (grpc.health.v1.Health), served by every
// Plexus daemon. gRPC's built-in one keeps Watch streams open through a drain,
// so a watching load balancer would hold a SIGTERM'd daemon for its whole
// grace period; this one ends them once they have seen NOT_SERVING.
//
// It is a synchronous service on purpose: a single callback-API service in a
// server makes gRPC read every request of the server on its callback thread
// and hand the synchronous ones over to a pool thread, one more thread hop
// (~tens of µs on loopback) on every PS pull and push. A Watch stream holds
// one pool thread while it is open; they are few (load balancers, tests).
//
// The overall status is the empty service name; other names are unknown
// (Check: NOT_FOUND; Watch: SERVICE_UNKNOWN).
//
// Thread safety: all methods may be called from any thread.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace plexus {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  using Response = grpc::health::v1::HealthCheckResponse;
  using Request = grpc::health::v1::HealthCheckRequest;

  HealthService() = default;

  // Sets the overall status and tells every watcher.
  void SetServing(bool serving);
  // NOT_SERVING for good: watchers are told, then their streams end OK.
  void Shutdown();
  // Whether the overall status is SERVING.
  bool serving();

  grpc::Status Check(grpc::ServerContext* ctx, const Request* request,
                     Response* response) override;
  grpc::Status Watch(grpc::ServerContext* ctx, const Request* request,
                     grpc::ServerWriter<Response>* writer) override;

 private:
  absl::Mutex mu_;
  absl::CondVar changed_;
  Response::ServingStatus status_ ABSL_GUARDED_BY(mu_) = Response::NOT_SERVING;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace plexus
