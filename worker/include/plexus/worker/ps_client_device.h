// DevicePsClient: pulls into and pushes from GPU (device) memory, on top of
// a PsClient (ps_client.h). Built where the CUDA toolkit is present; link
// plexus::worker_device.
//
// Values travel through pinned (page-locked) host memory, and the copies
// between it and the GPU overlap the RPCs:
//   - PullDense: the variables' pulls run in parallel (max_in_flight at a
//     time); as each lands in pinned memory its host -> device copy is
//     enqueued on `stream` while the others are still on the wire.
//   - PushDense: every gradient's device -> host copy is enqueued on
//     `stream` at once (after the caller's work there); each push is sent as
//     soon as its own copy has landed, while the later copies still run.
//   - PullSparse: the ids are cut into pieces of about piece_bytes of values,
//     pulled in parallel; each piece's host -> device copy is enqueued as it
//     lands.
//   - PushSparse: one logical push (cutting it would give its pieces other
//     update keys and, for ids repeated across pieces, apply the optimizer
//     twice), so the device -> host copy (in pieces) completes first. Overlap
//     comes from pushing several tensors: use PushDense for dense ones.
// Every call returns once the values are in place (pulls: copied to the
// device; pushes: acknowledged by the shards), or with the first error.
//
// Buffers are fp32 device (or managed) memory; a host pointer is
// INVALID_ARGUMENT (use PsClient for host memory). Streams travel as void*
// (a cudaStream_t); nullptr means the legacy default stream.
//
// Exactly-once: a push's update key includes push_seq. PushDense gives the
// i-th gradient push_seq = step.push_seq + i; the caller reserves that many
// ordinals.
//
// Thread safety: calls on one DevicePsClient run one at a time (they share
// the staging memory); use one per thread for parallel calls.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "plexus/worker/ps_client.h"

namespace plexus::worker {

// A whole dense variable (or its gradient) in device memory, row-major fp32.
struct DeviceDense {
  std::string variable;
  void* data = nullptr;  // device memory; borrowed for the call
  int64_t count = 0;     // elements: every element of the variable
};

struct DevicePsClientOptions {
  // Bytes of values per piece of a sparse pull (the unit of overlap between
  // RPCs and copies). Default 1 MiB.
  int64_t piece_bytes = int64_t{1} << 20;
  // Dense RPCs in flight at once. Default 4.
  int max_in_flight = 4;
  // How long a call waits for the GPU's copies. Default 60 s.
  absl::Duration copy_timeout = absl::Seconds(60);
};

class DevicePsClient {
 public:
  // `client` is borrowed and must outlive the DevicePsClient (or its
  // Rebind).
  // FAILED_PRECONDITION without a usable GPU (checked first);
  // INVALID_ARGUMENT for a null client or bad options.
  static absl::StatusOr<std::unique_ptr<DevicePsClient>> Create(
      PsClient* client, const DevicePsClientOptions& options = {});
  virtual ~DevicePsClient() = default;

  // Later calls go to `client` (borrowed, not null) and keep this object's
  // pinned staging memory: for a worker whose PsClient changes from step to
  // step. Waits for a call in progress to end.
  virtual void Rebind(PsClient* client) = 0;

  virtual absl::Status PullDense(absl::Span<const DeviceDense> vars,
                                 const StepOptions& step = {},
                                 void* stream = nullptr) = 0;
  // Results summed over the gradients.
  virtual absl::StatusOr<PushResult> PushDense(
      absl::Span<const DeviceDense> grads, const StepOptions& step = {},
      void* stream = nullptr) = 0;
  // `out`: ids.size() * dim floats of device memory.
  virtual absl::Status PullSparse(const std::string& table,
                                  absl::Span<const uint64_t> ids, int64_t dim,
                                  float* out, const StepOptions& step = {},
                                  void* stream = nullptr) = 0;
  // `grads`: ids.size() * dim floats of device memory.
  virtual absl::StatusOr<PushResult> PushSparse(const std::string& table,
                                                absl::Span<const uint64_t> ids,
                                                int64_t dim, const float* grads,
                                                const StepOptions& step = {},
                                                void* stream = nullptr) = 0;
};

}  // namespace plexus::worker
