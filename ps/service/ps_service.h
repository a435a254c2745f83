// The gRPC face of a parameter-server shard: translates ps.proto requests into
// storage-engine calls. Glue only; the logic lives in ps/storage.
//
// Thread safety: gRPC calls the handlers from many threads at once.
#pragma once

#include <cstdint>

#include "plexus/v1/ps.grpc.pb.h"

namespace plexus::ps {

class PsService final : public v1::ParameterServer::Service {
 public:
  // `shard` is this shard's index. A fresh random incarnation id is drawn, so
  // clients notice a restarted shard.
  explicit PsService(int shard);

  int shard() const { return shard_; }
  uint64_t incarnation() const { return incarnation_; }

  grpc::Status SetFailpoint(grpc::ServerContext* ctx,
                            const v1::SetFailpointRequest* request,
                            v1::SetFailpointResponse* response) override;

 private:
  const int shard_;
  const uint64_t incarnation_;
};

}  // namespace plexus::ps
