// The gRPC face of a parameter-server shard: translates ps.proto requests into
// storage-engine calls (ps/storage/engine.h). Glue only: checks the shard map
// version and that sparse ids belong to this shard, converts types, fills
// response headers, records metrics. The engine does the work.
//
// Checkpoint RPCs answer UNIMPLEMENTED until the checkpoints issue lands.
//
// Thread safety: gRPC calls the handlers from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/shard_map.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "ps/storage/engine.h"

namespace plexus::ps {

class PsService final : public v1::ParameterServer::Service {
 public:
  // `shard` is this shard's index as configured (the shard map may say
  // otherwise; the map wins). A fresh random incarnation id is drawn, so
  // clients notice a restarted shard.
  PsService(int shard, std::unique_ptr<Engine> engine,
            int64_t max_message_bytes);

  uint64_t incarnation() const { return incarnation_; }
  // Wakes pulls waiting for consistency with UNAVAILABLE (on SIGTERM).
  void Drain();

  grpc::Status Pull(grpc::ServerContext* ctx, const v1::PullRequest* req,
                    v1::PullResponse* resp) override;
  grpc::Status Push(grpc::ServerContext* ctx, const v1::PushRequest* req,
                    v1::PushResponse* resp) override;
  grpc::Status PushPull(grpc::ServerContext* ctx,
                        const v1::PushPullRequest* req,
                        v1::PushPullResponse* resp) override;
  grpc::Status CreateVariable(grpc::ServerContext* ctx,
                              const v1::CreateVariableRequest* req,
                              v1::CreateVariableResponse* resp) override;
  grpc::Status CreateTable(grpc::ServerContext* ctx,
                           const v1::CreateTableRequest* req,
                           v1::CreateTableResponse* resp) override;
  grpc::Status Describe(grpc::ServerContext* ctx,
                        const v1::DescribeRequest* req,
                        v1::DescribeResponse* resp) override;
  grpc::Status ListVariables(grpc::ServerContext* ctx,
                             const v1::ListVariablesRequest* req,
                             v1::ListVariablesResponse* resp) override;
  grpc::Status DeleteVariable(grpc::ServerContext* ctx,
                              const v1::DeleteVariableRequest* req,
                              v1::DeleteVariableResponse* resp) override;
  grpc::Status DeleteTable(grpc::ServerContext* ctx,
                           const v1::DeleteTableRequest* req,
                           v1::DeleteTableResponse* resp) override;
  grpc::Status GetShardInfo(grpc::ServerContext* ctx,
                            const v1::GetShardInfoRequest* req,
                            v1::GetShardInfoResponse* resp) override;
  grpc::Status UpdateShardMap(grpc::ServerContext* ctx,
                              const v1::UpdateShardMapRequest* req,
                              v1::UpdateShardMapResponse* resp) override;
  grpc::Status SetFailpoint(grpc::ServerContext* ctx,
                            const v1::SetFailpointRequest* request,
                            v1::SetFailpointResponse* response) override;

 private:
  // The request's shard map version must be 0 (a standalone client) or the
  // current one; else FAILED_PRECONDITION carrying the current version.
  absl::Status CheckMapVersion(const v1::RequestHeader& h) const;
  // Every id must route to this shard under the current map (if any).
  absl::Status CheckOwnership(
      const std::string& table,
      const google::protobuf::RepeatedField<uint64_t>& ids) const;
  absl::Status DoPush(
      const v1::RequestHeader& h, uint32_t push_seq, uint32_t chunk_index,
      uint32_t num_chunks,
      const google::protobuf::RepeatedPtrField<v1::DenseSliceData>& dense,
      const google::protobuf::RepeatedPtrField<v1::SparseUpdate>& sparse,
      PushResult* result);
  absl::StatusOr<PullResult> DoPull(
      grpc::ServerContext* ctx, const v1::RequestHeader& h,
      v1::DType value_dtype,
      const google::protobuf::RepeatedPtrField<v1::DenseSliceRef>& dense,
      const google::protobuf::RepeatedPtrField<v1::SparseLookup>& sparse);
  void FillResponse(
      const PullResult& pull,
      const google::protobuf::RepeatedPtrField<v1::SparseLookup>& lookups,
      google::protobuf::RepeatedPtrField<v1::DenseSliceData>* dense,
      google::protobuf::RepeatedPtrField<v1::SparseRows>* sparse,
      const google::protobuf::RepeatedPtrField<v1::DenseSliceRef>& refs);
  void FillHeader(v1::ResponseHeader* h) const;
  void FillVariableInfo(const VariableInfo& info, v1::VariableInfo* out) const;
  void FillTableInfo(const TableInfo& info, v1::TableInfo* out) const;
  void CollectMetrics();

  const int configured_shard_;
  const uint64_t incarnation_;
  const int64_t max_message_bytes_;
  const int64_t started_unix_ms_;
  const std::unique_ptr<Engine> engine_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const ShardRouter> router_ ABSL_GUARDED_BY(mu_);
  int shard_index_ ABSL_GUARDED_BY(mu_) = -1;
  uint64_t coordinator_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The configs as created, for Describe/List (the engine keeps its own).
  absl::flat_hash_map<std::string, v1::VariableConfig> variable_configs_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, v1::TableConfig> table_configs_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::ps
