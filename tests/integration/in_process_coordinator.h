// A CoordinatorService served by an in-process gRPC server on a free
// loopback port: what the service and worker-runtime tests talk to when
// they need the service's internals (its epoch) or a fake-free coordinator
// without a separate process.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "coordinator/service/coordinator_service.h"

namespace plexus::testing {

struct InProcessCoordinator {
  std::unique_ptr<coordinator::CoordinatorService> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;  // "127.0.0.1:port"

  static absl::StatusOr<InProcessCoordinator> Start(
      const coordinator::CoordinatorServiceOptions& options) {
    InProcessCoordinator c;
    absl::StatusOr<std::unique_ptr<coordinator::CoordinatorService>> s =
        coordinator::CoordinatorService::Create(options);
    if (!s.ok()) return s.status();
    c.service = std::move(*s);
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    b.RegisterService(c.service.get());
    c.server = b.BuildAndStart();
    if (c.server == nullptr) {
      return absl::InternalError("cannot start a gRPC server on 127.0.0.1");
    }
    c.service->Start();
    c.address = absl::StrCat("127.0.0.1:", port);
    return c;
  }

  // Shuts the service, then the server, down (idempotent).
  void Stop() {
    if (service) service->Shutdown();
    if (server) server->Shutdown(std::chrono::system_clock::now());
    server.reset();
    service.reset();
  }
};

}  // namespace plexus::testing
