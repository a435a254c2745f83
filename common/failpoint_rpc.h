// The SetFailpoint admin RPC that plexus-ps and plexus-coordinator both serve,
// so that fault tests can arm a failpoint in a running daemon. Off unless the
// daemon runs with --failpoint_rpc: then UNIMPLEMENTED.
#pragma once

#include <grpcpp/support/status.h>

#include "plexus/v1/common.pb.h"

namespace plexus {

// Applies the request to this process's failpoints and lists what is on.
grpc::Status HandleSetFailpoint(const v1::SetFailpointRequest& request,
                                v1::SetFailpointResponse* response);

}  // namespace plexus
