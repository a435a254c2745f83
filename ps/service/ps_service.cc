#include "ps/service/ps_service.h"

#include <glog/logging.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/auth.h"
#include "common/error_info.h"
#include "common/failpoint.h"
#include "common/failpoint_rpc.h"
#include "common/grpc_status.h"
#include "common/hash.h"
#include "common/incarnation.h"
#include "common/metrics.h"
#include "common/status.h"
#include "plexus/config.h"
#include "ps/service/convert.h"

namespace plexus::ps {
namespace {

using google::protobuf::RepeatedPtrField;

// Room for everything in a response besides tensor bytes.
constexpr int64_t kHeadroomBytes = 64 << 10;

absl::Time DeadlineOf(grpc::ServerContext* ctx) {
  auto d = ctx->deadline();
  if (d == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(d);
}

PushOptions PushOptionsOf(const v1::RequestHeader& h, uint32_t push_seq,
                          uint32_t chunk_index, uint32_t num_chunks) {
  PushOptions o;
  o.job_id = h.job_id();
  o.worker_id = h.worker_id();
  o.worker_incarnation = h.worker_incarnation();
  o.step_id = h.step_id();
  o.closure_id = h.closure_id();
  o.push_seq = push_seq;
  o.chunk_index = chunk_index;
  o.num_chunks = num_chunks;
  return o;
}

// The push part of a PushResponse or PushPullResponse.
template <typename Resp>
void SetPushResult(const PushResult& r, Resp* resp) {
  resp->set_outcome(ToProto(r.outcome));
  resp->set_rows_applied(r.rows_applied);
  resp->set_rows_not_admitted(r.rows_not_admitted);
  resp->set_skipped_non_finite(r.skipped_non_finite);
}

void CountPush(const absl::StatusOr<PushResult>& r) {
  if (!r.ok()) {
    Metrics()
        ->GetCounter("plexus_ps_rejected_pushes_total",
                     "Pushes refused (bad input, stale sender, ...), by code.",
                     {{"code", absl::StatusCodeToString(r.status().code())}})
        ->Increment();
    return;
  }
  const char* outcome = r->outcome == PushOutcome::kDuplicate    ? "duplicate"
                        : r->outcome == PushOutcome::kAggregated ? "aggregated"
                                                                 : "applied";
  Metrics()
      ->GetCounter("plexus_ps_pushes_total", "Pushes acknowledged, by outcome.",
                   {{"outcome", outcome}})
      ->Increment();
  Metrics()
      ->GetCounter("plexus_ps_push_rows_total",
                   "Rows applied or aggregated by pushes.")
      ->Increment(static_cast<double>(r->rows_applied));
}

void CheckpointFailed(const char* stage) {
  Metrics()
      ->GetCounter("plexus_ps_checkpoint_failures_total",
                   "Checkpoints this shard could not cut (prepare) or write "
                   "(commit).",
                   {{"stage", stage}})
      ->Increment();
}

void RecordCheckpointCommitted(absl::Duration write_time, int64_t new_bytes) {
  Metrics()
      ->GetHistogram("plexus_ps_checkpoint_write_seconds",
                     "Time from a checkpoint's cut to its files being durable "
                     "on this shard.")
      ->Observe(absl::ToDoubleSeconds(write_time));
  Metrics()
      ->GetGauge("plexus_ps_checkpoint_last_success_time_seconds",
                 "When this shard last committed a checkpoint, seconds since "
                 "the Unix epoch.")
      ->Set(absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));
  Metrics()
      ->GetCounter("plexus_ps_checkpoint_written_bytes_total",
                   "Bytes of new checkpoint files written by this shard.")
      ->Increment(static_cast<double>(std::max<int64_t>(new_bytes, 0)));
}

v1::ShardCheckpointState ToProto(CheckpointState s) {
  switch (s) {
    case CheckpointState::kStaging:
      return v1::SHARD_CHECKPOINT_STATE_STAGING;
    case CheckpointState::kCommitted:
      return v1::SHARD_CHECKPOINT_STATE_COMMITTED;
    case CheckpointState::kPublished:
      return v1::SHARD_CHECKPOINT_STATE_PUBLISHED;
    case CheckpointState::kAborted:
      return v1::SHARD_CHECKPOINT_STATE_ABORTED;
  }
  return v1::SHARD_CHECKPOINT_STATE_UNSPECIFIED;
}

void ToProto(const ShardCheckpointInfo& info, uint32_t shard_index,
             uint64_t incarnation, v1::ShardCheckpoint* out) {
  out->set_shard_index(shard_index);
  out->set_directory(info.directory);
  for (const auto& f : info.files) {
    v1::CheckpointFile* pf = out->add_files();
    pf->set_path(f.path);
    pf->set_size_bytes(f.size_bytes);
    pf->set_crc32c(f.crc32c);
  }
  out->set_server_incarnation(incarnation);
  out->set_num_rows(info.num_rows);
  out->set_total_bytes(info.total_bytes);
  out->set_new_bytes(info.new_bytes);
}

// A relative path with no empty, "." or ".." component.
bool IsSafeRelativePath(absl::string_view p) {
  if (p.empty() || p.front() == '/') return false;
  for (absl::string_view part : absl::StrSplit(p, '/')) {
    if (part.empty() || part == "." || part == "..") return false;
  }
  return true;
}

// The store names a bad file as "checkpoint file <path> ..."; the
// coordinator gets it as ErrorInfo.resource too, so it need not parse.
absl::Status WithChecksumInfo(const absl::Status& st) {
  if (st.code() != absl::StatusCode::kDataLoss) return st;
  constexpr absl::string_view kPrefix = "checkpoint file ";
  absl::string_view m = st.message();
  size_t at = m.find(kPrefix);
  if (at == absl::string_view::npos) return st;
  absl::string_view rest = m.substr(at + kPrefix.size());
  size_t end = rest.find_first_of(" :");
  v1::ErrorInfo info;
  info.set_reason(v1::ErrorInfo::REASON_CHECKSUM_MISMATCH);
  info.set_resource(std::string(rest.substr(0, end)));
  return WithErrorInfo(st, info);
}

}  // namespace

PsService::PsService(int shard, std::unique_ptr<Engine> engine,
                     int64_t max_message_bytes)
    : configured_shard_(shard),
      incarnation_(NewIncarnationId()),
      max_message_bytes_(max_message_bytes),
      started_unix_ms_(absl::ToUnixMillis(absl::Now())),
      engine_(std::move(engine)) {
  Metrics()->AddCollector([this] { CollectMetrics(); });
}

void PsService::Drain() {
  draining_ = true;
  engine_->Shutdown();
}

absl::Status PsService::OpenCheckpoints(const std::string& root,
                                        bool await_restore) {
  CHECK(checkpoints_ == nullptr) << "OpenCheckpoints called twice";
  CheckpointStoreOptions o;
  o.root = root;
  checkpoint_root_ = root;
  PLEXUS_ASSIGN_OR_RETURN(checkpoints_, CheckpointStore::Open(engine_.get(), o),
                          absl::StrCat("checkpoints in ", root));
  for (const auto& l : checkpoints_->List()) {
    LOG(INFO) << "checkpoint " << l.checkpoint_id << " (step " << l.step_id
              << ") present in " << root << "/" << l.info.directory;
    // Committed counts too: the coordinator may have published it while
    // this process died before hearing so.
    if (await_restore && !awaiting_restore_ &&
        (l.state == CheckpointState::kPublished ||
         l.state == CheckpointState::kCommitted)) {
      awaiting_restore_ = true;
      LOG(WARNING) << "this shard restarted on a folder with published "
                      "checkpoints: not serving until the coordinator "
                      "restores it (--await_restore=false to serve empty)";
    }
  }
  return absl::OkStatus();
}

absl::Status PsService::CheckServing() const {
  const bool restoring = restoring_.load(std::memory_order_acquire);
  if (!restoring && !awaiting_restore_.load(std::memory_order_acquire)) {
    return absl::OkStatus();
  }
  v1::ErrorInfo info;
  info.set_reason(v1::ErrorInfo::REASON_NOT_SERVING);
  return WithErrorInfo(
      absl::UnavailableError(
          restoring ? "this shard is restoring a checkpoint"
                    : "this shard restarted and waits for the coordinator to "
                      "restore the newest checkpoint"),
      info);
}

absl::Status PsService::CheckCoordinatorEpoch(const v1::RequestHeader& h) {
  absl::MutexLock lock(&mu_);
  if (h.coordinator_epoch() == 0) return absl::OkStatus();
  if (h.coordinator_epoch() < coordinator_epoch_) {
    v1::ErrorInfo info;
    info.set_reason(v1::ErrorInfo::REASON_STALE_COORDINATOR_EPOCH);
    info.set_current_coordinator_epoch(coordinator_epoch_);
    return WithErrorInfo(
        absl::FailedPreconditionError(absl::StrCat(
            "coordinator epoch ", h.coordinator_epoch(),
            " is older than this shard's newest ", coordinator_epoch_)),
        info);
  }
  coordinator_epoch_ = h.coordinator_epoch();
  return absl::OkStatus();
}

absl::StatusOr<CheckpointStore*> PsService::Checkpoints() const {
  if (checkpoints_ == nullptr) {
    return absl::FailedPreconditionError(
        "this shard has no checkpoint store (started without --data_dir)");
  }
  return checkpoints_.get();
}

void PsService::FillHeader(v1::ResponseHeader* h) const {
  absl::MutexLock lock(&mu_);
  h->set_server_incarnation(incarnation_);
  h->set_shard_map_version(router_ ? router_->version() : 0);
  h->set_coordinator_epoch(coordinator_epoch_);
  h->set_server_time_unix_ms(absl::ToUnixMillis(absl::Now()));
}

absl::Status PsService::CheckMapVersion(const v1::RequestHeader& h) const {
  absl::MutexLock lock(&mu_);
  uint64_t current = router_ ? router_->version() : 0;
  if (h.shard_map_version() == 0 || h.shard_map_version() == current) {
    return absl::OkStatus();
  }
  v1::ErrorInfo info;
  info.set_reason(v1::ErrorInfo::REASON_STALE_SHARD_MAP);
  info.set_current_shard_map_version(current);
  return WithErrorInfo(absl::FailedPreconditionError(absl::StrCat(
                           "shard map version ", h.shard_map_version(),
                           " is not this shard's current version ", current)),
                       info);
}

absl::Status PsService::CheckOwnership(
    const std::string& table,
    const google::protobuf::RepeatedField<uint64_t>& ids) const {
  std::shared_ptr<const ShardRouter> router;
  int shard;
  {
    absl::MutexLock lock(&mu_);
    router = router_;
    shard = shard_index_;
  }
  if (router == nullptr || shard < 0) return absl::OkStatus();
  uint64_t th = HashName(table);
  for (uint64_t id : ids) {
    if (router->ShardOfRow(th, id) != static_cast<uint32_t>(shard)) {
      v1::ErrorInfo info;
      info.set_reason(v1::ErrorInfo::REASON_STALE_SHARD_MAP);
      info.set_current_shard_map_version(router->version());
      info.set_resource(table);
      return WithErrorInfo(
          absl::FailedPreconditionError(absl::StrCat(
              "row ", id, " of table ", table, " belongs to shard ",
              router->ShardOfRow(th, id), ", not shard ", shard,
              " (shard map version ", router->version(), ")")),
          info);
    }
  }
  return absl::OkStatus();
}

absl::Status PsService::DoPush(
    const v1::RequestHeader& h, uint32_t push_seq, uint32_t chunk_index,
    uint32_t num_chunks, const RepeatedPtrField<v1::DenseSliceData>& dense,
    const RepeatedPtrField<v1::SparseUpdate>& sparse,
    absl::Span<const absl::string_view> tensors, PushResult* result) {
  PLEXUS_RETURN_IF_ERROR(CheckServing());
  PLEXUS_RETURN_IF_ERROR(CheckMapVersion(h));
  if (!tensors.empty() &&
      tensors.size() != static_cast<size_t>(dense.size() + sparse.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("a push of ", dense.size() + sparse.size(),
                     " tensors with ", tensors.size(), " tensor buffers"));
  }
  size_t next = 0;  // the next of `tensors`
  auto view = [&](const v1::Tensor& t) -> absl::StatusOr<TensorView> {
    PLEXUS_ASSIGN_OR_RETURN(TensorView v, ViewOf(t));
    if (!tensors.empty()) v.data = tensors[next++];
    return v;
  };
  std::vector<DenseGradient> dg;
  dg.reserve(dense.size());
  for (const auto& d : dense) {
    PLEXUS_ASSIGN_OR_RETURN(TensorView v, view(d.tensor()),
                            absl::StrCat("variable ", d.variable()));
    dg.push_back({d.variable(), FromProto(d.rows()), v});
  }
  std::vector<SparseGradient> sg;
  sg.reserve(sparse.size());
  for (const auto& s : sparse) {
    PLEXUS_RETURN_IF_ERROR(CheckOwnership(s.table(), s.ids()));
    PLEXUS_ASSIGN_OR_RETURN(TensorView v, view(s.grads()),
                            absl::StrCat("table ", s.table()));
    sg.push_back(
        {s.table(), absl::MakeConstSpan(s.ids().data(), s.ids().size()), v});
  }
  {
    absl::MutexLock lock(&mu_);
    if (!floor_job_.empty() && h.job_id() == floor_job_ && h.step_id() != 0 &&
        h.step_id() <= floor_step_) {
      Metrics()
          ->GetCounter("plexus_ps_pushes_behind_checkpoint_total",
                       "Late pushes of steps inside the newest checkpoint, "
                       "acknowledged as duplicates and not applied.")
          ->Increment();
      LOG(WARNING) << "push of job " << h.job_id() << " step " << h.step_id()
                   << " (worker " << h.worker_id()
                   << ") is inside the checkpoint at step " << floor_step_
                   << ": duplicate, not applied";
      result->outcome = PushOutcome::kDuplicate;
      return absl::OkStatus();
    }
  }
  PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT("ps.push.before_apply"));
  absl::StatusOr<PushResult> r = engine_->Push(
      PushOptionsOf(h, push_seq, chunk_index, num_chunks), dg, sg);
  CountPush(r);
  if (!r.ok()) return r.status();
  // The update is applied (or known duplicate) but not yet acknowledged.
  PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT("ps.apply.after_write_before_ack"));
  *result = *r;
  return absl::OkStatus();
}

