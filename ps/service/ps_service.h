// The gRPC face of a parameter-server shard: translates ps.proto requests into
// storage-engine calls (ps/storage/engine.h). Glue only: checks the shard map
// version and that sparse ids belong to this shard, converts types, fills
// response headers, records metrics. The engine does the work.
//
// Checkpoints: the five checkpoint RPCs map one to one onto
// ps/storage/checkpoint.h's CheckpointStore (opened by OpenCheckpoints on
// <data_dir>/checkpoints); without a store they are FAILED_PRECONDITION.
// While a Restore runs, health is NOT_SERVING and data-plane calls are
// UNAVAILABLE (REASON_NOT_SERVING); a failed restore (DATA_LOSS naming the
// file, bad path, ...) leaves the state as it was and the shard serving.
// Failpoint "ps.checkpoint.after_commit_before_reply" fires in
// CommitCheckpoint once this shard's part is committed on disk, before the
// coordinator hears so (a crash there is finding 1 of tests/fault/README.md).
// FinalizeCheckpoint(aborted) of a checkpoint this shard holds as published
// is FAILED_PRECONDITION: only unpublished ones are abandoned.
//
// Thread safety: gRPC calls the handlers from many threads at once.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "common/shard_map.h"
#include "plexus/v1/ps.grpc.pb.h"
#include "ps/storage/checkpoint.h"
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

  // Opens the checkpoint store on `root` (created if missing; staging
  // leftovers and half checkpoints are removed). REQUIRES: called once,
  // before serving.
  // With `await_restore`, a folder that holds a committed or published
  // checkpoint (this is a restart) makes the shard refuse the data plane
  // (UNAVAILABLE, REASON_NOT_SERVING) until a Restore succeeds: its state is
  // empty and the coordinator restores the cluster to its newest checkpoint
  // (F7). A FinalizeCheckpoint(aborted) that leaves no committed or
  // published checkpoint ends the wait: nothing was published, so there is
  // nothing to restore and the shard serves its empty state.
  absl::Status OpenCheckpoints(const std::string& root,
                               bool await_restore = false);
  // True while a restart waits for its Restore (health NOT_SERVING).
  bool awaiting_restore() const { return awaiting_restore_.load(); }
  // Called with false when a Restore starts and true when it ends (the
  // daemon's health).
  void SetServingCallback(std::function<void(bool)> set_serving) {
    absl::MutexLock lock(&mu_);
    set_serving_ = std::move(set_serving);
  }

  // The data plane without gRPC (ps/service/data_plane.h calls these once
  // a request's key checked out; the gRPC handlers once the token did).
  // `deadline` ends consistency waits.
  absl::Status ServePull(const v1::PullRequest& req, absl::Time deadline,
                         v1::PullResponse* resp);
  // `tensors`, when not empty: the bytes of the request's tensors (dense
  // then sparse, as their data fields, which are then ignored), held by the
  // caller -- the direct plane reads them off the socket into buffers of
  // its own.
  absl::Status ServePush(const v1::PushRequest& req, v1::PushResponse* resp,
                         absl::Span<const absl::string_view> tensors = {});
  absl::Status ServePushPull(const v1::PushPullRequest& req,
                             absl::Time deadline, v1::PushPullResponse* resp,
                             absl::Span<const absl::string_view> tensors = {});
  // The direct data plane to advertise in GetShardInfo ("host:port" and its
  // key). REQUIRES: called before serving.
  void SetDataPlane(std::string address, std::string key) {
    data_plane_address_ = std::move(address);
    data_plane_key_ = std::move(key);
  }

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
  grpc::Status PrepareCheckpoint(grpc::ServerContext* ctx,
                                 const v1::PrepareCheckpointRequest* req,
                                 v1::PrepareCheckpointResponse* resp) override;
  grpc::Status CommitCheckpoint(grpc::ServerContext* ctx,
                                const v1::CommitCheckpointRequest* req,
                                v1::CommitCheckpointResponse* resp) override;
  grpc::Status FinalizeCheckpoint(
      grpc::ServerContext* ctx, const v1::FinalizeCheckpointRequest* req,
      v1::FinalizeCheckpointResponse* resp) override;
  grpc::Status Restore(grpc::ServerContext* ctx, const v1::RestoreRequest* req,
                       v1::RestoreResponse* resp) override;
  grpc::Status ListCheckpoints(grpc::ServerContext* ctx,
                               const v1::ListShardCheckpointsRequest* req,
                               v1::ListShardCheckpointsResponse* resp) override;

 private:
  // The request's shard map version must be 0 (a standalone client) or the
  // current one; else FAILED_PRECONDITION carrying the current version.
  absl::Status CheckMapVersion(const v1::RequestHeader& h) const;
  // UNAVAILABLE (REASON_NOT_SERVING) while a Restore runs.
  absl::Status CheckServing() const;
  // Admin calls from a coordinator: an epoch older than the newest seen is
  // FAILED_PRECONDITION (REASON_STALE_COORDINATOR_EPOCH); 0 is a standalone
  // caller. Remembers a newer epoch.
  absl::Status CheckCoordinatorEpoch(const v1::RequestHeader& h);
  // The store, or FAILED_PRECONDITION when none was opened.
  absl::StatusOr<CheckpointStore*> Checkpoints() const;
  absl::StatusOr<RestoreResult> DoRestore(const v1::RestoreRequest& req);
  // After a restore: the proto configs of what the engine now holds.
  void ResyncConfigs();
  // Every id must route to this shard under the current map (if any).
  absl::Status CheckOwnership(
      const std::string& table,
      const google::protobuf::RepeatedField<uint64_t>& ids) const;
  absl::Status DoPush(
      const v1::RequestHeader& h, uint32_t push_seq, uint32_t chunk_index,
      uint32_t num_chunks,
      const google::protobuf::RepeatedPtrField<v1::DenseSliceData>& dense,
      const google::protobuf::RepeatedPtrField<v1::SparseUpdate>& sparse,
      absl::Span<const absl::string_view> tensors, PushResult* result);
  absl::StatusOr<PullResult> DoPull(
      absl::Time deadline, const v1::RequestHeader& h, v1::DType value_dtype,
      const google::protobuf::RepeatedPtrField<v1::DenseSliceRef>& dense,
      const google::protobuf::RepeatedPtrField<v1::SparseLookup>& sparse);
  // Moves the pulled bytes into the response (no copy).
  void FillResponse(
      PullResult pull,
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
  // Set before serving, then constant. Borrows engine_ (declared after it, so
  // destroyed first).
  std::unique_ptr<CheckpointStore> checkpoints_;
  std::string checkpoint_root_;
  // Set before serving, then constant (SetDataPlane).
  std::string data_plane_address_;
  std::string data_plane_key_;
  // A Restore is running (the store allows one at a time).
  std::atomic<bool> restoring_{false};
  std::atomic<bool> draining_{false};
  std::atomic<bool> awaiting_restore_{false};

  mutable absl::Mutex mu_;
  std::shared_ptr<const ShardRouter> router_ ABSL_GUARDED_BY(mu_);
  int shard_index_ ABSL_GUARDED_BY(mu_) = -1;
  uint64_t coordinator_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The checkpoint the state was last restored from; 0: never restored.
  uint64_t restored_checkpoint_id_ ABSL_GUARDED_BY(mu_) = 0;
  // Every step <= floor_step_ of job floor_job_ is in the newest published
  // (or restored) checkpoint, and the engine's record of applied pushes no
  // longer holds them (trimmed at publish): a push of such a step can only
  // be a late copy of one already applied (a zombie attempt whose retries
  // outlived a restore and a newer checkpoint), so it is acknowledged as a
  // duplicate and not applied.
  std::string floor_job_ ABSL_GUARDED_BY(mu_);
  uint64_t floor_step_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(bool)> set_serving_ ABSL_GUARDED_BY(mu_);
  // The configs as created, for Describe/List (the engine keeps its own).
  absl::flat_hash_map<std::string, v1::VariableConfig> variable_configs_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, v1::TableConfig> table_configs_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::ps
