#include "collectives/nccl/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "collectives/cuda/cuda_util.h"
#include "common/status.h"

namespace plexus::collectives::nccl {
namespace {

constexpr char kUniqueIdKey[] = "nccl/unique_id";
// How long a waiting operation polls without sleeping.
constexpr absl::Duration kSpin = absl::Milliseconds(2);

absl::StatusOr<ncclDataType_t> ToNccl(DataType t) {
  switch (t) {
    case DataType::kFloat32:
      return ncclFloat32;
    case DataType::kFloat64:
      return ncclFloat64;
    case DataType::kFloat16:
      return ncclFloat16;
    case DataType::kBFloat16:
      return ncclBfloat16;
    case DataType::kInt32:
      return ncclInt32;
    case DataType::kInt64:
      return ncclInt64;
  }
  return absl::InvalidArgumentError("unknown data type");
}

absl::StatusOr<ncclRedOp_t> ToNccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMin:
      return ncclMin;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kProd:
      return ncclProd;
  }
  return absl::InvalidArgumentError("unknown reduction");
}

absl::Status CudaError(cudaError_t e, absl::string_view what) {
  return cuda::CudaStatus(e, what);
}

absl::Status NcclError(ncclResult_t r, absl::string_view what) {
  // A remote or system error is what a dead peer looks like.
  if (r == ncclRemoteError || r == ncclSystemError) {
    return absl::UnavailableError(
        absl::StrCat(what, ": NCCL: ", ncclGetErrorString(r)));
  }
  return absl::InternalError(
      absl::StrCat(what, ": NCCL: ", ncclGetErrorString(r)));
}

}  // namespace

class NcclCommunicator::Impl {
 public:
  ~Impl() {
    if (comm_ != nullptr) {
      // A communicator that failed must be aborted, not destroyed (destroy
      // would wait for peers that may be gone).
      if (sticky_.ok()) {
        ncclCommFinalize(comm_);
        WaitReady(absl::Now() + absl::Seconds(10)).IgnoreError();
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    if (legacy_done_ != nullptr) cudaEventDestroy(legacy_done_);
  }

  absl::Status Init(Store* store, int rank, int size,
                    const NcclOptions& options) {
    if (options.device >= 0) {
      if (cudaError_t e = cudaSetDevice(options.device); e != cudaSuccess) {
        return absl::FailedPreconditionError(
            absl::StrCat("NCCL: cannot use GPU ", options.device, ": ",
                         cudaGetErrorString(e)));
      }
    }
    if (cudaError_t e = cudaGetDevice(&device_); e != cudaSuccess) {
      return absl::FailedPreconditionError(
          absl::StrCat("NCCL: no usable GPU: ", cudaGetErrorString(e)));
    }
    if (cudaError_t e =
            cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking);
        e != cudaSuccess) {
      return CudaError(e, "NCCL: creating the communicator stream");
    }
    if (cudaError_t e =
            cudaEventCreateWithFlags(&legacy_done_, cudaEventDisableTiming);
        e != cudaSuccess) {
      return CudaError(e, "NCCL: creating an event");
    }
    const absl::Time deadline = absl::Now() + options.init_timeout;
    ncclUniqueId id;
    if (rank == 0) {
      if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
        return NcclError(r, "NCCL: creating the unique id");
      }
      PLEXUS_RETURN_IF_ERROR(store->Set(
          kUniqueIdKey,
          std::string(reinterpret_cast<const char*>(&id), sizeof(id))));
    } else {
      PLEXUS_ASSIGN_OR_RETURN(std::string bytes,
                              store->Get(kUniqueIdKey, deadline),
                              "NCCL: waiting for rank 0's unique id");
      if (bytes.size() != sizeof(id)) {
        return absl::DataLossError(
            absl::StrCat("NCCL: the unique id in the store has ", bytes.size(),
                         " bytes, not ", sizeof(id)));
      }
      std::memcpy(&id, bytes.data(), sizeof(id));
    }
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // never let NCCL block the caller: see the header
    ncclResult_t r = ncclCommInitRankConfig(&comm_, size, id, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
      comm_ = nullptr;
      return NcclError(r, "NCCL: creating the communicator");
    }
    return Fail(WaitReady(deadline), "NCCL: creating the communicator");
  }