absl::StatusOr<PullResult> PsService::DoPull(
    absl::Time deadline, const v1::RequestHeader& h, v1::DType value_dtype,
    const RepeatedPtrField<v1::DenseSliceRef>& dense,
    const RepeatedPtrField<v1::SparseLookup>& sparse) {
  PLEXUS_RETURN_IF_ERROR(CheckServing());
  PLEXUS_RETURN_IF_ERROR(CheckMapVersion(h));
  PullOptions o;
  o.step_id = h.step_id();
  o.deadline = deadline;
  PLEXUS_ASSIGN_OR_RETURN(o.value_dtype, FromProto(value_dtype));
  std::vector<DenseRead> dr;
  for (const auto& d : dense) dr.push_back({d.variable(), FromProto(d.rows())});
  std::vector<SparseRead> sr;
  for (const auto& s : sparse) {
    PLEXUS_RETURN_IF_ERROR(CheckOwnership(s.table(), s.ids()));
    sr.push_back({s.table(),
                  absl::MakeConstSpan(s.ids().data(), s.ids().size()),
                  s.create_missing()});
  }
  PLEXUS_ASSIGN_OR_RETURN(PullResult r, engine_->Pull(o, dr, sr));
  int64_t bytes = 0;
  for (const auto& d : r.dense) bytes += static_cast<int64_t>(d.data.size());
  for (const auto& s : r.sparse) bytes += static_cast<int64_t>(s.data.size());
  if (bytes > max_message_bytes_ - kHeadroomBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the pull would return ", bytes,
                     " bytes, over this shard's message limit of ",
                     max_message_bytes_, "; split the request"));
  }
  return r;
}

