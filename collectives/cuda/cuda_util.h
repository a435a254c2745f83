// What the GPU code of Plexus shares around the CUDA runtime: the one
// translation of cudaError_t into absl::Status, whether this process can use
// a GPU, what kind of memory a pointer is, and pinned host and device
// buffers. Built
// only where the CUDA toolkit is present (PLEXUS_HAVE_CUDA); the header needs
// no CUDA headers.
//
// Thread safety: free functions may be called from any thread; a
// PinnedBuffer or DeviceBuffer is used by one thread at a time.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace plexus::collectives::cuda {

// OK for 0 (cudaSuccess); else INTERNAL "<what>: CUDA error <name>:
// <description>". `error` is a cudaError_t.
absl::Status CudaStatus(int error, absl::string_view what);

// Empty when this process can use a GPU; else why not (no driver, "driver
// version is insufficient", no devices). Never fails: on the machines
// without a GPU the answer is "no".
std::string NoGpuReason();
inline bool HaveGpu() { return NoGpuReason().empty(); }

enum class MemoryKind {
  kHost,     // ordinary or pinned host memory (also: no CUDA here at all)
  kDevice,   // cudaMalloc'd memory of some GPU
  kManaged,  // cudaMallocManaged: both can touch it
};
// What `p` points at (cudaPointerGetAttributes). A pointer CUDA does not
// know, and any pointer on a machine without a usable GPU, is kHost.
MemoryKind KindOf(const void* p);
// Whether `p` must be moved by CUDA (kDevice; managed memory counts as
// device memory too, since NCCL and kernels handle it best).
inline bool IsDeviceMemory(const void* p) {
  return KindOf(p) != MemoryKind::kHost;
}

// Waits until the CUDA event (a cudaEvent_t as void*) has completed: polls
// without sleeping for 2 ms, then with a backoff of 1 us .. 100 us.
// DEADLINE_EXCEEDED naming `what` once `deadline` passes; INTERNAL for a CUDA
// error.
absl::Status WaitEvent(void* event, absl::Time deadline,
                       absl::string_view what);
// The same for every piece of work enqueued so far on `stream` (a
// cudaStream_t as void*).
absl::Status WaitStream(void* stream, absl::Time deadline,
                        absl::string_view what);

// Memory CUDA allocates, freed with its owner; grows on demand (the old
// contents are lost), never shrinks, never null once reserved:
//   - PinnedBuffer: page-locked host memory, the staging area between
//     device memory and the network (copies to and from it run at PCIe
//     speed and asynchronously);
//   - DeviceBuffer: device memory of the current GPU (cudaMalloc).
enum class BufferPlace { kPinnedHost, kDevice };
template <BufferPlace kPlace>
class CudaBuffer {
 public:
  CudaBuffer() = default;
  ~CudaBuffer() { Free(); }
  CudaBuffer(const CudaBuffer&) = delete;
  CudaBuffer& operator=(const CudaBuffer&) = delete;

  // At least `bytes`. INTERNAL when CUDA cannot allocate (or pin) that much.
  absl::StatusOr<char*> Reserve(size_t bytes);
  char* data() const { return data_; }
  size_t capacity() const { return capacity_; }

 private:
  void Free();
  char* data_ = nullptr;
  size_t capacity_ = 0;
};
extern template class CudaBuffer<BufferPlace::kPinnedHost>;
extern template class CudaBuffer<BufferPlace::kDevice>;
using PinnedBuffer = CudaBuffer<BufferPlace::kPinnedHost>;
using DeviceBuffer = CudaBuffer<BufferPlace::kDevice>;

// A DeviceBuffer of `T`s.
template <typename T>
class DeviceArray {
 public:
  // At least `n` elements.
  absl::StatusOr<T*> Reserve(size_t n) {
    absl::StatusOr<char*> p = bytes_.Reserve(n * sizeof(T));
    if (!p.ok()) return p.status();
    return reinterpret_cast<T*>(*p);
  }
  T* get() const { return reinterpret_cast<T*>(bytes_.data()); }

 private:
  DeviceBuffer bytes_;
};

}  // namespace plexus::collectives::cuda
