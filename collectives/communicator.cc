#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/algorithms/cost_model.h"
#include "collectives/communicator_impl.h"
#include "collectives/transport/ucx/ucx_transport.h"
#include "common/status.h"
#include "glog/logging.h"

namespace plexus::collectives {
namespace {
constexpr absl::Duration kIdleProgress = absl::Milliseconds(50);
// Set by the blocking forms: the submitting thread will wait at once, so the
// operation may run on it directly (no queue, no wake-up of the loop thread).
thread_local bool tls_blocking_call = false;

class BlockingCall {
 public:
  BlockingCall() { tls_blocking_call = true; }
  ~BlockingCall() { tls_blocking_call = false; }
};
}  // namespace

absl::Status WorkImpl::Wait(absl::Time deadline) {
  if (!done_.HasBeenNotified() && comm_ != nullptr) comm_->RunInline(this);
  if (!done_.WaitForNotificationWithDeadline(deadline)) {
    return absl::DeadlineExceededError(
        "collective operation not finished by the Wait deadline");
  }
  return status_;
}

void WorkImpl::Finish(absl::Status status) {
  status_ = std::move(status);
  done_.Notify();
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Create(
    Store* store, int rank, int size, const CommunicatorOptions& options) {
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad rank ", rank, " for group size ", size));
  }
  Algorithm forced = options.algorithm;
  if (forced == Algorithm::kAuto) {
    if (const char* env = std::getenv("PLEXUS_COLL_ALGO"); env && *env) {
      std::optional<Algorithm> a = ParseAlgorithm(env);
      if (!a) {
        return absl::InvalidArgumentError(absl::StrCat(
            "PLEXUS_COLL_ALGO=", env, ": expected auto, ring, tree or rd"));
      }
      forced = *a;
    }
  }
  Backend backend = options.backend;
  if (backend == Backend::kAuto) {
    if (const char* env = std::getenv("PLEXUS_COLL_BACKEND"); env && *env) {
      std::optional<Backend> b = ParseBackend(env);
      if (!b) {
        return absl::InvalidArgumentError(
            absl::StrCat("PLEXUS_COLL_BACKEND=", env,
                         ": expected auto, ucx, nccl or hierarchical"));
      }
      backend = *b;
    }
  }
  // Before the host transport connects: see collectives/device_collectives.h.
  PLEXUS_RETURN_IF_ERROR(PublishDeviceInfo(store, rank, options, backend));
  const ucx::UcxTransportOptions topts = HostTransportOptions(options);
  PLEXUS_ASSIGN_OR_RETURN(auto transport,
                          ucx::NewUcxTransport(store, rank, size, topts));
  PLEXUS_ASSIGN_OR_RETURN(
      auto device, NewDeviceCollectives(store, rank, size, options, backend));
  auto comm =
      std::make_unique<CommunicatorImpl>(std::move(transport), options, forced);
  comm->SetDevice(std::move(device));
  if (options.calibrate && !options.deterministic && size > 1) {
    PLEXUS_RETURN_IF_ERROR(comm->Calibrate(), "calibrating the cost model");
  }
  comm->Start();
  return comm;
}

absl::Status Communicator::AllReduce(const void* send, void* recv, size_t count,
                                     DataType type, ReduceOp op,
                                     const OpOptions& opts) {
  std::shared_ptr<Work> work;
  {
    BlockingCall blocking;
    work = AllReduceAsync(send, recv, count, type, op, opts);
  }
  return work->Wait();
}
absl::Status Communicator::ReduceScatter(const void* send, void* recv,
                                         size_t recv_count, DataType type,
                                         ReduceOp op, const OpOptions& opts) {
  std::shared_ptr<Work> work;
  {
    BlockingCall blocking;
    work = ReduceScatterAsync(send, recv, recv_count, type, op, opts);
  }
  return work->Wait();
}
absl::Status Communicator::AllGather(const void* send, void* recv,
                                     size_t send_count, DataType type,
                                     const OpOptions& opts) {
  std::shared_ptr<Work> work;
  {
    BlockingCall blocking;
    work = AllGatherAsync(send, recv, send_count, type, opts);
  }
  return work->Wait();
}
absl::Status Communicator::Broadcast(void* buf, size_t count, DataType type,
                                     int root, const OpOptions& opts) {
  std::shared_ptr<Work> work;
  {
    BlockingCall blocking;
    work = BroadcastAsync(buf, count, type, root, opts);
  }
  return work->Wait();
}
absl::Status Communicator::Reduce(const void* send, void* recv, size_t count,
                                  DataType type, ReduceOp op, int root,
                                  const OpOptions& opts) {
  std::shared_ptr<Work> work;
  {
    BlockingCall blocking;
    work = ReduceAsync(send, recv, count, type, op, root, opts);
  }
  return work->Wait();
}
absl::Status Communicator::Barrier(const OpOptions& opts) {
  std::shared_ptr<Work> work;
  {
    BlockingCall blocking;
    work = BarrierAsync(opts);
  }
  return work->Wait();
}

CommunicatorImpl::CommunicatorImpl(std::unique_ptr<Transport> transport,
                                   const CommunicatorOptions& options,
                                   Algorithm forced)
    : transport_(std::move(transport)),
      options_(options),
      forced_(forced),
      cost_model_(options.cost_model) {}

void CommunicatorImpl::Start() {
  loop_ = std::thread([this] { Loop(); });
}

CommunicatorImpl::~CommunicatorImpl() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    work_cv_.SignalAll();
    if (!queue_.empty() || driver_busy_) {
      if (error_.ok()) {
        error_ = absl::AbortedError(absl::StrCat(
            options_.name, " rank ", rank(), ": communicator destroyed"));
      }
      transport_->Abort(error_);
      if (device_ != nullptr) device_->Abort(error_);
    }
  }
  if (loop_.joinable()) loop_.join();
}