void PsService::FillResponse(PullResult pull,
                             const RepeatedPtrField<v1::SparseLookup>& lookups,
                             RepeatedPtrField<v1::DenseSliceData>* dense,
                             RepeatedPtrField<v1::SparseRows>* sparse,
                             const RepeatedPtrField<v1::DenseSliceRef>& refs) {
  for (size_t i = 0; i < pull.dense.size(); ++i) {
    DenseValues& v = pull.dense[i];
    v1::DenseSliceData* d = dense->Add();
    d->set_variable(refs[static_cast<int>(i)].variable());
    ToProto(v.rows, d->mutable_rows());
    d->mutable_tensor()->mutable_spec()->set_dtype(ToProto(v.dtype));
    for (int64_t s : v.shape) d->mutable_tensor()->mutable_spec()->add_shape(s);
    d->mutable_tensor()->set_data(std::move(v.data));
  }
  for (size_t i = 0; i < pull.sparse.size(); ++i) {
    SparseValues& v = pull.sparse[i];
    const v1::SparseLookup& l = lookups[static_cast<int>(i)];
    v1::SparseRows* s = sparse->Add();
    s->set_table(l.table());
    s->mutable_values()->mutable_spec()->set_dtype(ToProto(v.dtype));
    for (int64_t d : v.shape) s->mutable_values()->mutable_spec()->add_shape(d);
    s->mutable_values()->set_data(std::move(v.data));
    for (uint32_t p : v.missing_positions) s->add_missing_positions(p);
  }
}

