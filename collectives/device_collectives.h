// Private: how the Communicator serves GPU (device) buffers. Include
// plexus/collectives/communicator.h.
//
// The Communicator asks a DeviceCollectives whether a buffer is device
// memory and, when it is, hands the whole operation to it (on the
// communicator's thread, in submission order, like every operation).
//
// Two libraries provide the factories below, so that host-only programs
// never link CUDA or NCCL:
//   - plexus::collectives (device_collectives_none.cc): no device support;
//     NewDeviceCollectives returns nullptr (the Communicator then never
//     looks at pointers) and refuses a forced kNccl / kHierarchical.
//   - plexus::collectives_gpu (nccl/device_collectives_nccl.cc, built where
//     CUDA and NCCL are): NCCL when every member has a GPU, hierarchical
//     NCCL + UCX when members span nodes.
//
// Agreement on "every member has a GPU" goes through the rendezvous store in
// two steps around the host transport's connection: PublishDeviceInfo before
// it ("device/<rank>" = "<PCI bus id of its GPU, or -> <node>"),
// NewDeviceCollectives after it. Two ranks of one node on one GPU (which
// NCCL refuses) count as "not every member has a usable GPU". The
// host transport connects only once every rank has published its address,
// which each rank does after its PublishDeviceInfo, so a key still missing
// then belongs to a rank linked without GPU support: it counts as "no GPU"
// instead of being waited for.
//
// Thread safety: operations one at a time (the communicator's thread);
// Abort from any thread.
#pragma once

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "collectives/rendezvous/store.h"
#include "collectives/transport/ucx/ucx_transport.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives {

class DeviceCollectives {
 public:
  virtual ~DeviceCollectives() = default;
  // "nccl", "hierarchical", or "none" (this process has a GPU but the group
  // does not use one: device buffers are refused).
  virtual absl::string_view name() const = 0;
  // Whether `p` is device (or managed) memory. Cheap enough per operation
  // (one cudaPointerGetAttributes).
  virtual bool IsDevice(const void* p) const = 0;

  // As in Communicator, on device buffers. `stream` (a cudaStream_t;
  // nullptr: an own stream, ordered after the work on the legacy default
  // stream) orders the operation after the caller's work; each returns once
  // the result is in place or with an error naming the operation.
  virtual absl::Status AllReduce(const void* send, void* recv, size_t count,
                                 DataType type, ReduceOp op,
                                 absl::Time deadline, void* stream) = 0;
  virtual absl::Status ReduceScatter(const void* send, void* recv,
                                     size_t recv_count, DataType type,
                                     ReduceOp op, absl::Time deadline,
                                     void* stream) = 0;
  virtual absl::Status AllGather(const void* send, void* recv,
                                 size_t send_count, DataType type,
                                 absl::Time deadline, void* stream) = 0;
  virtual absl::Status Broadcast(void* buf, size_t count, DataType type,
                                 int root, absl::Time deadline,
                                 void* stream) = 0;
  virtual absl::Status Reduce(const void* send, void* recv, size_t count,
                              DataType type, ReduceOp op, int root,
                              absl::Time deadline, void* stream) = 0;
  // INVALID_ARGUMENT for a stream this backend cannot use; checked when the
  // operation is submitted, so that it does not break the communicator.
  virtual absl::Status CheckStream(void* stream) const {
    return absl::OkStatus();
  }
  // Aborts whatever runs (NCCL communicators, the cross-node transport).
  virtual void Abort(const absl::Status& why) = 0;
};

// Step 1 (every rank, before the host transport connects). `backend` is the
// resolved choice (options.backend or $PLEXUS_COLL_BACKEND).
absl::Status PublishDeviceInfo(Store* store, int rank,
                               const CommunicatorOptions& options,
                               Backend backend);
// Step 2 (every rank, after the host transport connected). nullptr: device
// buffers are not recognised (host-only library, or this process has no
// GPU). FAILED_PRECONDITION when `backend` forces NCCL or hierarchical and a
// member has no GPU (named) or NCCL is not built in.
absl::StatusOr<std::unique_ptr<DeviceCollectives>> NewDeviceCollectives(
    Store* store, int rank, int size, const CommunicatorOptions& options,
    Backend backend);

// The host (UCX) transport's options for a communicator's options: the
// communicator's own transport and the hierarchical backend's cross-node one
// (defined in communicator.cc).
ucx::UcxTransportOptions HostTransportOptions(
    const CommunicatorOptions& options);

}  // namespace plexus::collectives
