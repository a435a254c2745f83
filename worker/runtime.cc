#include "plexus/worker/runtime.h"

#include <grpcpp/grpcpp.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <thread>

#include <glog/logging.h>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/auth.h"
#include "common/error_info.h"
#include "common/failpoint.h"
#include "common/grpc_status.h"
#include "common/status.h"
#include "common/tls.h"
#include "plexus/v1/coordinator.grpc.pb.h"
#include "plexus/worker/ps_client.h"

namespace plexus::worker {

absl::Status StepRegistry::Register(const std::string& name, StepFn fn) {
  if (name.empty() || !fn) {
    return absl::InvalidArgumentError("a step needs a name and a function");
  }
  if (!steps_.emplace(name, std::move(fn)).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("step function ", name, " is already registered"));
  }
  return absl::OkStatus();
}

const StepFn* StepRegistry::Find(absl::string_view name) const {
  auto it = steps_.find(name);
  return it == steps_.end() ? nullptr : &it->second;
}

std::vector<std::string> StepRegistry::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, fn] : steps_) out.push_back(name);
  return out;
}

namespace {

bool IsStale(const absl::Status& s) {
  if (s.code() != absl::StatusCode::kFailedPrecondition) return false;
  std::optional<v1::ErrorInfo> info = GetErrorInfo(s);
  return info.has_value() &&
         info->reason() == v1::ErrorInfo::REASON_STALE_INCARNATION;
}

absl::Status StaleError(uint64_t incarnation) {
  v1::ErrorInfo info;
  info.set_reason(v1::ErrorInfo::REASON_STALE_INCARNATION);
  return WithErrorInfo(
      absl::FailedPreconditionError(
          absl::StrCat("incarnation ", incarnation,
                       " of this worker was fenced out by the coordinator")),
      info);
}

class RuntimeImpl;

// The PsClient a step sees: fills in the closure's ids and push_seq, and
// refuses pushes from a fenced incarnation (see runtime.h).
class StepPsClient final : public PsClient {
 public:
  StepPsClient(RuntimeImpl* rt, PsClient* inner, uint64_t incarnation,
               uint64_t step_id, uint64_t closure_id)
      : rt_(rt),
        inner_(inner),
        incarnation_(incarnation),
        step_id_(step_id),
        closure_id_(closure_id) {}

  absl::Status CreateTable(const v1::TableConfig& config) override {
    return inner_->CreateTable(config);
  }
  absl::Status CreateVariable(const v1::VariableConfig& config,
                              absl::Span<const float> initial) override {
    return inner_->CreateVariable(config, initial);
  }
  absl::Status PullSparse(const std::string& table,
                          absl::Span<const uint64_t> ids, int64_t dim,
                          absl::Span<float> out,
                          const StepOptions& step) override {
    return inner_->PullSparse(table, ids, dim, out, ForPull(step));
  }
  absl::StatusOr<PushResult> PushSparse(const std::string& table,
                                        absl::Span<const uint64_t> ids,
                                        int64_t dim,
                                        absl::Span<const float> grads,
                                        const StepOptions& step) override;
  absl::Status PullDense(const std::string& variable, absl::Span<float> out,
                         const StepOptions& step) override {
    return inner_->PullDense(variable, out, ForPull(step));
  }
  absl::StatusOr<PushResult> PushDense(const std::string& variable,
                                       absl::Span<const float> grads,
                                       const StepOptions& step) override;
  absl::StatusOr<PushResult> PushPullDense(const std::string& variable,
                                           absl::Span<const float> grads,
                                           absl::Span<float> out,
                                           const StepOptions& step) override;
  std::unique_ptr<PsFuture> PullSparseAsync(const std::string& table,
                                            absl::Span<const uint64_t> ids,
                                            int64_t dim, absl::Span<float> out,
                                            const StepOptions& step) override {
    return inner_->PullSparseAsync(table, ids, dim, out, ForPull(step));
  }
  std::unique_ptr<PsFuture> PushSparseAsync(const std::string& table,
                                            absl::Span<const uint64_t> ids,
                                            int64_t dim,
                                            absl::Span<const float> grads,
                                            const StepOptions& step) override;
  v1::ShardMap shard_map() const override { return inner_->shard_map(); }
  absl::StatusOr<std::vector<v1::GetShardInfoResponse>> ShardInfo() override {
    return inner_->ShardInfo();
  }