grpc::Status PsService::Pull(grpc::ServerContext* ctx,
                             const v1::PullRequest* req,
                             v1::PullResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  return ToGrpcStatus(ServePull(*req, DeadlineOf(ctx), resp));
}

grpc::Status PsService::Push(grpc::ServerContext* ctx,
                             const v1::PushRequest* req,
                             v1::PushResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  return ToGrpcStatus(ServePush(*req, resp));
}

grpc::Status PsService::PushPull(grpc::ServerContext* ctx,
                                 const v1::PushPullRequest* req,
                                 v1::PushPullResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  return ToGrpcStatus(ServePushPull(*req, DeadlineOf(ctx), resp));
}

absl::Status PsService::ServePull(const v1::PullRequest& req,
                                  absl::Time deadline, v1::PullResponse* resp) {
  PLEXUS_ASSIGN_OR_RETURN(PullResult r,
                          DoPull(deadline, req.header(), req.value_dtype(),
                                 req.dense(), req.sparse()));
  FillResponse(std::move(r), req.sparse(), resp->mutable_dense(),
               resp->mutable_sparse(), req.dense());
  FillHeader(resp->mutable_header());
  return absl::OkStatus();
}

absl::Status PsService::ServePush(const v1::PushRequest& req,
                                  v1::PushResponse* resp,
                                  absl::Span<const absl::string_view> tensors) {
  PushResult r;
  PLEXUS_RETURN_IF_ERROR(DoPush(req.header(), req.push_seq(), req.chunk_index(),
                                req.num_chunks(), req.dense(), req.sparse(),
                                tensors, &r));
  SetPushResult(r, resp);
  FillHeader(resp->mutable_header());
  return absl::OkStatus();
}

absl::Status PsService::ServePushPull(
    const v1::PushPullRequest& req, absl::Time deadline,
    v1::PushPullResponse* resp, absl::Span<const absl::string_view> tensors) {
  PushResult r;
  PLEXUS_RETURN_IF_ERROR(DoPush(req.header(), req.push_seq(), req.chunk_index(),
                                req.num_chunks(), req.push_dense(),
                                req.push_sparse(), tensors, &r));
  PLEXUS_ASSIGN_OR_RETURN(PullResult pull,
                          DoPull(deadline, req.header(), req.value_dtype(),
                                 req.pull_dense(), req.pull_sparse()));
  SetPushResult(r, resp);
  FillResponse(std::move(pull), req.pull_sparse(), resp->mutable_dense(),
               resp->mutable_sparse(), req.pull_dense());
  FillHeader(resp->mutable_header());
  return absl::OkStatus();
}

