// The gRPC and file side of coordinator/checkpointing: a ShardDriver over
// the PS shards' checkpoint RPCs, a ManifestStore of serialized
// plexus.v1.CheckpointManifest files, and the conversions between the
// logic's Manifest and the wire's.
//
// Manifests live in <root>/manifests/<checkpoint_id>.pb (root is
// <coordinator data_dir>/checkpoints). Publish writes <id>.pb.tmp, fsyncs
// it, renames it into place and fsyncs the folder: a crash before the rename
// leaves no manifest (the .tmp is removed by the next Open). Failpoint
// "coordinator.checkpoint.before_manifest_rename" sits between the fsync
// and the rename (F8/F18 tests crash there). The last id handed out is kept
// in <root>/last_id (written the same way) so ids never repeat.
//
// Thread safety: GrpcShardDriver may be used from any thread;
// FileManifestStore's methods are serialised internally.
#pragma once

#include <grpcpp/security/credentials.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "coordinator/checkpointing/checkpointer.h"
#include "plexus/v1/common.pb.h"
#include "plexus/v1/ps.grpc.pb.h"

namespace plexus::coordinator {

void ToProto(const checkpointing::Manifest& m, v1::CheckpointManifest* out);
checkpointing::Manifest FromProto(const v1::CheckpointManifest& m);

class GrpcShardDriver final : public checkpointing::ShardDriver {
 public:
  // `addresses` in shard order ("host:port"), reached with `credentials`
  // (plaintext or TLS, as the shards serve). `token` (may be empty) goes
  // with every call as a Bearer token.
  GrpcShardDriver(std::vector<std::string> addresses,
                  std::shared_ptr<grpc::ChannelCredentials> credentials,
                  const std::string& token, uint64_t coordinator_epoch);

  int num_shards() const override { return static_cast<int>(stubs_.size()); }
  absl::StatusOr<absl::Duration> Prepare(
      int shard, const checkpointing::PrepareArgs& args) override;
  absl::StatusOr<checkpointing::ShardPart> Commit(
      int shard, uint64_t checkpoint_id, absl::Duration timeout) override;
  absl::Status Finalize(int shard, uint64_t checkpoint_id, bool published,
                        uint32_t keep_last, const std::string& job_id) override;
  absl::Status Restore(int shard,
                       const checkpointing::Manifest& manifest) override;
  absl::StatusOr<checkpointing::ShardProbe> Probe(int shard) override;

 private:
  void FillHeader(v1::RequestHeader* h) const;

  const uint64_t epoch_;
  std::vector<std::unique_ptr<v1::ParameterServer::Stub>> stubs_;
};

class FileManifestStore final : public checkpointing::ManifestStore {
 public:
  // Creates <root>/manifests if needed and removes half-written manifests.
  static absl::StatusOr<std::unique_ptr<FileManifestStore>> Open(
      const std::string& root);

  absl::StatusOr<uint64_t> NextId() override;
  absl::Status Publish(const checkpointing::Manifest& manifest) override;
  absl::StatusOr<std::vector<checkpointing::Manifest>> List() override;
  absl::Status Remove(uint64_t checkpoint_id) override;

 private:
  explicit FileManifestStore(std::string root) : root_(std::move(root)) {}

  const std::string root_;
  absl::Mutex mu_;
};

}  // namespace plexus::coordinator
