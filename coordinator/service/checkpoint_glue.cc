#include "coordinator/service/checkpoint_glue.h"

#include <fcntl.h>
#include <glog/logging.h>
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/auth.h"
#include "common/failpoint.h"
#include "common/grpc_status.h"
#include "common/status.h"

namespace plexus::coordinator {
namespace {

namespace fs = std::filesystem;
namespace ck = checkpointing;

absl::Status Errno(absl::string_view what) {
  const int e = errno;
  std::string msg = absl::StrCat(what, ": ", std::strerror(e));
  if (e == ENOSPC || e == EDQUOT) return absl::ResourceExhaustedError(msg);
  return absl::InternalError(msg);
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return Errno(absl::StrCat("open ", dir));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return Errno(absl::StrCat("fsync ", dir));
  return absl::OkStatus();
}

// Writes `data` to `path` durably and atomically; `failpoint` (may be empty)
// fires between the fsync of the temporary file and the rename.
absl::Status WriteDurably(const std::string& path, const std::string& data,
                          const char* failpoint) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(absl::StrCat("create ", tmp));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      absl::Status st = Errno(absl::StrCat("write ", tmp));
      ::close(fd);
      ::unlink(tmp.c_str());
      return st;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status st = Errno(absl::StrCat("fsync ", tmp));
    ::close(fd);
    ::unlink(tmp.c_str());
    return st;
  }
  ::close(fd);
  if (failpoint != nullptr) {
    absl::Status fp = PLEXUS_FAILPOINT(failpoint);
    if (!fp.ok()) {
      ::unlink(tmp.c_str());
      return fp;
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status st = Errno(absl::StrCat("rename ", tmp));
    ::unlink(tmp.c_str());
    return st;
  }
  return FsyncDir(fs::path(path).parent_path().string());
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

ck::ShardPart FromProto(const v1::ShardCheckpoint& s) {
  ck::ShardPart p;
  p.shard_index = s.shard_index();
  p.directory = s.directory();
  for (const auto& f : s.files()) {
    p.files.push_back({f.path(), f.size_bytes(), f.crc32c()});
  }
  p.server_incarnation = s.server_incarnation();
  p.num_rows = s.num_rows();
  p.total_bytes = s.total_bytes();
  p.new_bytes = s.new_bytes();
  return p;
}

void ToProto(const ck::ShardPart& p, v1::ShardCheckpoint* s) {
  s->set_shard_index(p.shard_index);
  s->set_directory(p.directory);
  for (const auto& f : p.files) {
    auto* pf = s->add_files();
    pf->set_path(f.path);
    pf->set_size_bytes(f.size_bytes);
    pf->set_crc32c(f.crc32c);
  }
  s->set_server_incarnation(p.server_incarnation);
  s->set_num_rows(p.num_rows);
  s->set_total_bytes(p.total_bytes);
  s->set_new_bytes(p.new_bytes);
}

}  // namespace

void ToProto(const ck::Manifest& m, v1::CheckpointManifest* out) {
  out->set_checkpoint_id(m.checkpoint_id);
  out->set_step_id(m.step_id);
  out->set_job_id(m.job_id);
  out->set_coordinator_epoch(m.coordinator_epoch);
  out->set_base_checkpoint_id(m.base_checkpoint_id);
  out->set_started_unix_ms(m.started_unix_ms);
  out->set_published_unix_ms(m.published_unix_ms);
  for (const auto& s : m.shards) ToProto(s, out->add_shards());
}

ck::Manifest FromProto(const v1::CheckpointManifest& m) {
  ck::Manifest out;
  out.checkpoint_id = m.checkpoint_id();
  out.step_id = m.step_id();
  out.job_id = m.job_id();
  out.coordinator_epoch = m.coordinator_epoch();
  out.base_checkpoint_id = m.base_checkpoint_id();
  out.started_unix_ms = m.started_unix_ms();
  out.published_unix_ms = m.published_unix_ms();
  for (const auto& s : m.shards()) out.shards.push_back(FromProto(s));
  return out;
}

// ---- GrpcShardDriver ----

GrpcShardDriver::GrpcShardDriver(
    std::vector<std::string> addresses,
    std::shared_ptr<grpc::ChannelCredentials> credentials,
    const std::string& token, uint64_t coordinator_epoch)
    : epoch_(coordinator_epoch) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  for (const std::string& a : addresses) {
    stubs_.push_back(v1::ParameterServer::NewStub(
        grpc::experimental::CreateCustomChannelWithInterceptors(
            a, credentials, args, TokenInterceptors(token))));
  }
}