std::shared_ptr<Work> CommunicatorImpl::Failed(absl::Status status) {
  auto work = std::make_shared<WorkImpl>(nullptr, Algorithm::kAuto);
  work->Finish(std::move(status));
  return work;
}

std::string CommunicatorImpl::OpName::ToString() const {
  std::string s(kind);
  if (count_and_type) {
    absl::StrAppend(&s, "(", count, " x ", DataTypeName(type));
    if (!op.empty()) absl::StrAppend(&s, ", ", op);
    if (root >= 0) absl::StrAppend(&s, ", root ", root);
    s += ")";
  }
  if (!device.empty()) absl::StrAppend(&s, " on device buffers (", device, ")");
  return s;
}

std::shared_ptr<Work> CommunicatorImpl::Submit(const OpName& name,
                                               Algorithm algorithm,
                                               const OpOptions& opts,
                                               Body body) {
  const absl::Time deadline = opts.deadline == absl::InfiniteFuture()
                                  ? absl::Now() + options_.default_timeout
                                  : opts.deadline;
  auto work = std::make_shared<WorkImpl>(this, algorithm);
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) {
      work->Finish(absl::FailedPreconditionError(absl::StrCat(
          options_.name, " rank ", rank(), ": ", name.ToString(),
          " refused after an earlier error: ", error_.ToString())));
      return work;
    }
    if (stopping_) {
      work->Finish(absl::FailedPreconditionError("communicator is stopping"));
      return work;
    }
    VLOG(1) << options_.name << " rank " << rank() << ": " << name.ToString()
            << " algorithm=" << AlgorithmName(algorithm);
    if (!(tls_blocking_call && queue_.empty() && !driver_busy_)) {
      queue_.push_back(Op{name, std::move(body), deadline, work});
      if (!driver_busy_) work_cv_.Signal();
      return work;
    }
    driver_busy_ = true;
  }
  // Blocking call with nothing queued: run it here.
  Execute(Op{name, std::move(body), deadline, work}, absl::OkStatus());
  return work;
}

void CommunicatorImpl::Loop() {
  while (true) {
    Op op;
    absl::Status error;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return (!queue_.empty() && !driver_busy_) || stopping_;
      };
      // While idle, progress the transport now and then (keepalives,
      // notices). A condition variable, not a Mutex condition: a thread
      // waiting on a condition makes every unlock of mu_ re-evaluate it
      // (absl's slow path), three times per operation.
      while (!has_work()) {
        const bool timed_out = work_cv_.WaitWithTimeout(&mu_, kIdleProgress);
        if (!timed_out || has_work() || driver_busy_) continue;
        driver_busy_ = true;
        mu_.Unlock();
        transport_->ProgressIdle();
        mu_.Lock();
        driver_busy_ = false;
      }
      if (queue_.empty() || driver_busy_) {
        if (stopping_) return;
        continue;
      }
      op = std::move(queue_.front());
      queue_.pop_front();
      error = error_;
      driver_busy_ = true;
    }
    Execute(std::move(op), std::move(error));
  }
}

