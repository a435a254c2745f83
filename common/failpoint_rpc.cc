#include "common/failpoint_rpc.h"

#include <gflags/gflags.h>
#include <glog/logging.h>

#include "common/failpoint.h"
#include "common/grpc_status.h"

DEFINE_bool(failpoint_rpc, false,
            "Serve the SetFailpoint admin RPC (fault-injection tests only).");

namespace plexus {

grpc::Status HandleSetFailpoint(const v1::SetFailpointRequest& request,
                                v1::SetFailpointResponse* response) {
  if (!FLAGS_failpoint_rpc) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "SetFailpoint is disabled; start the daemon with "
                        "--failpoint_rpc");
  }
  absl::Status st = request.action().empty()
                        ? (failpoint::Clear(request.name()), absl::OkStatus())
                        : failpoint::Set(request.name(), request.action());
  if (!st.ok()) return ToGrpcStatus(st);
  LOG(WARNING) << "failpoint " << request.name() << " set to '"
               << (request.action().empty() ? "off" : request.action())
               << "' by RPC";
  for (const std::string& a : failpoint::Active()) response->add_active(a);
  return grpc::Status::OK;
}

}  // namespace plexus