 private:
  StepOptions ForPull(const StepOptions& step) const {
    if (step.step_id != 0 || step.closure_id != 0) return step;
    return {.step_id = step_id_, .closure_id = closure_id_, .push_seq = 0};
  }
  StepOptions ForPush(const StepOptions& step) {
    if (step.step_id != 0 || step.closure_id != 0) return step;
    return {.step_id = step_id_,
            .closure_id = closure_id_,
            .push_seq = next_push_seq_.fetch_add(1)};
  }

  RuntimeImpl* const rt_;
  PsClient* const inner_;
  const uint64_t incarnation_;
  const uint64_t step_id_;
  const uint64_t closure_id_;
  std::atomic<uint32_t> next_push_seq_{0};
};

class PushFailed final : public PsFuture {
 public:
  explicit PushFailed(absl::Status s) : s_(std::move(s)) {}
  absl::Status Wait(absl::Time) override { return s_; }
  absl::Status Wait() override { return s_; }

 private:
  absl::Status s_;
};

class StepContextImpl final : public StepContext {
 public:
  StepContextImpl(const v1::Task& task, uint64_t worker_id,
                  uint64_t incarnation, PsClient* ps,
                  const std::atomic<bool>* cancelled)
      : task_(task),
        worker_id_(worker_id),
        incarnation_(incarnation),
        ps_(ps),
        cancelled_(cancelled) {}
  uint64_t step_id() const override { return task_.step_id(); }
  uint64_t closure_id() const override { return task_.closure_id(); }
  uint32_t attempt() const override { return task_.attempt(); }
  const std::string& job_id() const override { return task_.job_id(); }
  uint64_t worker_id() const override { return worker_id_; }
  uint64_t incarnation() const override { return incarnation_; }
  PsClient* ps() override { return ps_; }
  bool cancelled() const override { return cancelled_->load(); }

 private:
  const v1::Task& task_;
  const uint64_t worker_id_;
  const uint64_t incarnation_;
  PsClient* const ps_;
  const std::atomic<bool>* const cancelled_;
};

class RuntimeImpl final : public Runtime {
 public:
  explicit RuntimeImpl(RuntimeOptions options) : options_(std::move(options)) {}
  ~RuntimeImpl() override { StopThreads(); }

  absl::Status Init() {
    if (options_.handle_sigterm) {
      sigset_t set;
      sigemptyset(&set);
      sigaddset(&set, SIGTERM);
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
    }
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 64 << 20);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    PLEXUS_ASSIGN_OR_RETURN(
        std::shared_ptr<grpc::ChannelCredentials> credentials,
        MakeChannelCredentials({.ca_file = options_.tls_ca_file,
                                .cert_file = options_.tls_cert_file,
                                .key_file = options_.tls_key_file}),
        "TLS to the coordinator");
    PLEXUS_ASSIGN_OR_RETURN(token_, ClientToken(options_.token),
                            "worker token");
    channel_ = grpc::experimental::CreateCustomChannelWithInterceptors(
        options_.coordinator, credentials, args, TokenInterceptors(token_));
    stub_ = v1::Coordinator::NewStub(channel_);
    return absl::OkStatus();
  }

  absl::Status RegisterStep(const std::string& name, StepFn fn) override {
    return registry_.Register(name, std::move(fn));
  }

  void Stop() override { BeginDrain(/*exit_code=*/-1, "Stop() called"); }

  int exit_code() const override {
    absl::MutexLock lock(&mu_);
    return exit_code_;
  }
  uint64_t worker_id() const override {
    absl::MutexLock lock(&mu_);
    return worker_id_;
  }
  uint64_t incarnation() const override {
    absl::MutexLock lock(&mu_);
    return incarnation_;
  }

  absl::Status Run() override;

  absl::Status RendezvousSet(const std::string& group, uint64_t group_epoch,
                             const std::string& key,
                             const std::string& value) override {
    v1::RendezvousSetRequest req;
    PLEXUS_RETURN_IF_ERROR(FillHeader(req.mutable_header()));
    req.set_group(group);
    req.set_group_epoch(group_epoch);
    req.mutable_entry()->set_key(key);
    req.mutable_entry()->set_value(value);
    v1::RendezvousSetResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    return FromGrpcStatus(stub_->RendezvousSet(&ctx, req, &resp));
  }

