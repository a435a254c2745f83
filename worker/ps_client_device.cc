#include "plexus/worker/ps_client_device.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "collectives/cuda/cuda_util.h"
#include "common/status.h"

namespace plexus::worker {
namespace {

namespace cuda = ::plexus::collectives::cuda;

cudaStream_t AsStream(void* s) {
  return s != nullptr ? static_cast<cudaStream_t>(s) : cudaStreamLegacy;
}

void AddTo(PushResult* total, const PushResult& r) {
  total->rows_applied += r.rows_applied;
  total->rows_not_admitted += r.rows_not_admitted;
  total->skipped_non_finite += r.skipped_non_finite;
  total->duplicate_pieces += r.duplicate_pieces;
  total->aggregated_pieces += r.aggregated_pieces;
}

absl::Status CheckDevice(const void* p, int64_t count, absl::string_view what) {
  if (count < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": negative count"));
  }
  if (count == 0) return absl::OkStatus();
  if (p == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": null buffer"));
  }
  if (!cuda::IsDeviceMemory(p)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     ": the buffer is host memory; DevicePsClient takes device "
                     "memory (use PsClient for host buffers)"));
  }
  return absl::OkStatus();
}

// Runs fn(0) .. fn(n - 1) on up to `width` threads, each index once, in
// order of index; done[i] is notified (with status[i] set) as each ends.
class Parallel {
 public:
  Parallel(size_t n, int width, std::function<absl::Status(size_t)> fn)
      : fn_(std::move(fn)), status_(n), done_(n) {
    const int threads = static_cast<int>(std::min<size_t>(n, width));
    for (int t = 0; t < threads; ++t) {
      threads_.emplace_back([this, n] {
        for (size_t i = next_++; i < n; i = next_++) {
          status_[i] = fn_(i);
          done_[i].Notify();
        }
      });
    }
  }
  ~Parallel() {
    for (auto& t : threads_) t.join();
  }
  const absl::Status& Wait(size_t i) {
    done_[i].WaitForNotification();
    return status_[i];
  }

 private:
  std::function<absl::Status(size_t)> fn_;
  std::atomic<size_t> next_{0};
  std::vector<absl::Status> status_;
  std::vector<absl::Notification> done_;
  std::vector<std::thread> threads_;
};

class DevicePsClientImpl : public DevicePsClient {
 public:
  DevicePsClientImpl(PsClient* client, const DevicePsClientOptions& options)
      : client_(client), options_(options) {}
  ~DevicePsClientImpl() override {
    for (void* e : events_) cudaEventDestroy(static_cast<cudaEvent_t>(e));
  }

  void Rebind(PsClient* client) override {
    absl::MutexLock lock(&mu_);
    client_ = client;
  }

  absl::Status PullDense(absl::Span<const DeviceDense> vars,
                         const StepOptions& step, void* stream) override {
    absl::MutexLock lock(&mu_);
    std::vector<size_t> offset(vars.size() + 1, 0);
    for (size_t i = 0; i < vars.size(); ++i) {
      PLEXUS_RETURN_IF_ERROR(CheckDevice(vars[i].data, vars[i].count,
                                         "PullDense of " + vars[i].variable));
      offset[i + 1] = offset[i] + vars[i].count * sizeof(float);
    }
    PLEXUS_ASSIGN_OR_RETURN(char* host, staging_.Reserve(offset.back()));
    const absl::Time deadline = absl::Now() + options_.copy_timeout;
    absl::Status first;
    {
      Parallel pulls(vars.size(), options_.max_in_flight, [&](size_t i) {
        float* dst = reinterpret_cast<float*>(host + offset[i]);
        return client_->PullDense(vars[i].variable,
                                  absl::MakeSpan(dst, vars[i].count), step);
      });
      for (size_t i = 0; i < vars.size(); ++i) {
        absl::Status st = pulls.Wait(i);
        if (st.ok() && first.ok()) {
          st = cuda::CudaStatus(
              cudaMemcpyAsync(vars[i].data, host + offset[i],
                              offset[i + 1] - offset[i], cudaMemcpyHostToDevice,
                              AsStream(stream)),
              "copying a pulled variable to the device");
        }
        if (!st.ok() && first.ok()) {
          first = Annotate(st, absl::StrCat("pulling ", vars[i].variable));
        }
      }
    }
    // The copies read the staging memory: wait for them even after an error.
    absl::Status copied = WaitCopies(stream, deadline);
    return first.ok() ? copied : first;
  }