void CommunicatorImpl::RunInline(WorkImpl* work) {
  while (!work->Done()) {
    Op op;
    absl::Status error;
    {
      absl::MutexLock lock(&mu_);
      if (driver_busy_ || queue_.empty()) return;
      op = std::move(queue_.front());
      queue_.pop_front();
      error = error_;
      driver_busy_ = true;
    }
    Execute(std::move(op), std::move(error));
  }
}

void CommunicatorImpl::Execute(Op op, absl::Status error) {
  absl::Status status;
  if (!error.ok()) {
    status = absl::FailedPreconditionError(
        absl::StrCat(options_.name, " rank ", rank(), ": ", op.name.ToString(),
                     " refused after an earlier error: ", error.ToString()));
  } else {
    status = Run(op.body, op.deadline);
    if (!status.ok()) status = Annotate(status, op.name.ToString());
  }
  {
    absl::MutexLock lock(&mu_);
    driver_busy_ = false;
    if (!queue_.empty()) work_cv_.Signal();  // the loop takes the next one
    if (!status.ok() && error.ok() && error_.ok()) error_ = status;
  }
  op.work->Finish(std::move(status));
}

absl::Status CommunicatorImpl::Run(const Body& body, absl::Time deadline) {
  AlgoContext ctx;
  ctx.transport = transport_.get();
  ctx.op = next_op_++;
  ctx.deadline = deadline;
  ctx.pipeline_bytes = options_.pipeline_bytes;
  ctx.scratch = &scratch_;
  ctx.single_copy_bytes = options_.single_copy_bytes;
  return body(ctx);
}

void CommunicatorImpl::Abort() {
  absl::Status why = absl::AbortedError(
      absl::StrCat(options_.name, " rank ", rank(), ": communicator aborted"));
  {
    absl::MutexLock lock(&mu_);
    if (error_.ok()) error_ = why;
  }
  transport_->Abort(why);
  if (device_ != nullptr) device_->Abort(why);
}

absl::Status CommunicatorImpl::status() const {
  absl::MutexLock lock(&mu_);
  return error_;
}

Algorithm CommunicatorImpl::SelectAllReduce(size_t bytes) const {
  return ChooseAllReduce(cost_model_, size(), bytes, options_.pipeline_bytes);
}

absl::Status CommunicatorImpl::CheckRoot(int root) const {
  if (root < 0 || root >= size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("root ", root, " out of range for group size ", size()));
  }
  return absl::OkStatus();
}

std::shared_ptr<Work> CommunicatorImpl::MaybeDevice(const OpName& name,
                                                    const void* a,
                                                    const void* b,
                                                    const OpOptions& opts,
                                                    DeviceBody fn) {
  if (device_ == nullptr) return nullptr;
  const bool da = device_->IsDevice(a);
  const bool db = b == a ? da : device_->IsDevice(b);
  if (!da && !db) return nullptr;
  if (da != db) {
    return Failed(absl::InvalidArgumentError(
        absl::StrCat(name.ToString(),
                     ": one buffer is in device memory and the other in "
                     "host memory; pass both on the same side")));
  }
  if (absl::Status s = device_->CheckStream(opts.stream); !s.ok()) {
    return Failed(Annotate(s, name.ToString()));
  }
  DeviceCollectives* device = device_.get();
  OpName on_device = name;
  on_device.device = device->name();
  return Submit(on_device, Algorithm::kAuto, opts,
                [device, fn = std::move(fn)](const AlgoContext& ctx) {
                  return fn(device, ctx.deadline);
                });
}

namespace {
absl::Status CheckBuffers(const void* a, const void* b, size_t count) {
  if (count > 0 && (a == nullptr || b == nullptr)) {
    return absl::InvalidArgumentError("null buffer with a non-zero count");
  }
  return absl::OkStatus();
}
}  // namespace

