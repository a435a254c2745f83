#include "coordinator/service/coordinator_service.h"

#include "common/failpoint_rpc.h"

namespace plexus::coordinator {

// The epoch is persisted in the coordinator's RocksDB once state is kept
// there; until then every start is epoch 1.
CoordinatorService::CoordinatorService() : epoch_(1) {}

grpc::Status CoordinatorService::SetFailpoint(
    grpc::ServerContext* ctx, const v1::SetFailpointRequest* request,
    v1::SetFailpointResponse* response) {
  return HandleSetFailpoint(*request, response);
}

}  // namespace plexus::coordinator