  absl::StatusOr<PushResult> PushDense(absl::Span<const DeviceDense> grads,
                                       const StepOptions& step,
                                       void* stream) override {
    absl::MutexLock lock(&mu_);
    std::vector<size_t> offset(grads.size() + 1, 0);
    for (size_t i = 0; i < grads.size(); ++i) {
      PLEXUS_RETURN_IF_ERROR(CheckDevice(grads[i].data, grads[i].count,
                                         "PushDense of " + grads[i].variable));
      offset[i + 1] = offset[i] + grads[i].count * sizeof(float);
    }
    PLEXUS_ASSIGN_OR_RETURN(char* host, staging_.Reserve(offset.back()));
    PLEXUS_RETURN_IF_ERROR(Events(grads.size() + 1));
    const absl::Time deadline = absl::Now() + options_.copy_timeout;
    // Enqueue every copy at once; each push waits for its own.
    size_t enqueued = 0;
    absl::Status st;
    for (; enqueued < grads.size() && st.ok(); ++enqueued) {
      const size_t i = enqueued;
      st = cuda::CudaStatus(
          cudaMemcpyAsync(host + offset[i], grads[i].data,
                          offset[i + 1] - offset[i], cudaMemcpyDeviceToHost,
                          AsStream(stream)),
          "copying a gradient to the host");
      if (st.ok()) {
        st = cuda::CudaStatus(
            cudaEventRecord(static_cast<cudaEvent_t>(events_[i]),
                            AsStream(stream)),
            "recording a copy");
      }
    }
    if (!st.ok()) {
      PLEXUS_RETURN_IF_ERROR(WaitCopies(stream, deadline));
      return st;
    }
    const std::vector<void*> copied(events_.begin(),
                                    events_.begin() + grads.size());
    std::vector<PushResult> results(grads.size());
    absl::Status first;
    {
      Parallel pushes(grads.size(), options_.max_in_flight, [&](size_t i) {
        PLEXUS_RETURN_IF_ERROR(cuda::WaitEvent(
            copied[i], deadline, "copying a gradient to the host"));
        StepOptions s = step;
        s.push_seq = step.push_seq + static_cast<uint32_t>(i);
        const float* src = reinterpret_cast<const float*>(host + offset[i]);
        PLEXUS_ASSIGN_OR_RETURN(
            results[i],
            client_->PushDense(grads[i].variable,
                               absl::MakeConstSpan(src, grads[i].count), s));
        return absl::OkStatus();
      });
      for (size_t i = 0; i < grads.size(); ++i) {
        const absl::Status& s = pushes.Wait(i);
        if (!s.ok() && first.ok()) {
          first = Annotate(s, absl::StrCat("pushing ", grads[i].variable));
        }
      }
    }
    PLEXUS_RETURN_IF_ERROR(WaitCopies(stream, deadline));
    if (!first.ok()) return first;
    PushResult total;
    for (const PushResult& r : results) AddTo(&total, r);
    return total;
  }

  absl::Status PullSparse(const std::string& table,
                          absl::Span<const uint64_t> ids, int64_t dim,
                          float* out, const StepOptions& step,
                          void* stream) override {
    absl::MutexLock lock(&mu_);
    if (dim <= 0) return absl::InvalidArgumentError("PullSparse: dim <= 0");
    const int64_t n = static_cast<int64_t>(ids.size());
    PLEXUS_RETURN_IF_ERROR(CheckDevice(out, n * dim, "PullSparse of " + table));
    if (n == 0) return absl::OkStatus();
    PLEXUS_ASSIGN_OR_RETURN(char* host_bytes,
                            staging_.Reserve(n * dim * sizeof(float)));
    float* host = reinterpret_cast<float*>(host_bytes);
    const int64_t rows = RowsPerPiece(dim);
    const absl::Time deadline = absl::Now() + options_.copy_timeout;
    std::vector<std::unique_ptr<PsFuture>> pieces;
    for (int64_t b = 0; b < n; b += rows) {
      const int64_t e = std::min(n, b + rows);
      pieces.push_back(client_->PullSparseAsync(
          table, ids.subspan(b, e - b), dim,
          absl::MakeSpan(host + b * dim, (e - b) * dim), step));
    }
    absl::Status first;
    for (size_t p = 0; p < pieces.size(); ++p) {
      absl::Status st = pieces[p]->Wait();
      const int64_t b = static_cast<int64_t>(p) * rows;
      const int64_t e = std::min(n, b + rows);
      if (st.ok() && first.ok()) {
        st = cuda::CudaStatus(
            cudaMemcpyAsync(out + b * dim, host + b * dim,
                            (e - b) * dim * sizeof(float),
                            cudaMemcpyHostToDevice, AsStream(stream)),
            "copying pulled rows to the device");
      }
      if (!st.ok() && first.ok()) {
        first = Annotate(st, absl::StrCat("pulling rows of ", table));
      }
    }
    absl::Status copied = WaitCopies(stream, deadline);
    return first.ok() ? copied : first;
  }