std::shared_ptr<Work> CommunicatorImpl::AllReduceAsync(const void* send,
                                                       void* recv, size_t count,
                                                       DataType type,
                                                       ReduceOp op,
                                                       const OpOptions& opts) {
  if (absl::Status s = CheckBuffers(send, recv, count); !s.ok()) {
    return Failed(s);
  }
  const OpName name{.kind = "all-reduce",
                    .count = count,
                    .type = type,
                    .op = ReduceOpName(op)};
  if (auto w = MaybeDevice(name, send, recv, opts,
                           [=](DeviceCollectives* d, absl::Time deadline) {
                             return d->AllReduce(send, recv, count, type, op,
                                                 deadline, opts.stream);
                           })) {
    return w;
  }
  const size_t bytes = count * DataTypeSize(type);
  Algorithm algo = opts.algorithm != Algorithm::kAuto ? opts.algorithm
                   : forced_ != Algorithm::kAuto      ? forced_
                                                      : SelectAllReduce(bytes);
  return Submit(name, algo, opts, [=](const AlgoContext& ctx) {
    // The ring takes its input where it lies (no copy).
    if (algo != Algorithm::kTree && algo != Algorithm::kRecursiveDoubling) {
      return RingAllReduce(ctx, send, recv, count, type, op);
    }
    if (send != recv && bytes > 0) std::memcpy(recv, send, bytes);
    if (algo == Algorithm::kTree) {
      return TreeAllReduce(ctx, recv, count, type, op);
    }
    return DoublingAllReduce(ctx, recv, count, type, op);
  });
}

std::shared_ptr<Work> CommunicatorImpl::ReduceScatterAsync(
    const void* send, void* recv, size_t recv_count, DataType type, ReduceOp op,
    const OpOptions& opts) {
  if (absl::Status s = CheckBuffers(send, recv, recv_count); !s.ok()) {
    return Failed(s);
  }
  const OpName name{.kind = "reduce-scatter",
                    .count = recv_count,
                    .type = type,
                    .op = ReduceOpName(op)};
  if (auto w = MaybeDevice(name, send, recv, opts,
                           [=](DeviceCollectives* d, absl::Time deadline) {
                             return d->ReduceScatter(send, recv, recv_count,
                                                     type, op, deadline,
                                                     opts.stream);
                           })) {
    return w;
  }
  const size_t esz = DataTypeSize(type);
  const int n = size();
  const int r = rank();
  return Submit(name, Algorithm::kRing, opts, [=](const AlgoContext& ctx) {
    const size_t block = recv_count * esz;
    std::vector<char> scratch(block * n);
    if (block > 0) std::memcpy(scratch.data(), send, block * n);
    PLEXUS_RETURN_IF_ERROR(
        RingReduceScatter(ctx, scratch.data(), recv_count, type, op));
    if (block > 0) {
      std::memcpy(recv, scratch.data() + block * r, block);
    }
    return absl::OkStatus();
  });
}

std::shared_ptr<Work> CommunicatorImpl::AllGatherAsync(const void* send,
                                                       void* recv,
                                                       size_t send_count,
                                                       DataType type,
                                                       const OpOptions& opts) {
  if (absl::Status s = CheckBuffers(send, recv, send_count); !s.ok()) {
    return Failed(s);
  }
  const OpName name{.kind = "all-gather", .count = send_count, .type = type};
  if (auto w = MaybeDevice(name, send, recv, opts,
                           [=](DeviceCollectives* d, absl::Time deadline) {
                             return d->AllGather(send, recv, send_count, type,
                                                 deadline, opts.stream);
                           })) {
    return w;
  }
  const size_t block = send_count * DataTypeSize(type);
  const int r = rank();
  return Submit(name, Algorithm::kRing, opts, [=](const AlgoContext& ctx) {
    char* mine = static_cast<char*>(recv) + block * r;
    if (mine != send && block > 0) std::memmove(mine, send, block);
    return RingAllGather(ctx, recv, send_count, type);
  });
}

std::shared_ptr<Work> CommunicatorImpl::BroadcastAsync(void* buf, size_t count,
                                                       DataType type, int root,
                                                       const OpOptions& opts) {
  if (absl::Status s = CheckBuffers(buf, buf, count); !s.ok()) {
    return Failed(s);
  }
  if (absl::Status s = CheckRoot(root); !s.ok()) return Failed(s);
  const OpName name{
      .kind = "broadcast", .count = count, .type = type, .root = root};
  if (auto w = MaybeDevice(
          name, buf, buf, opts, [=](DeviceCollectives* d, absl::Time deadline) {
            return d->Broadcast(buf, count, type, root, deadline, opts.stream);
          })) {
    return w;
  }
  return Submit(name, Algorithm::kTree, opts, [=](const AlgoContext& ctx) {
    return TreeBroadcast(ctx, buf, count, type, root);
  });
}