grpc::Status PsService::CreateVariable(grpc::ServerContext* ctx,
                                       const v1::CreateVariableRequest* req,
                                       v1::CreateVariableResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  auto config = FromProto(req->config());
  if (!config.ok()) return ToGrpcStatus(config.status());
  CreateVariableOptions o;
  o.config = *config;
  o.rows = FromProto(req->rows());
  if (req->has_initial_value()) {
    auto v = ViewOf(req->initial_value());
    if (!v.ok()) return ToGrpcStatus(Annotate(v.status(), "initial_value"));
    o.initial_value = *v;
  }
  auto created = engine_->CreateVariable(o);
  if (!created.ok()) return ToGrpcStatus(created.status());
  if (*created) {
    absl::MutexLock lock(&mu_);
    variable_configs_[req->config().name()] = req->config();
    LOG(INFO) << "created variable " << req->config().name() << " rows ["
              << o.rows.begin << ", " << o.rows.end << ")";
  }
  resp->set_created(*created);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::CreateTable(grpc::ServerContext* ctx,
                                    const v1::CreateTableRequest* req,
                                    v1::CreateTableResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  auto config = FromProto(req->config());
  if (!config.ok()) return ToGrpcStatus(config.status());
  CreateTableOptions o;
  o.config = *config;
  auto created = engine_->CreateTable(o);
  if (!created.ok()) return ToGrpcStatus(created.status());
  if (*created) {
    absl::MutexLock lock(&mu_);
    table_configs_[req->config().name()] = req->config();
    LOG(INFO) << "created table " << req->config().name() << " dim "
              << req->config().dim();
  }
  resp->set_created(*created);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

void PsService::FillVariableInfo(const VariableInfo& info,
                                 v1::VariableInfo* out) const {
  absl::MutexLock lock(&mu_);
  auto it = variable_configs_.find(info.config.name);
  if (it != variable_configs_.end()) *out->mutable_config() = it->second;
  ToProto(info.rows, out->mutable_rows());
  out->set_memory_bytes(info.memory_bytes);
  out->set_last_applied_step_id(info.last_applied_step_id);
  out->set_updates_applied(info.updates_applied);
}

void PsService::FillTableInfo(const TableInfo& info, v1::TableInfo* out) const {
  absl::MutexLock lock(&mu_);
  auto it = table_configs_.find(info.config.name);
  if (it != table_configs_.end()) *out->mutable_config() = it->second;
  out->set_rows_in_memory(info.rows_in_memory);
  out->set_memory_bytes(info.memory_bytes);
  out->set_rows_evicted(info.rows_evicted);
  out->set_last_applied_step_id(info.last_applied_step_id);
  out->set_updates_applied(info.updates_applied);
}

grpc::Status PsService::Describe(grpc::ServerContext* ctx,
                                 const v1::DescribeRequest* req,
                                 v1::DescribeResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  if (auto v = engine_->DescribeVariable(req->name()); v.ok()) {
    FillVariableInfo(*v, resp->mutable_variable());
  } else if (auto t = engine_->DescribeTable(req->name()); t.ok()) {
    FillTableInfo(*t, resp->mutable_table());
  } else {
    return ToGrpcStatus(absl::NotFoundError(
        absl::StrCat("no variable or table named '", req->name(), "'")));
  }
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::ListVariables(grpc::ServerContext* ctx,
                                      const v1::ListVariablesRequest* req,
                                      v1::ListVariablesResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  for (const auto& v : engine_->ListVariables()) {
    FillVariableInfo(v, resp->add_variables());
  }
  for (const auto& t : engine_->ListTables())
    FillTableInfo(t, resp->add_tables());
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::DeleteVariable(grpc::ServerContext* ctx,
                                       const v1::DeleteVariableRequest* req,
                                       v1::DeleteVariableResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  absl::Status st = engine_->DeleteVariable(req->name());
  if (!st.ok()) return ToGrpcStatus(st);
  {
    absl::MutexLock lock(&mu_);
    variable_configs_.erase(req->name());
  }
  LOG(INFO) << "deleted variable " << req->name();
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::DeleteTable(grpc::ServerContext* ctx,
                                    const v1::DeleteTableRequest* req,
                                    v1::DeleteTableResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  absl::Status st = engine_->DeleteTable(req->name());
  if (!st.ok()) return ToGrpcStatus(st);
  {
    absl::MutexLock lock(&mu_);
    table_configs_.erase(req->name());
  }
  LOG(INFO) << "deleted table " << req->name();
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::GetShardInfo(grpc::ServerContext* ctx,
                                     const v1::GetShardInfoRequest* req,
                                     v1::GetShardInfoResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  int64_t memory = 0;
  for (const auto& v : engine_->ListVariables()) {
    FillVariableInfo(v, resp->add_variables());
    memory += v.memory_bytes;
  }
  for (const auto& t : engine_->ListTables()) {
    FillTableInfo(t, resp->add_tables());
    memory += t.memory_bytes;
  }
  EngineCounters c = engine_->counters();
  {
    absl::MutexLock lock(&mu_);
    resp->set_shard_index(shard_index_ >= 0 ? shard_index_ : configured_shard_);
    resp->set_restored_checkpoint_id(restored_checkpoint_id_);
    if (router_ != nullptr && shard_index_ >= 0) {
      resp->set_address(router_->map().shards(shard_index_).address());
    }
  }
  resp->set_state(restoring_.load() || awaiting_restore_.load()
                      ? v1::SHARD_STATE_RESTORING
                      : v1::SHARD_STATE_SERVING);
  if (checkpoints_ != nullptr) {
    for (const auto& l : checkpoints_->List()) {
      if (l.state == CheckpointState::kCommitted ||
          l.state == CheckpointState::kPublished) {
        resp->set_last_checkpoint_id(l.checkpoint_id);
        break;
      }
    }
  }
  resp->set_max_message_bytes(max_message_bytes_);
  resp->set_memory_bytes(memory);
  resp->set_duplicate_pushes(c.duplicate_pushes);
  resp->set_rejected_pushes(c.rejected_pushes);
  resp->set_started_unix_ms(started_unix_ms_);
  // The key goes to callers the worker token admits, as Pull does.
  resp->set_data_plane_address(data_plane_address_);
  resp->set_data_plane_key(data_plane_key_);
  resp->mutable_build()->set_version(PLEXUS_VERSION);
  resp->mutable_build()->set_git_commit(PLEXUS_GIT_COMMIT);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::UpdateShardMap(grpc::ServerContext* ctx,
                                       const v1::UpdateShardMapRequest* req,
                                       v1::UpdateShardMapResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  absl::Status st = ValidateShardMap(req->shard_map());
  if (!st.ok()) return ToGrpcStatus(st);
  if (req->shard_index() >= req->shard_map().num_shards()) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("shard_index ", req->shard_index(), " is not in a map of ",
                     req->shard_map().num_shards(), " shards")));
  }
  {
    absl::MutexLock lock(&mu_);
    uint64_t current = router_ ? router_->version() : 0;
    if (req->shard_map().version() < current) {
      return ToGrpcStatus(absl::FailedPreconditionError(
          absl::StrCat("shard map version ", req->shard_map().version(),
                       " is older than the installed version ", current)));
    }
    if (req->shard_map().version() > current ||
        static_cast<int>(req->shard_index()) != shard_index_) {
      router_ = std::make_shared<ShardRouter>(req->shard_map());
      shard_index_ = static_cast<int>(req->shard_index());
      LOG(INFO) << "installed shard map version " << router_->version() << " ("
                << router_->num_shards() << " shards); this is shard "
                << shard_index_;
    }
    coordinator_epoch_ =
        std::max(coordinator_epoch_, req->header().coordinator_epoch());
  }
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::SetFailpoint(grpc::ServerContext* ctx,
                                     const v1::SetFailpointRequest* request,
                                     v1::SetFailpointResponse* response) {
  PLEXUS_AUTHORIZE(ctx);
  FillHeader(response->mutable_header());
  return HandleSetFailpoint(*request, response);
}

grpc::Status PsService::PrepareCheckpoint(
    grpc::ServerContext* ctx, const v1::PrepareCheckpointRequest* req,
    v1::PrepareCheckpointResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  auto store = Checkpoints();
  if (!store.ok()) return ToGrpcStatus(store.status());
  absl::Status st = CheckCoordinatorEpoch(req->header());
  if (!st.ok()) return ToGrpcStatus(st);
  PrepareOptions o;
  o.checkpoint_id = req->checkpoint_id();
  o.step_id = req->step_id();
  o.base_checkpoint_id = req->base_checkpoint_id();
  o.directory = req->directory();
  o.staging_directory = req->staging_directory();
  auto r = (*store)->Prepare(o);
  if (!r.ok()) {
    CheckpointFailed("prepare");
    return ToGrpcStatus(
        Annotate(r.status(), absl::StrCat("checkpoint ", o.checkpoint_id)));
  }
  LOG(INFO) << "checkpoint " << o.checkpoint_id << " at step " << o.step_id
            << ": cut in " << absl::FormatDuration(r->cut_pause) << ", "
            << r->dirty_rows << " rows to write"
            << (r->incremental ? " (incremental)" : "");
  Metrics()
      ->GetHistogram("plexus_ps_checkpoint_cut_pause_seconds",
                     "How long pushes paused for a checkpoint's cut.")
      ->Observe(absl::ToDoubleSeconds(r->cut_pause));
  resp->set_cut_pause_us(absl::ToInt64Microseconds(r->cut_pause));
  resp->set_dirty_rows(r->dirty_rows);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::CommitCheckpoint(grpc::ServerContext* ctx,
                                         const v1::CommitCheckpointRequest* req,
                                         v1::CommitCheckpointResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  auto store = Checkpoints();
  if (!store.ok()) return ToGrpcStatus(store.status());
  if (req->timeout_ms() < 0) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("timeout_ms must be >= 0, got ", req->timeout_ms())));
  }
  absl::Status st = CheckCoordinatorEpoch(req->header());
  if (!st.ok()) return ToGrpcStatus(st);
  absl::Duration timeout = req->timeout_ms() > 0
                               ? absl::Milliseconds(req->timeout_ms())
                               : DeadlineOf(ctx) - absl::Now();
  auto r = (*store)->Commit(req->checkpoint_id(), timeout);
  if (!r.ok()) {
    CheckpointFailed("commit");
    LOG(WARNING) << "checkpoint " << req->checkpoint_id()
                 << " failed: " << r.status();
    return ToGrpcStatus(Annotate(
        r.status(), absl::StrCat("checkpoint ", req->checkpoint_id())));
  }
  if (absl::Status fp =
          PLEXUS_FAILPOINT("ps.checkpoint.after_commit_before_reply");
      !fp.ok()) {
    return ToGrpcStatus(fp);
  }
  uint32_t shard;
  {
    absl::MutexLock lock(&mu_);
    shard = static_cast<uint32_t>(shard_index_ >= 0 ? shard_index_
                                                    : configured_shard_);
  }
  ToProto(r->info, shard, incarnation_, resp->mutable_shard_checkpoint());
  resp->set_write_ms(absl::ToInt64Milliseconds(r->write_time));
  RecordCheckpointCommitted(r->write_time, r->info.new_bytes);
  LOG(INFO) << "checkpoint " << req->checkpoint_id() << " committed in "
            << r->info.directory << ": " << r->info.files.size() << " files, "
            << r->info.total_bytes << " bytes (" << r->info.new_bytes
            << " new), written in " << absl::FormatDuration(r->write_time);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::FinalizeCheckpoint(
    grpc::ServerContext* ctx, const v1::FinalizeCheckpointRequest* req,
    v1::FinalizeCheckpointResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  auto store = Checkpoints();
  if (!store.ok()) return ToGrpcStatus(store.status());
  absl::Status st = CheckCoordinatorEpoch(req->header());
  if (!st.ok()) return ToGrpcStatus(st);
  // A checkpoint this shard was told is published is never abandoned (a
  // coordinator that lost its manifests must not delete the shards' too).
  if (!req->published()) {
    for (const auto& l : (*store)->List()) {
      if (l.checkpoint_id == req->checkpoint_id() &&
          l.state == CheckpointState::kPublished) {
        return ToGrpcStatus(absl::FailedPreconditionError(
            absl::StrCat("checkpoint ", req->checkpoint_id(),
                         " is published; it is not abandoned")));
      }
    }
  }
  // Raise the floor before the store trims the record of applied pushes,
  // so no late push slips between the two.
  if (req->published() && !req->header().job_id().empty()) {
    for (const auto& l : (*store)->List()) {
      if (l.checkpoint_id != req->checkpoint_id() ||
          l.state == CheckpointState::kAborted) {
        continue;
      }
      absl::MutexLock lock(&mu_);
      if (floor_job_ != req->header().job_id() || floor_step_ < l.step_id) {
        floor_job_ = req->header().job_id();
        floor_step_ = l.step_id;
      }
    }
  }
  auto r = (*store)->Finalize(req->checkpoint_id(), req->published(),
                              req->keep_last());
  if (!r.ok()) {
    return ToGrpcStatus(Annotate(
        r.status(), absl::StrCat("checkpoint ", req->checkpoint_id())));
  }
  LOG(INFO) << "checkpoint " << req->checkpoint_id()
            << (req->published() ? " published" : " abandoned") << "; "
            << r->size() << " old checkpoint(s) deleted";
  if (!req->published() && awaiting_restore_.load()) {
    // The coordinator abandons what it never published: with no committed
    // or published checkpoint left there is nothing to wait for.
    bool left = false;
    for (const auto& l : (*store)->List()) {
      left = left || l.state == CheckpointState::kCommitted ||
             l.state == CheckpointState::kPublished;
    }
    if (!left) {
      LOG(WARNING) << "no checkpoint left to restore (none was published): "
                      "serving the empty state";
      std::function<void(bool)> set_serving;
      {
        absl::MutexLock lock(&mu_);
        awaiting_restore_ = false;
        set_serving = set_serving_;
      }
      if (set_serving && !draining_ && !restoring_.load()) set_serving(true);
    }
  }
  for (uint64_t id : *r) resp->add_deleted_checkpoint_ids(id);
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

absl::StatusOr<RestoreResult> PsService::DoRestore(
    const v1::RestoreRequest& req) {
  PLEXUS_ASSIGN_OR_RETURN(CheckpointStore * store, Checkpoints());
  PLEXUS_RETURN_IF_ERROR(CheckCoordinatorEpoch(req.header()));
  v1::CheckpointManifest manifest;
  switch (req.source_case()) {
    case v1::RestoreRequest::kManifest:
      manifest = req.manifest();
      break;
    case v1::RestoreRequest::kManifestPath: {
      // Only files under the checkpoint root may be read.
      if (!IsSafeRelativePath(req.manifest_path())) {
        return absl::InvalidArgumentError(
            absl::StrCat("manifest_path '", req.manifest_path(),
                         "' is not a relative path under the checkpoint root"));
      }
      const std::string path = checkpoint_root_ + "/" + req.manifest_path();
      std::ifstream in(path, std::ios::binary);
      if (!in) {
        return absl::NotFoundError(absl::StrCat("no manifest file ", path));
      }
      std::stringstream bytes;
      bytes << in.rdbuf();
      if (!manifest.ParseFromString(bytes.str())) {
        return absl::DataLossError(
            absl::StrCat("manifest file ", path, " does not parse"));
      }
      break;
    }
    case v1::RestoreRequest::SOURCE_NOT_SET:
      return absl::InvalidArgumentError("restore: no manifest given");
  }
  if (manifest.checkpoint_id() == 0) {
    return absl::InvalidArgumentError("restore: manifest checkpoint_id is 0");
  }
  const v1::ShardCheckpoint* mine = nullptr;
  for (const auto& s : manifest.shards()) {
    if (s.shard_index() == req.shard_index()) mine = &s;
  }
  if (mine == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", manifest.checkpoint_id(),
                     " has no entry for shard ", req.shard_index()));
  }
  RestoreOptions o;
  o.checkpoint_id = manifest.checkpoint_id();
  o.directory = mine->directory();
  if (o.directory.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", o.checkpoint_id, ": shard ",
                     req.shard_index(), " has no directory"));
  }
  for (const auto& f : mine->files()) {
    if (!IsSafeRelativePath(f.path())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint file path '", f.path(),
          "' is not a relative path inside the checkpoint directory"));
    }
    o.files.push_back({f.path(), f.size_bytes(), f.crc32c()});
  }
  if (o.files.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", o.checkpoint_id, ": shard ",
                     req.shard_index(), " lists no files"));
  }
  o.skip_checksum_verification = req.skip_checksum_verification();
  bool expected = false;
  if (!restoring_.compare_exchange_strong(expected, true)) {
    return absl::FailedPreconditionError("a restore is already running");
  }
  std::function<void(bool)> set_serving;
  {
    absl::MutexLock lock(&mu_);
    set_serving = set_serving_;
  }
  if (set_serving) set_serving(false);
  absl::StatusOr<RestoreResult> r = store->Restore(o);
  if (r.ok()) {
    ResyncConfigs();
    absl::MutexLock lock(&mu_);
    restored_checkpoint_id_ = r->checkpoint_id;
    awaiting_restore_ = false;
    // The steps after C run again; the ones up to C are in the state.
    floor_job_ = manifest.job_id();
    floor_step_ = r->step_id;
  }
  restoring_.store(false, std::memory_order_release);
  if (set_serving && !draining_ && !awaiting_restore_) set_serving(true);
  if (!r.ok()) {
    return WithChecksumInfo(Annotate(
        r.status(), absl::StrCat("restore checkpoint ", o.checkpoint_id)));
  }
  return r;
}