  // Runs `enqueue` (a NCCL call on `stream`) and waits for it.
  template <typename F>
  absl::Status Run(absl::string_view what, void* stream, absl::Time deadline,
                   F enqueue) {
    // A non-blocking communicator launches from NCCL's own thread, where
    // cudaStreamPerThread names another stream (NVIDIA/nccl#1976).
    if (stream == static_cast<void*>(cudaStreamPerThread)) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": cudaStreamPerThread cannot be used here; pass a stream"));
    }
    absl::MutexLock lock(&mu_);
    if (!sticky_.ok()) return sticky_;
    if (aborting_) return Fail(absl::AbortedError("aborted"), what);
    cudaStream_t s =
        stream != nullptr ? static_cast<cudaStream_t>(stream) : stream_;
    if (cudaError_t e = cudaSetDevice(device_); e != cudaSuccess) {
      return CudaError(e, what);
    }
    if (stream == nullptr) {
      // The own stream runs after what the legacy default stream holds (the
      // caller's cudaMemcpy or kernels without a stream), without handing
      // that stream to NCCL.
      cudaError_t e = cudaEventRecord(legacy_done_, cudaStreamLegacy);
      if (e == cudaSuccess) e = cudaStreamWaitEvent(stream_, legacy_done_, 0);
      if (e != cudaSuccess) return CudaError(e, what);
    }
    ncclResult_t r = enqueue(comm_, s);
    if (r != ncclSuccess && r != ncclInProgress) {
      return Fail(NcclError(r, what), what);
    }
    // Non-blocking: the enqueue itself may still be in progress.
    PLEXUS_RETURN_IF_ERROR(Fail(WaitReady(deadline), what));
    // Then the operation on the stream: spin (yielding) for its first
    // kSpin, since a sleep costs ~50 us of timer slack, more than a 1 MiB
    // operation on one node takes; back off after that.
    const absl::Time spin_until = absl::Now() + kSpin;
    absl::Duration pause = absl::Microseconds(1);
    while (true) {
      cudaError_t e = cudaStreamQuery(s);
      if (e == cudaSuccess) return absl::OkStatus();
      if (e != cudaErrorNotReady) return Fail(CudaError(e, what), what);
      ncclResult_t async = ncclSuccess;
      ncclCommGetAsyncError(comm_, &async);
      if (async != ncclSuccess && async != ncclInProgress) {
        return Fail(NcclError(async, what), what);
      }
      if (aborting_) {
        return Fail(absl::AbortedError("aborted while it ran"), what);
      }
      if (absl::Now() >= deadline) {
        return Fail(absl::DeadlineExceededError(absl::StrCat(
                        what,
                        " did not finish by its deadline (a peer died "
                        "or hangs)")),
                    what);
      }
      if (absl::Now() < spin_until) {
        std::this_thread::yield();
        continue;
      }
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Microseconds(200));
    }
  }

  // Returns at once: an operation in flight sees the flag within its next
  // poll and aborts the communicator itself.
  void Abort() {
    aborting_ = true;
    if (!mu_.TryLock()) return;
    if (sticky_.ok()) {
      sticky_ = absl::AbortedError("NCCL communicator aborted");
      if (comm_ != nullptr) ncclCommAbort(comm_);
      comm_ = nullptr;
    }
    mu_.Unlock();
  }

 private:
  // Polls NCCL until the communicator's last call is no longer in
  // progress.
  absl::Status WaitReady(absl::Time deadline) {
    absl::Duration pause = absl::Microseconds(1);
    while (true) {
      ncclResult_t state = ncclSuccess;
      ncclResult_t r = ncclCommGetAsyncError(comm_, &state);
      if (r != ncclSuccess) return NcclError(r, "polling the communicator");
      if (state == ncclSuccess) return absl::OkStatus();
      if (state != ncclInProgress) return NcclError(state, "communicator");
      if (aborting_) return absl::AbortedError("aborted");
      if (absl::Now() >= deadline) {
        return absl::DeadlineExceededError("not ready by the deadline");
      }
      absl::SleepFor(pause);
      pause = std::min(pause * 2, absl::Microseconds(500));
    }
  }

  // On error: abort the communicator and make the error sticky.
  absl::Status Fail(absl::Status st, absl::string_view what) {
    if (st.ok()) return st;
    absl::Status named = absl::Status(
        st.code(),
        absl::StrCat(what, ": ", st.message(), "; communicator aborted"));
    if (comm_ != nullptr) ncclCommAbort(comm_);
    comm_ = nullptr;
    sticky_ = named;
    return named;
  }

  absl::Mutex mu_;
  std::atomic<bool> aborting_{false};
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t legacy_done_ = nullptr;  // see Run
  int device_ = 0;
  absl::Status sticky_;
};

NcclCommunicator::NcclCommunicator(int rank, int size,
                                   std::unique_ptr<Impl> impl)
    : rank_(rank), size_(size), impl_(std::move(impl)) {}

NcclCommunicator::~NcclCommunicator() = default;