void GrpcShardDriver::FillHeader(v1::RequestHeader* h) const {
  h->set_coordinator_epoch(epoch_);
}

absl::StatusOr<absl::Duration> GrpcShardDriver::Prepare(
    int shard, const ck::PrepareArgs& args) {
  v1::PrepareCheckpointRequest req;
  FillHeader(req.mutable_header());
  req.set_checkpoint_id(args.checkpoint_id);
  req.set_step_id(args.step_id);
  req.set_base_checkpoint_id(args.base_checkpoint_id);
  v1::PrepareCheckpointResponse resp;
  auto ctx = Context(absl::Seconds(60));
  PLEXUS_RETURN_IF_ERROR(
      FromGrpcStatus(stubs_[shard]->PrepareCheckpoint(ctx.get(), req, &resp)));
  return absl::Microseconds(resp.cut_pause_us());
}

absl::StatusOr<ck::ShardPart> GrpcShardDriver::Commit(int shard,
                                                      uint64_t checkpoint_id,
                                                      absl::Duration timeout) {
  v1::CommitCheckpointRequest req;
  FillHeader(req.mutable_header());
  req.set_checkpoint_id(checkpoint_id);
  req.set_timeout_ms(absl::ToInt64Milliseconds(timeout));
  v1::CommitCheckpointResponse resp;
  auto ctx = Context(timeout + absl::Seconds(10));
  PLEXUS_RETURN_IF_ERROR(
      FromGrpcStatus(stubs_[shard]->CommitCheckpoint(ctx.get(), req, &resp)));
  return FromProto(resp.shard_checkpoint());
}

absl::Status GrpcShardDriver::Finalize(int shard, uint64_t checkpoint_id,
                                       bool published, uint32_t keep_last,
                                       const std::string& job_id) {
  v1::FinalizeCheckpointRequest req;
  FillHeader(req.mutable_header());
  req.mutable_header()->set_job_id(job_id);
  req.set_checkpoint_id(checkpoint_id);
  req.set_published(published);
  req.set_keep_last(keep_last);
  v1::FinalizeCheckpointResponse resp;
  auto ctx = Context(absl::Seconds(60));
  return FromGrpcStatus(
      stubs_[shard]->FinalizeCheckpoint(ctx.get(), req, &resp));
}

absl::Status GrpcShardDriver::Restore(int shard, const ck::Manifest& manifest) {
  v1::RestoreRequest req;
  FillHeader(req.mutable_header());
  ToProto(manifest, req.mutable_manifest());
  req.set_shard_index(static_cast<uint32_t>(shard));
  v1::RestoreResponse resp;
  auto ctx = Context(absl::Minutes(10));
  return FromGrpcStatus(stubs_[shard]->Restore(ctx.get(), req, &resp));
}

absl::StatusOr<ck::ShardProbe> GrpcShardDriver::Probe(int shard) {
  v1::GetShardInfoRequest req;
  FillHeader(req.mutable_header());
  v1::GetShardInfoResponse resp;
  auto ctx = Context(absl::Seconds(2));
  PLEXUS_RETURN_IF_ERROR(
      FromGrpcStatus(stubs_[shard]->GetShardInfo(ctx.get(), req, &resp)));
  // RESTORING outside a restore of ours: a restart waiting for one.
  return ck::ShardProbe{
      .incarnation = resp.header().server_incarnation(),
      .awaiting_restore = resp.state() == v1::SHARD_STATE_RESTORING,
      .last_checkpoint_id = resp.last_checkpoint_id()};
}