  absl::StatusOr<std::string> RendezvousGet(const std::string& group,
                                            uint64_t group_epoch,
                                            const std::string& key) override {
    v1::RendezvousGetRequest req;
    PLEXUS_RETURN_IF_ERROR(FillHeader(req.mutable_header()));
    req.set_group(group);
    req.set_group_epoch(group_epoch);
    req.set_key(key);
    v1::RendezvousGetResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    PLEXUS_RETURN_IF_ERROR(
        FromGrpcStatus(stub_->RendezvousGet(&ctx, req, &resp)));
    return std::string(resp.entry().value());
  }

  absl::StatusOr<std::vector<std::string>> RendezvousWait(
      const std::string& group, uint64_t group_epoch,
      const std::vector<std::string>& keys, absl::Time deadline) override {
    v1::RendezvousWaitRequest req;
    PLEXUS_RETURN_IF_ERROR(FillHeader(req.mutable_header()));
    req.set_group(group);
    req.set_group_epoch(group_epoch);
    for (const std::string& k : keys) req.add_keys(k);
    req.set_timeout_ms(std::max<int64_t>(
        1, absl::ToInt64Milliseconds(deadline - absl::Now())));
    v1::RendezvousWaitResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline + absl::Seconds(5)));
    PLEXUS_RETURN_IF_ERROR(
        FromGrpcStatus(stub_->RendezvousWait(&ctx, req, &resp)));
    std::vector<std::string> out;
    for (const v1::KeyValue& kv : resp.entries()) out.push_back(kv.value());
    return out;
  }

  absl::StatusOr<v1::GroupInfo> JoinGroup(const std::string& group,
                                          uint32_t size, bool has_gpu,
                                          absl::Time deadline) override {
    v1::JoinGroupRequest req;
    PLEXUS_RETURN_IF_ERROR(FillHeader(req.mutable_header()));
    req.set_group(group);
    req.set_size(size);
    req.set_has_gpu(has_gpu);
    req.set_timeout_ms(std::max<int64_t>(
        1, absl::ToInt64Milliseconds(deadline - absl::Now())));
    v1::JoinGroupResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(deadline + absl::Seconds(5)));
    PLEXUS_RETURN_IF_ERROR(FromGrpcStatus(stub_->JoinGroup(&ctx, req, &resp)));
    return resp.group();
  }

  absl::StatusOr<v1::GroupInfo> BumpGroupEpoch(
      const std::string& group, uint64_t expected_epoch, int failed_rank,
      const std::string& reason) override {
    v1::BumpGroupEpochRequest req;
    PLEXUS_RETURN_IF_ERROR(FillHeader(req.mutable_header()));
    req.set_group(group);
    req.set_expected_epoch(expected_epoch);
    req.set_failed_rank(failed_rank);
    req.set_reason(reason);
    v1::BumpGroupEpochResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
    PLEXUS_RETURN_IF_ERROR(
        FromGrpcStatus(stub_->BumpGroupEpoch(&ctx, req, &resp)));
    return resp.group();
  }

  void OnReformGroup(
      std::function<void(const v1::ReformGroupCommand&)> fn) override {
    on_reform_ = std::move(fn);
  }

  // For StepPsClient: OK while `incarnation` may write (see runtime.h).
  absl::Status CheckLease(uint64_t incarnation) {
    absl::MutexLock lock(&mu_);
    absl::Time deadline = absl::Now() + options_.rpc_timeout;
    while (true) {
      if (fenced_incarnation_ >= incarnation || incarnation_ != incarnation) {
        return StaleError(incarnation);
      }
      if (absl::Now() < lease_until_) return absl::OkStatus();
      if (absl::Now() >= deadline) {
        return absl::UnavailableError(
            "no heartbeat acknowledged by the coordinator within the lease; "
            "not writing to the PS until it answers");
      }
      cv_.WaitWithDeadline(&mu_, deadline);
    }
  }

 private:
  void BeginDrain(int exit_code, const std::string& why) {
    absl::MutexLock lock(&mu_);
    if (draining_) return;
    LOG(INFO) << "worker: draining (" << why << ")";
    draining_ = true;
    if (exit_code >= 0) exit_code_ = exit_code;
    drain_started_ = absl::Now();
    if (next_task_ctx_ != nullptr) next_task_ctx_->TryCancel();
    cv_.SignalAll();
  }

  void StopThreads() {
    {
      absl::MutexLock lock(&mu_);
      stop_threads_ = true;
      if (hb_ctx_ != nullptr) hb_ctx_->TryCancel();
      cv_.SignalAll();
    }
    if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
    if (signal_thread_.joinable()) {
      pthread_kill(signal_thread_.native_handle(), SIGUSR2);
      signal_thread_.join();
    }
    if (grace_thread_.joinable()) grace_thread_.join();
  }

  void SignalLoop() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGTERM) {
        BeginDrain(143, "SIGTERM");
      }
      absl::MutexLock lock(&mu_);
      if (stop_threads_) return;
    }
  }

  // Waits (interruptibly by a drain or stop) up to `d`.
  void Pause(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    absl::Time until = absl::Now() + d;
    while (!draining_ && !stop_threads_ && absl::Now() < until) {
      cv_.WaitWithDeadline(&mu_, until);
    }
  }

  // The current identity, or FAILED_PRECONDITION before registration.
  absl::Status FillHeader(v1::RequestHeader* h) const {
    absl::MutexLock lock(&mu_);
    if (worker_id_ == 0) {
      return absl::FailedPreconditionError(
          "the worker is not registered yet (call Run first)");
    }
    *h = Header();
    return absl::OkStatus();
  }

  v1::RequestHeader Header() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::RequestHeader h;
    h.set_worker_id(worker_id_);
    h.set_worker_incarnation(incarnation_);
    h.set_coordinator_epoch(epoch_);
    h.set_sent_unix_ms(absl::ToUnixMillis(absl::Now()));
    return h;
  }

  absl::Status DoRegister();
  // The PS client for `job_id` (connected on first use); null without
  // shards. UNAVAILABLE when the shards cannot be reached.
  absl::StatusOr<PsClient*> PsClientFor(const std::string& job_id,
                                        uint64_t worker_id,
                                        uint64_t incarnation);
  void HeartbeatLoop();
  absl::Status RunTask(const v1::Task& task);
  absl::Status Report(const v1::ReportResultRequest& req);

  const RuntimeOptions options_;
  // options_.token or the one from the flags / environment; set by Init().
  std::string token_;
  StepRegistry registry_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Coordinator::Stub> stub_;
  std::thread heartbeat_thread_;
  std::thread signal_thread_;
  std::thread grace_thread_;
  std::atomic<bool> step_cancelled_{false};
  // Set before Run; called on the heartbeat thread.
  std::function<void(const v1::ReformGroupCommand&)> on_reform_;

  mutable absl::Mutex mu_;
  absl::CondVar cv_;
  uint64_t worker_id_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t incarnation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t epoch_ ABSL_GUARDED_BY(mu_) = 0;
  // The newest incarnation the coordinator refused (0: none).
  uint64_t fenced_incarnation_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time lease_until_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Duration heartbeat_interval_ ABSL_GUARDED_BY(mu_) = absl::Seconds(1);
  absl::Duration suspect_timeout_ ABSL_GUARDED_BY(mu_) = absl::Seconds(5);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time drain_started_ ABSL_GUARDED_BY(mu_);
  bool stop_threads_ ABSL_GUARDED_BY(mu_) = false;
  int exit_code_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::ClientContext* next_task_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  grpc::ClientContext* hb_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Progress for heartbeats.
  uint64_t last_finished_step_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t current_closure_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t current_step_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t closures_finished_ ABSL_GUARDED_BY(mu_) = 0;
  bool left_ ABSL_GUARDED_BY(mu_) = false;
  bool left_sent_ ABSL_GUARDED_BY(mu_) = false;
  // PS clients of the current incarnation, one per job (the job id is part
  // of the PS's exactly-once key, so every attempt of a closure must send
  // the same one). Used by the task-loop thread only.
  std::map<std::string, std::unique_ptr<PsClient>> ps_clients_;
};