absl::StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::Create(
    Store* store, int rank, int size, const NcclOptions& options) {
  if (store == nullptr) return absl::InvalidArgumentError("NCCL: no store");
  if (size < 1 || rank < 0 || rank >= size) {
    return absl::InvalidArgumentError(
        absl::StrCat("NCCL: rank ", rank, " of ", size, " is out of range"));
  }
  auto impl = std::make_unique<Impl>();
  PLEXUS_RETURN_IF_ERROR(impl->Init(store, rank, size, options));
  return std::unique_ptr<NcclCommunicator>(
      new NcclCommunicator(rank, size, std::move(impl)));
}

absl::Status NcclCommunicator::AllReduce(const void* send, void* recv,
                                         int64_t count, DataType dtype,
                                         ReduceOp op, absl::Time deadline,
                                         void* stream) {
  PLEXUS_ASSIGN_OR_RETURN(ncclDataType_t t, ToNccl(dtype));
  PLEXUS_ASSIGN_OR_RETURN(ncclRedOp_t o, ToNccl(op));
  if (count < 0) return absl::InvalidArgumentError("negative count");
  std::string what =
      absl::StrCat("NCCL all-reduce of ", count, " elements (rank ", rank_,
                   " of ", size_, ")");
  return impl_->Run(what, stream, deadline, [&](ncclComm_t c, cudaStream_t s) {
    return ncclAllReduce(send, recv, count, t, o, c, s);
  });
}

absl::Status NcclCommunicator::ReduceScatter(const void* send, void* recv,
                                             int64_t recv_count, DataType dtype,
                                             ReduceOp op, absl::Time deadline,
                                             void* stream) {
  PLEXUS_ASSIGN_OR_RETURN(ncclDataType_t t, ToNccl(dtype));
  PLEXUS_ASSIGN_OR_RETURN(ncclRedOp_t o, ToNccl(op));
  if (recv_count < 0) return absl::InvalidArgumentError("negative count");
  std::string what =
      absl::StrCat("NCCL reduce-scatter of ", recv_count,
                   " elements per rank (rank ", rank_, " of ", size_, ")");
  return impl_->Run(what, stream, deadline, [&](ncclComm_t c, cudaStream_t s) {
    return ncclReduceScatter(send, recv, recv_count, t, o, c, s);
  });
}

absl::Status NcclCommunicator::AllGather(const void* send, void* recv,
                                         int64_t send_count, DataType dtype,
                                         absl::Time deadline, void* stream) {
  PLEXUS_ASSIGN_OR_RETURN(ncclDataType_t t, ToNccl(dtype));
  if (send_count < 0) return absl::InvalidArgumentError("negative count");
  std::string what =
      absl::StrCat("NCCL all-gather of ", send_count,
                   " elements per rank (rank ", rank_, " of ", size_, ")");
  return impl_->Run(what, stream, deadline, [&](ncclComm_t c, cudaStream_t s) {
    return ncclAllGather(send, recv, send_count, t, c, s);
  });
}

absl::Status NcclCommunicator::Broadcast(void* buf, int64_t count,
                                         DataType dtype, int root,
                                         absl::Time deadline, void* stream) {
  PLEXUS_ASSIGN_OR_RETURN(ncclDataType_t t, ToNccl(dtype));
  if (count < 0) return absl::InvalidArgumentError("negative count");
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast root ", root, " of ", size_, " ranks"));
  }
  std::string what =
      absl::StrCat("NCCL broadcast of ", count, " elements from rank ", root,
                   " (rank ", rank_, " of ", size_, ")");
  return impl_->Run(what, stream, deadline, [&](ncclComm_t c, cudaStream_t s) {
    return ncclBroadcast(buf, buf, count, t, root, c, s);
  });
}

absl::Status NcclCommunicator::Reduce(const void* send, void* recv,
                                      int64_t count, DataType dtype,
                                      ReduceOp op, int root,
                                      absl::Time deadline, void* stream) {
  PLEXUS_ASSIGN_OR_RETURN(ncclDataType_t t, ToNccl(dtype));
  PLEXUS_ASSIGN_OR_RETURN(ncclRedOp_t o, ToNccl(op));
  if (count < 0) return absl::InvalidArgumentError("negative count");
  if (root < 0 || root >= size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("reduce root ", root, " of ", size_, " ranks"));
  }
  std::string what =
      absl::StrCat("NCCL reduce of ", count, " elements to rank ", root,
                   " (rank ", rank_, " of ", size_, ")");
  return impl_->Run(what, stream, deadline, [&](ncclComm_t c, cudaStream_t s) {
    return ncclReduce(send, recv, count, t, o, root, c, s);
  });
}

void NcclCommunicator::Abort() { impl_->Abort(); }

}  // namespace plexus::collectives::nccl
