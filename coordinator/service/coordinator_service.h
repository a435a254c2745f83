// The gRPC face of the coordinator: glue between coordinator.proto and the
// logic modules (membership, health, scheduling, checkpoint, rendezvous).
//
// Thread safety: gRPC calls the handlers from many threads at once.
#pragma once

#include <cstdint>

#include "plexus/v1/coordinator.grpc.pb.h"

namespace plexus::coordinator {

class CoordinatorService final : public v1::Coordinator::Service {
 public:
  CoordinatorService();

  // The coordinator's epoch: bumped on every restart, so an older coordinator
  // that wakes up is fenced out.
  uint64_t epoch() const { return epoch_; }

  grpc::Status SetFailpoint(grpc::ServerContext* ctx,
                            const v1::SetFailpointRequest* request,
                            v1::SetFailpointResponse* response) override;

 private:
  const uint64_t epoch_;
};

}  // namespace plexus::coordinator
