#include "ps/service/ps_service.h"

#include "common/failpoint_rpc.h"

#include "common/incarnation.h"

namespace plexus::ps {

PsService::PsService(int shard)
    : shard_(shard), incarnation_(NewIncarnationId()) {}

grpc::Status PsService::SetFailpoint(grpc::ServerContext* ctx,
                                     const v1::SetFailpointRequest* request,
                                     v1::SetFailpointResponse* response) {
  return HandleSetFailpoint(*request, response);
}

}  // namespace plexus::ps