void PsService::ResyncConfigs() {
  std::vector<VariableInfo> vars = engine_->ListVariables();
  std::vector<TableInfo> tables = engine_->ListTables();
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<std::string, v1::VariableConfig> vc;
  for (const auto& v : vars) {
    auto it = variable_configs_.find(v.config.name);
    auto known = it == variable_configs_.end()
                     ? absl::StatusOr<VariableConfig>(absl::NotFoundError(""))
                     : FromProto(it->second);
    if (known.ok() && *known == v.config) {
      vc[v.config.name] = it->second;
    } else {
      ToProto(v.config, &vc[v.config.name]);
    }
  }
  absl::flat_hash_map<std::string, v1::TableConfig> tc;
  for (const auto& t : tables) {
    auto it = table_configs_.find(t.config.name);
    auto known = it == table_configs_.end()
                     ? absl::StatusOr<TableConfig>(absl::NotFoundError(""))
                     : FromProto(it->second);
    if (known.ok() && *known == t.config) {
      tc[t.config.name] = it->second;
    } else {
      ToProto(t.config, &tc[t.config.name]);
    }
  }
  variable_configs_ = std::move(vc);
  table_configs_ = std::move(tc);
}

grpc::Status PsService::Restore(grpc::ServerContext* ctx,
                                const v1::RestoreRequest* req,
                                v1::RestoreResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  const absl::Time start = absl::Now();
  auto r = DoRestore(*req);
  if (!r.ok()) {
    LOG(WARNING) << r.status();
    return ToGrpcStatus(r.status());
  }
  LOG(INFO) << "restored checkpoint " << r->checkpoint_id << " (step "
            << r->step_id << ", " << r->num_rows << " rows): verified in "
            << absl::FormatDuration(r->verify_time) << ", loaded in "
            << absl::FormatDuration(r->load_time);
  resp->set_checkpoint_id(r->checkpoint_id);
  resp->set_step_id(r->step_id);
  resp->set_restore_ms(absl::ToInt64Milliseconds(absl::Now() - start));
  Metrics()
      ->GetHistogram("plexus_ps_restore_duration_seconds",
                     "Time to verify and load a checkpoint on this shard.")
      ->Observe(absl::ToDoubleSeconds(absl::Now() - start));
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

grpc::Status PsService::ListCheckpoints(
    grpc::ServerContext* ctx, const v1::ListShardCheckpointsRequest* req,
    v1::ListShardCheckpointsResponse* resp) {
  PLEXUS_AUTHORIZE(ctx);
  auto store = Checkpoints();
  if (!store.ok()) return ToGrpcStatus(store.status());
  uint32_t shard;
  {
    absl::MutexLock lock(&mu_);
    shard = static_cast<uint32_t>(shard_index_ >= 0 ? shard_index_
                                                    : configured_shard_);
  }
  for (const auto& l : (*store)->List()) {
    v1::ShardCheckpointInfo* c = resp->add_checkpoints();
    c->set_checkpoint_id(l.checkpoint_id);
    c->set_step_id(l.step_id);
    c->set_state(ToProto(l.state));
    // The writer's incarnation is only in the manifest: 0 (unknown) here.
    ToProto(l.info, shard, 0, c->mutable_shard_checkpoint());
  }
  FillHeader(resp->mutable_header());
  return grpc::Status::OK;
}

void PsService::CollectMetrics() {
  for (const auto& t : engine_->ListTables()) {
    Labels l = {{"table", t.config.name}};
    Metrics()
        ->GetGauge("plexus_ps_table_rows", "Rows in memory per table.", l)
        ->Set(static_cast<double>(t.rows_in_memory));
    Metrics()
        ->GetGauge("plexus_ps_table_memory_bytes",
                   "Memory per table: values, slots, bookkeeping.", l)
        ->Set(static_cast<double>(t.memory_bytes));
    Metrics()
        ->GetGauge("plexus_ps_table_last_applied_step",
                   "Highest training step whose update a table applied.", l)
        ->Set(static_cast<double>(t.last_applied_step_id));
  }
  for (const auto& v : engine_->ListVariables()) {
    Metrics()
        ->GetGauge("plexus_ps_variable_memory_bytes",
                   "Memory per dense variable slice: values and slots.",
                   {{"variable", v.config.name}})
        ->Set(static_cast<double>(v.memory_bytes));
    Metrics()
        ->GetGauge("plexus_ps_variable_last_applied_step",
                   "Highest training step whose update a dense variable "
                   "slice applied.",
                   {{"variable", v.config.name}})
        ->Set(static_cast<double>(v.last_applied_step_id));
  }
  // Every outcome exists from the first scrape (at 0), so that rates and
  // increases of duplicates work before the first one happens.
  for (const char* outcome : {"applied", "duplicate", "aggregated"}) {
    Metrics()->GetCounter("plexus_ps_pushes_total",
                          "Pushes acknowledged, by outcome.",
                          {{"outcome", outcome}});
  }
  EngineCounters c = engine_->counters();
  Metrics()
      ->GetGauge("plexus_ps_applied_keys",
                 "Update keys held by the exactly-once record.")
      ->Set(static_cast<double>(c.applied_keys));
}

}  // namespace plexus::ps
