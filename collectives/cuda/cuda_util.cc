#include "collectives/cuda/cuda_util.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace plexus::collectives::cuda {

absl::Status CudaStatus(int error, absl::string_view what) {
  auto e = static_cast<cudaError_t>(error);
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(
      what, ": CUDA error ", cudaGetErrorName(e), ": ", cudaGetErrorString(e)));
}

std::string NoGpuReason() {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky: clear it for later calls
    return absl::StrCat("no usable GPU: ", cudaGetErrorString(e));
  }
  if (n == 0) return "no usable GPU: the CUDA runtime reports 0 devices";
  return "";
}

MemoryKind KindOf(const void* p) {
  if (p == nullptr) return MemoryKind::kHost;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return MemoryKind::kHost;
  }
  switch (attr.type) {
    case cudaMemoryTypeDevice:
      return MemoryKind::kDevice;
    case cudaMemoryTypeManaged:
      return MemoryKind::kManaged;
    default:
      return MemoryKind::kHost;
  }
}

namespace {
template <typename Query>
absl::Status Poll(Query query, absl::Time deadline, absl::string_view what) {
  // Spin (yielding) first: a sleep costs ~50 us of timer slack, longer than
  // many copies take.
  const absl::Time spin_until = absl::Now() + absl::Milliseconds(2);
  absl::Duration pause = absl::Microseconds(1);
  while (true) {
    cudaError_t e = query();
    if (e == cudaSuccess) return absl::OkStatus();
    if (e != cudaErrorNotReady) return CudaStatus(e, what);
    const absl::Time now = absl::Now();
    if (now >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(what, ": the GPU did not finish by the deadline"));
    }
    if (now < spin_until) {
      std::this_thread::yield();
      continue;
    }
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Microseconds(100));
  }
}
}  // namespace

absl::Status WaitEvent(void* event, absl::Time deadline,
                       absl::string_view what) {
  return Poll([&] { return cudaEventQuery(static_cast<cudaEvent_t>(event)); },
              deadline, what);
}

absl::Status WaitStream(void* stream, absl::Time deadline,
                        absl::string_view what) {
  return Poll(
      [&] { return cudaStreamQuery(static_cast<cudaStream_t>(stream)); },
      deadline, what);
}

template <BufferPlace kPlace>
void CudaBuffer<kPlace>::Free() {
  if (data_ == nullptr) return;
  if constexpr (kPlace == BufferPlace::kPinnedHost) {
    cudaFreeHost(data_);
  } else {
    cudaFree(data_);
  }
  data_ = nullptr;
  capacity_ = 0;
}

template <BufferPlace kPlace>
absl::StatusOr<char*> CudaBuffer<kPlace>::Reserve(size_t bytes) {
  if (bytes <= capacity_ && data_ != nullptr) return data_;
  Free();
  constexpr bool kPinned = kPlace == BufferPlace::kPinnedHost;
  const size_t want = std::max<size_t>(bytes, kPinned ? 4096 : 256);
  void* p = nullptr;
  const cudaError_t e = kPinned ? cudaHostAlloc(&p, want, cudaHostAllocDefault)
                                : cudaMalloc(&p, want);
  if (e != cudaSuccess) {
    return CudaStatus(
        e, absl::StrCat(kPinned ? "pinning " : "allocating ", want,
                        " bytes of ", kPinned ? "host" : "device", " memory"));
  }
  data_ = static_cast<char*>(p);
  capacity_ = want;
  return data_;
}

template class CudaBuffer<BufferPlace::kPinnedHost>;
template class CudaBuffer<BufferPlace::kDevice>;

}  // namespace plexus::collectives::cuda