  absl::StatusOr<PushResult> PushSparse(const std::string& table,
                                        absl::Span<const uint64_t> ids,
                                        int64_t dim, const float* grads,
                                        const StepOptions& step,
                                        void* stream) override {
    absl::MutexLock lock(&mu_);
    if (dim <= 0) return absl::InvalidArgumentError("PushSparse: dim <= 0");
    const int64_t n = static_cast<int64_t>(ids.size());
    PLEXUS_RETURN_IF_ERROR(
        CheckDevice(grads, n * dim, "PushSparse of " + table));
    if (n == 0) return PushResult();
    const size_t bytes = n * dim * sizeof(float);
    PLEXUS_ASSIGN_OR_RETURN(char* host, staging_.Reserve(bytes));
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaMemcpyAsync(host, grads, bytes, cudaMemcpyDeviceToHost,
                        AsStream(stream)),
        "copying gradients to the host"));
    PLEXUS_RETURN_IF_ERROR(
        WaitCopies(stream, absl::Now() + options_.copy_timeout));
    return client_->PushSparse(
        table, ids, dim,
        absl::MakeConstSpan(reinterpret_cast<const float*>(host), n * dim),
        step);
  }

 private:
  int64_t RowsPerPiece(int64_t dim) const {
    return std::max<int64_t>(
        1, options_.piece_bytes / (dim * static_cast<int64_t>(sizeof(float))));
  }

  // At least `n` events in events_.
  absl::Status Events(size_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (events_.size() < n) {
      cudaEvent_t e = nullptr;
      PLEXUS_RETURN_IF_ERROR(
          cuda::CudaStatus(cudaEventCreateWithFlags(&e, cudaEventDisableTiming),
                           "creating an event"));
      events_.push_back(e);
    }
    return absl::OkStatus();
  }

  // Waits for the work enqueued on `stream` so far (the last event marks
  // it).
  absl::Status WaitCopies(void* stream, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    PLEXUS_RETURN_IF_ERROR(Events(1));
    void* done = events_.back();
    PLEXUS_RETURN_IF_ERROR(cuda::CudaStatus(
        cudaEventRecord(static_cast<cudaEvent_t>(done), AsStream(stream)),
        "recording the copies' end"));
    return cuda::WaitEvent(done, deadline, "copies between host and device");
  }

  // Borrowed. Changed only by Rebind, under mu_, so never during a call
  // (whose threads read it without the lock).
  PsClient* client_;
  const DevicePsClientOptions options_;
  absl::Mutex mu_;  // one call at a time
  cuda::PinnedBuffer staging_ ABSL_GUARDED_BY(mu_);
  std::vector<void*> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

absl::StatusOr<std::unique_ptr<DevicePsClient>> DevicePsClient::Create(
    PsClient* client, const DevicePsClientOptions& options) {
  if (std::string why = cuda::NoGpuReason(); !why.empty()) {
    return absl::FailedPreconditionError(absl::StrCat("DevicePsClient: ", why));
  }
  if (client == nullptr) {
    return absl::InvalidArgumentError("DevicePsClient: no PsClient");
  }
  if (options.piece_bytes <= 0 || options.max_in_flight <= 0) {
    return absl::InvalidArgumentError(
        "DevicePsClient: piece_bytes and max_in_flight must be positive");
  }
  return std::unique_ptr<DevicePsClient>(
      new DevicePsClientImpl(client, options));
}

}  // namespace plexus::worker