std::shared_ptr<Work> CommunicatorImpl::ReduceAsync(const void* send,
                                                    void* recv, size_t count,
                                                    DataType type, ReduceOp op,
                                                    int root,
                                                    const OpOptions& opts) {
  const bool is_root = rank() == root;
  if (absl::Status s = CheckBuffers(send, is_root ? recv : send, count);
      !s.ok()) {
    return Failed(s);
  }
  if (absl::Status s = CheckRoot(root); !s.ok()) return Failed(s);
  const OpName name{.kind = "reduce",
                    .count = count,
                    .type = type,
                    .op = ReduceOpName(op),
                    .root = root};
  if (auto w = MaybeDevice(name, send, is_root ? recv : send, opts,
                           [=](DeviceCollectives* d, absl::Time deadline) {
                             return d->Reduce(send, recv, count, type, op, root,
                                              deadline, opts.stream);
                           })) {
    return w;
  }
  const size_t bytes = count * DataTypeSize(type);
  return Submit(name, Algorithm::kTree, opts, [=](const AlgoContext& ctx) {
    std::vector<char> scratch;
    void* work = recv;
    if (!is_root) {
      scratch.resize(bytes);
      work = scratch.data();
    }
    if (work != send && bytes > 0) std::memcpy(work, send, bytes);
    return TreeReduce(ctx, work, count, type, op, root);
  });
}

std::shared_ptr<Work> CommunicatorImpl::BarrierAsync(const OpOptions& opts) {
  return Submit({.kind = "barrier", .count_and_type = false},
                Algorithm::kRecursiveDoubling, opts,
                [](const AlgoContext& ctx) {
                  int32_t token = 1;
                  return DoublingAllReduce(ctx, &token, 1, DataType::kInt32,
                                           ReduceOp::kSum);
                });
}

absl::Status CommunicatorImpl::Calibrate() {
  const int n = size();
  const absl::Time deadline = absl::Now() + options_.connect_timeout;
  auto timed = [&](auto&& fn, int iters) -> absl::StatusOr<double> {
    absl::Time start = absl::Now();
    for (int i = 0; i < iters; ++i) {
      PLEXUS_RETURN_IF_ERROR(Run(fn, deadline));
    }
    return absl::ToDoubleMicroseconds(absl::Now() - start) / iters;
  };
  std::vector<char> small(8), big(1 << 20);
  PLEXUS_ASSIGN_OR_RETURN(double t_small, timed(
                                              [&](const AlgoContext& ctx) {
                                                return DoublingAllReduce(
                                                    ctx, small.data(), 2,
                                                    DataType::kInt32,
                                                    ReduceOp::kSum);
                                              },
                                              50));
  PLEXUS_ASSIGN_OR_RETURN(
      double t_big, timed(
                        [&](const AlgoContext& ctx) {
                          return RingAllReduce(ctx, big.data(), big.size() / 4,
                                               DataType::kInt32,
                                               ReduceOp::kSum);
                        },
                        3));
  int p = 1, rounds = 0;
  while (p * 2 <= n) {
    p *= 2;
    ++rounds;
  }
  if (p != n) rounds += 2;
  double model[2];
  model[0] = std::max(0.05, t_small / rounds);
  const double s = static_cast<double>(big.size());
  const double rest = t_big - 2.0 * (n - 1) * model[0] -
                      (n - 1) * s / n * cost_model_.gamma_us_per_byte;
  model[1] = std::max(1e-6, rest / (2.0 * (n - 1) / n * s));
  // Everyone adopts rank 0's figures so that all ranks choose alike.
  PLEXUS_RETURN_IF_ERROR(Run(
      [&](const AlgoContext& ctx) {
        return TreeBroadcast(ctx, model, 2, DataType::kFloat64, 0);
      },
      deadline));
  cost_model_.alpha_us = model[0];
  cost_model_.beta_us_per_byte = model[1];
  LOG_IF(INFO, rank() == 0)
      << options_.name << ": calibrated alpha=" << model[0]
      << "us beta=" << model[1] << "us/B";
  return absl::OkStatus();
}

ucx::UcxTransportOptions HostTransportOptions(
    const CommunicatorOptions& options) {
  ucx::UcxTransportOptions topts;
  topts.progress = options.progress == ProgressMode::kBlocking
                       ? ucx::UcxTransportOptions::Progress::kBlocking
                       : ucx::UcxTransportOptions::Progress::kBusyPoll;
  topts.connect_timeout = options.connect_timeout;
  topts.group = options.group;
  topts.group_epoch = options.group_epoch;
  topts.single_copy = options.single_copy_bytes > 0;
  return topts;
}

}  // namespace plexus::collectives