// ---- FileManifestStore ----

absl::StatusOr<std::unique_ptr<FileManifestStore>> FileManifestStore::Open(
    const std::string& root) {
  std::error_code ec;
  fs::create_directories(root + "/manifests", ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", root, "/manifests: ", ec.message()));
  }
  // Half-written manifests (a crash before the rename) are not checkpoints.
  for (const auto& e : fs::directory_iterator(root + "/manifests", ec)) {
    if (e.path().extension() == ".tmp") {
      LOG(INFO) << "removing unpublished manifest " << e.path().string();
      fs::remove(e.path(), ec);
    }
  }
  fs::remove(root + "/last_id.tmp", ec);
  return std::unique_ptr<FileManifestStore>(new FileManifestStore(root));
}

absl::StatusOr<uint64_t> FileManifestStore::NextId() {
  absl::MutexLock lock(&mu_);
  uint64_t last = 0;
  if (auto text = ReadAll(root_ + "/last_id"); text.ok()) {
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &last)) {
      return absl::DataLossError(
          absl::StrCat(root_, "/last_id does not hold a number"));
    }
  }
  // Published manifests count too (a last_id lost with its folder).
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ + "/manifests", ec)) {
    uint64_t id = 0;
    if (e.path().extension() == ".pb" &&
        absl::SimpleAtoi(e.path().stem().string(), &id)) {
      last = std::max(last, id);
    }
  }
  const uint64_t next = last + 1;
  PLEXUS_RETURN_IF_ERROR(
      WriteDurably(root_ + "/last_id", absl::StrCat(next, "\n"), nullptr));
  return next;
}

absl::Status FileManifestStore::Publish(const ck::Manifest& manifest) {
  v1::CheckpointManifest p;
  ToProto(manifest, &p);
  std::string bytes;
  if (!p.SerializeToString(&bytes)) {
    return absl::InternalError("manifest does not serialize");
  }
  absl::MutexLock lock(&mu_);
  return WriteDurably(
      absl::StrCat(root_, "/manifests/", manifest.checkpoint_id, ".pb"), bytes,
      "coordinator.checkpoint.before_manifest_rename");
}

absl::StatusOr<std::vector<ck::Manifest>> FileManifestStore::List() {
  absl::MutexLock lock(&mu_);
  std::vector<ck::Manifest> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root_ + "/manifests", ec)) {
    uint64_t id = 0;
    if (e.path().extension() != ".pb" ||
        !absl::SimpleAtoi(e.path().stem().string(), &id)) {
      continue;
    }
    PLEXUS_ASSIGN_OR_RETURN(std::string bytes, ReadAll(e.path().string()));
    v1::CheckpointManifest p;
    if (!p.ParseFromString(bytes) || p.checkpoint_id() != id) {
      // A damaged manifest is skipped, not fatal: older ones still serve.
      LOG(ERROR) << "manifest " << e.path().string()
                 << " does not parse; ignored";
      continue;
    }
    out.push_back(FromProto(p));
  }
  if (ec) {
    return absl::InternalError(
        absl::StrCat("listing ", root_, "/manifests: ", ec.message()));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.checkpoint_id > b.checkpoint_id;
  });
  return out;
}

absl::Status FileManifestStore::Remove(uint64_t checkpoint_id) {
  absl::MutexLock lock(&mu_);
  std::error_code ec;
  fs::remove(absl::StrCat(root_, "/manifests/", checkpoint_id, ".pb"), ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("removing manifest ", checkpoint_id, ": ", ec.message()));
  }
  return FsyncDir(root_ + "/manifests");
}

}  // namespace plexus::coordinator