absl::StatusOr<PushResult> StepPsClient::PushSparse(
    const std::string& table, absl::Span<const uint64_t> ids, int64_t dim,
    absl::Span<const float> grads, const StepOptions& step) {
  StepOptions o = ForPush(step);
  if (absl::Status st = rt_->CheckLease(incarnation_); !st.ok()) return st;
  return inner_->PushSparse(table, ids, dim, grads, o);
}

absl::StatusOr<PushResult> StepPsClient::PushDense(
    const std::string& variable, absl::Span<const float> grads,
    const StepOptions& step) {
  StepOptions o = ForPush(step);
  if (absl::Status st = rt_->CheckLease(incarnation_); !st.ok()) return st;
  return inner_->PushDense(variable, grads, o);
}

absl::StatusOr<PushResult> StepPsClient::PushPullDense(
    const std::string& variable, absl::Span<const float> grads,
    absl::Span<float> out, const StepOptions& step) {
  StepOptions o = ForPush(step);
  if (absl::Status st = rt_->CheckLease(incarnation_); !st.ok()) return st;
  return inner_->PushPullDense(variable, grads, out, o);
}

std::unique_ptr<PsFuture> StepPsClient::PushSparseAsync(
    const std::string& table, absl::Span<const uint64_t> ids, int64_t dim,
    absl::Span<const float> grads, const StepOptions& step) {
  StepOptions o = ForPush(step);
  if (absl::Status st = rt_->CheckLease(incarnation_); !st.ok()) {
    return std::make_unique<PushFailed>(st);
  }
  return inner_->PushSparseAsync(table, ids, dim, grads, o);
}

absl::StatusOr<PsClient*> RuntimeImpl::PsClientFor(const std::string& job_id,
                                                   uint64_t worker_id,
                                                   uint64_t incarnation) {
  if (options_.ps_shards.empty()) return nullptr;
  auto it = ps_clients_.find(job_id);
  if (it != ps_clients_.end()) return it->second.get();
  PsClientOptions po;
  po.shards = options_.ps_shards;
  po.token = token_;
  po.tls_ca_file = options_.tls_ca_file;
  po.tls_cert_file = options_.tls_cert_file;
  po.tls_key_file = options_.tls_key_file;
  CallerIdentity id{.job_id = job_id,
                    .coordinator_epoch = 0,
                    .worker_id = worker_id,
                    .worker_incarnation = incarnation};
  absl::StatusOr<std::unique_ptr<PsClient>> c = PsClient::Connect(po, id);
  if (!c.ok()) {
    return absl::UnavailableError(
        absl::StrCat("connecting to the PS: ", c.status().message()));
  }
  return ps_clients_.emplace(job_id, std::move(*c)).first->second.get();
}

absl::Status RuntimeImpl::DoRegister() {
  absl::Duration backoff = absl::Milliseconds(50);
  absl::Time deadline = absl::Now() + options_.rpc_timeout;
  while (true) {
    v1::RegisterRequest req;
    uint64_t previous;
    {
      absl::MutexLock lock(&mu_);
      if (draining_) return absl::CancelledError("draining");
      previous = worker_id_;
      *req.mutable_header() = Header();
    }
    req.set_role(v1::ROLE_WORKER);
    req.set_task_index(options_.task_index);
    char host[256] = {0};
    gethostname(host, sizeof(host) - 1);
    req.set_hostname(host);
    req.set_pid(getpid());
    req.set_previous_worker_id(options_.task_index < 0 ? previous : 0);
    for (const std::string& n : registry_.Names()) {
      req.mutable_capabilities()->add_step_functions(n);
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::RegisterResponse resp;
    absl::Status st = FromGrpcStatus(stub_->Register(&ctx, req, &resp));
    if (st.ok()) {
      // PS clients carry the identity: the new incarnation needs new ones.
      ps_clients_.clear();
      absl::MutexLock lock(&mu_);
      worker_id_ = resp.worker_id();
      incarnation_ = resp.incarnation();
      epoch_ = resp.coordinator_epoch();
      heartbeat_interval_ = absl::Milliseconds(
          std::max<int64_t>(1, resp.heartbeat_interval_ms()));
      suspect_timeout_ =
          absl::Milliseconds(std::max<int64_t>(1, resp.suspect_timeout_ms()));
      // Registration proves liveness as a heartbeat does.
      lease_until_ = absl::Now() + suspect_timeout_;
      if (hb_ctx_ != nullptr) hb_ctx_->TryCancel();  // new stream, new id
      cv_.SignalAll();
      LOG(INFO) << "worker: registered as worker id " << worker_id_
                << " incarnation " << incarnation_ << " (epoch " << epoch_
                << ")";
      return absl::OkStatus();
    }
    if (st.code() != absl::StatusCode::kUnavailable &&
        st.code() != absl::StatusCode::kDeadlineExceeded) {
      return st;
    }
    if (absl::Now() >= deadline) return st;
    Pause(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

void RuntimeImpl::HeartbeatLoop() {
  absl::Duration backoff = absl::Milliseconds(50);
  uint64_t seq = 0;
  while (true) {
    uint64_t id, inc;
    {
      absl::MutexLock lock(&mu_);
      if (stop_threads_) return;
      id = worker_id_;
      inc = incarnation_;
      if (id == 0 || fenced_incarnation_ >= inc) {
        cv_.Wait(&mu_);
        continue;
      }
    }
    // Kick the channel out of IDLE (after a coordinator restart) before
    // opening the stream, so the stream does not queue behind a channel
    // that nobody asks to connect.
    channel_->WaitForConnected(
        absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      hb_ctx_ = &ctx;
    }
    auto stream = stub_->Heartbeat(&ctx);
    bool acked_any = false;
    while (true) {
      v1::HeartbeatRequest req;
      absl::Duration interval;
      bool left;
      {
        absl::MutexLock lock(&mu_);
        if (stop_threads_ || incarnation_ != inc) break;
        *req.mutable_header() = Header();
        left = left_;
        req.set_state(left                    ? v1::PROCESS_STATE_LEFT
                      : draining_             ? v1::PROCESS_STATE_DRAINING
                      : current_closure_ != 0 ? v1::PROCESS_STATE_BUSY
                                              : v1::PROCESS_STATE_IDLE);
        req.set_last_finished_step_id(last_finished_step_);
        req.set_current_closure_id(current_closure_);
        req.set_current_step_id(current_step_);
        req.set_closures_finished(closures_finished_);
        interval = heartbeat_interval_;
      }
      req.set_seq(++seq);
      absl::Time sent = absl::Now();
      if (!stream->Write(req)) break;
      v1::HeartbeatResponse resp;
      if (!stream->Read(&resp)) break;
      acked_any = true;
      backoff = absl::Milliseconds(50);
      {
        absl::MutexLock lock(&mu_);
        if (incarnation_ == inc) {
          lease_until_ = std::max(lease_until_, sent + suspect_timeout_);
          epoch_ = std::max(epoch_, resp.header().coordinator_epoch());
          cv_.SignalAll();
        }
      }
      if (resp.has_stop()) {
        BeginDrain(resp.stop().exit_code(),
                   "StopCommand: " + resp.stop().reason());
      } else if (resp.has_drain()) {
        BeginDrain(-1, "DrainCommand: " + resp.drain().reason());
      } else if (resp.has_reform_group()) {
        LOG(INFO) << "worker: group " << resp.reform_group().group()
                  << " moved to epoch " << resp.reform_group().new_epoch();
        if (on_reform_) on_reform_(resp.reform_group());
      }
      if (left) {
        absl::MutexLock lock(&mu_);
        left_sent_ = true;
        cv_.SignalAll();
        break;
      }
      absl::MutexLock lock(&mu_);
      absl::Time until = sent + interval;
      while (!stop_threads_ && !left_ && incarnation_ == inc &&
             absl::Now() < until) {
        cv_.WaitWithDeadline(&mu_, until);
      }
    }
    stream->WritesDone();
    absl::Status st = FromGrpcStatus(stream->Finish());
    if (acked_any) LOG(INFO) << "worker: heartbeat stream ended: " << st;
    bool stop;
    {
      absl::MutexLock lock(&mu_);
      hb_ctx_ = nullptr;
      stop = stop_threads_ || left_;
      if (IsStale(st) && incarnation_ == inc) {
        LOG(WARNING) << "worker: incarnation " << inc
                     << " was fenced out by the coordinator: " << st;
        fenced_incarnation_ = std::max(fenced_incarnation_, inc);
        step_cancelled_.store(true);
        if (next_task_ctx_ != nullptr) next_task_ctx_->TryCancel();
        cv_.SignalAll();
      }
    }
    if (stop) return;
    if (!acked_any) {
      absl::MutexLock lock(&mu_);
      absl::Time until = absl::Now() + backoff;
      while (!stop_threads_ && !left_ && absl::Now() < until) {
        cv_.WaitWithDeadline(&mu_, until);
      }
      backoff = std::min(backoff * 2, absl::Seconds(1));
    }
  }
}

absl::Status RuntimeImpl::Report(const v1::ReportResultRequest& req) {
  absl::Duration backoff = absl::Milliseconds(50);
  absl::Time deadline = absl::Now() + options_.rpc_timeout;
  while (true) {
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ReportResultResponse resp;
    absl::Status st = FromGrpcStatus(stub_->ReportResult(&ctx, req, &resp));
    if (st.ok() || (st.code() != absl::StatusCode::kUnavailable &&
                    st.code() != absl::StatusCode::kDeadlineExceeded)) {
      return st;
    }
    if (absl::Now() >= deadline) return st;
    channel_->WaitForConnected(
        absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    absl::SleepFor(backoff);  // retry backoff, not synchronisation
    backoff = std::min(backoff * 2, absl::Seconds(1));
  }
}

absl::Status RuntimeImpl::RunTask(const v1::Task& task) {
  uint64_t id, inc;
  {
    absl::MutexLock lock(&mu_);
    id = worker_id_;
    inc = incarnation_;
    current_closure_ = task.closure_id();
    current_step_ = task.step_id();
  }
  step_cancelled_.store(false);
  std::unique_ptr<StepPsClient> ps;
  absl::StatusOr<PsClient*> inner = PsClientFor(task.job_id(), id, inc);
  if (inner.ok() && *inner != nullptr) {
    ps = std::make_unique<StepPsClient>(this, *inner, inc, task.step_id(),
                                        task.closure_id());
  }
  StepContextImpl ctx(task, id, inc, ps.get(), &step_cancelled_);
  absl::Time start = absl::Now();
  absl::StatusOr<std::string> result;
  const StepFn* fn = registry_.Find(task.function_name());
  if (!inner.ok()) {
    // UNAVAILABLE: the closure is re-queued.
    result = inner.status();
  } else if (fn == nullptr) {
    result = absl::NotFoundError(
        absl::StrCat("no step function ", task.function_name()));
  } else {
    result = (*fn)(task.args(), ctx);
  }
  v1::ReportResultRequest req;
  {
    absl::MutexLock lock(&mu_);
    *req.mutable_header() = Header();
    req.mutable_header()->set_worker_incarnation(inc);
    current_closure_ = 0;
    current_step_ = 0;
  }
  req.mutable_header()->set_job_id(task.job_id());
  req.mutable_header()->set_closure_id(task.closure_id());
  req.mutable_header()->set_step_id(task.step_id());
  req.set_closure_id(task.closure_id());
  req.set_attempt(task.attempt());
  req.set_run_ms(absl::ToInt64Milliseconds(absl::Now() - start));
  if (result.ok()) {
    req.set_result(*result);
  } else if (step_cancelled_.load() || IsStale(result.status())) {
    req.set_handed_back(true);
  } else {
    req.mutable_error()->set_code(static_cast<int>(result.status().code()));
    req.mutable_error()->set_message(std::string(result.status().message()));
  }
  if (absl::Status fp =
          PLEXUS_FAILPOINT("worker.step.after_push_before_report");
      !fp.ok()) {
    LOG(WARNING) << "worker: not reporting closure " << task.closure_id()
                 << ": " << fp;
    return absl::OkStatus();
  }
  absl::Status st = Report(req);
  if (st.ok()) {
    absl::MutexLock lock(&mu_);
    if (result.ok()) {
      last_finished_step_ = std::max(last_finished_step_, task.step_id());
      ++closures_finished_;
    }
    LOG(INFO) << "worker: step " << task.step_id() << " closure "
              << task.closure_id() << " attempt " << task.attempt()
              << (result.ok()
                      ? " done"
                      : absl::StrCat(" ended: ", result.status().ToString()));
    return absl::OkStatus();
  }
  if (IsStale(st)) {
    absl::MutexLock lock(&mu_);
    fenced_incarnation_ = std::max(fenced_incarnation_, inc);
    LOG(WARNING) << "worker: report of closure " << task.closure_id()
                 << " refused, incarnation " << inc << " is stale";
    return absl::OkStatus();
  }
  LOG(WARNING) << "worker: report of closure " << task.closure_id()
               << " failed: " << st;
  return absl::OkStatus();
}

absl::Status RuntimeImpl::Run() {
  if (options_.handle_sigterm) {
    signal_thread_ = std::thread([this] { SignalLoop(); });
  }
  if (absl::Status st = DoRegister(); !st.ok()) {
    if (st.code() == absl::StatusCode::kCancelled) return absl::OkStatus();
    StopThreads();
    return st;
  }
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
  if (options_.drain_grace > absl::ZeroDuration()) {
    grace_thread_ = std::thread([this] {
      absl::MutexLock lock(&mu_);
      while (
          !stop_threads_ &&
          (!draining_ || absl::Now() < drain_started_ + options_.drain_grace)) {
        if (draining_) {
          cv_.WaitWithDeadline(&mu_, drain_started_ + options_.drain_grace);
        } else {
          cv_.Wait(&mu_);
        }
      }
      if (draining_) step_cancelled_.store(true);
    });
  }
  absl::Duration backoff = absl::Milliseconds(50);
  while (true) {
    uint64_t id, inc;
    bool fenced;
    {
      absl::MutexLock lock(&mu_);
      if (draining_) break;
      id = worker_id_;
      inc = incarnation_;
      fenced = fenced_incarnation_ >= inc;
    }
    if (fenced) {
      absl::Status st = DoRegister();
      if (st.code() == absl::StatusCode::kCancelled) break;
      if (!st.ok()) {
        StopThreads();
        return st;
      }
      continue;
    }
    v1::NextTaskRequest req;
    grpc::ClientContext ctx;
    {
      absl::MutexLock lock(&mu_);
      if (draining_) break;
      *req.mutable_header() = Header();
      next_task_ctx_ = &ctx;
    }
    req.set_wait_ms(absl::ToInt64Milliseconds(options_.next_task_wait));
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.next_task_wait +
                                        absl::Seconds(5)));
    v1::NextTaskResponse resp;
    absl::Status st = FromGrpcStatus(stub_->NextTask(&ctx, req, &resp));
    {
      absl::MutexLock lock(&mu_);
      next_task_ctx_ = nullptr;
    }
    (void)id;
    if (!st.ok()) {
      if (IsStale(st)) {
        absl::MutexLock lock(&mu_);
        fenced_incarnation_ = std::max(fenced_incarnation_, inc);
        continue;
      }
      if (st.code() == absl::StatusCode::kCancelled) continue;
      LOG_EVERY_N(INFO, 20) << "worker: NextTask: " << st;
      if (st.code() == absl::StatusCode::kUnavailable) {
        channel_->WaitForConnected(
            absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
      }
      Pause(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(1));
      continue;
    }
    backoff = absl::Milliseconds(50);
    if (resp.has_task()) {
      if (absl::Status rs = RunTask(resp.task()); !rs.ok()) {
        LOG(WARNING) << "worker: " << rs;
      }
      continue;
    }
    if (resp.no_task_reason() == v1::NO_TASK_REASON_DRAINING) {
      BeginDrain(-1, "the coordinator says drain");
      break;
    }
    if (resp.retry_after_ms() > 0) {
      Pause(absl::Milliseconds(resp.retry_after_ms()));
    }
  }
  // Say goodbye: the last heartbeat says LEFT, so the coordinator re-queues
  // nothing of ours as a failure and stops waiting for us.
  {
    absl::MutexLock lock(&mu_);
    left_ = true;
    cv_.SignalAll();
    absl::Time until = absl::Now() + absl::Seconds(2);
    while (!left_sent_ && absl::Now() < until &&
           fenced_incarnation_ < incarnation_) {
      cv_.WaitWithDeadline(&mu_, until);
    }
  }
  StopThreads();
  LOG(INFO) << "worker: stopped, exit code " << exit_code();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(
    RuntimeOptions options) {
  if (options.coordinator.empty()) {
    return absl::InvalidArgumentError("RuntimeOptions.coordinator is required");
  }
  auto rt = std::make_unique<RuntimeImpl>(std::move(options));
  if (absl::Status st = rt->Init(); !st.ok()) return st;
  return rt;
}

}  // namespace plexus::worker
