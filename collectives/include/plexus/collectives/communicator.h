// Communicator: collective operations among `size` ranks (processes or
// threads), connected at creation through a rendezvous Store.
//
//   auto comm = Communicator::Create(store, rank, size, {});
//   PLEXUS_RETURN_IF_ERROR((*comm)->AllReduce(grads, grads, n,
//                          DataType::kFloat32, ReduceOp::kAvg));
//
// Semantics:
//   - Every rank must issue the same operations in the same order with
//     matching arguments (count, dtype, op, root).
//   - Each operation has an asynchronous form returning a Work handle and a
//     blocking form (= async + Wait). Operations run one at a time, in order,
//     on the communicator's own thread. Buffers are borrowed until the Work
//     completes.
//   - In-place: pass the same pointer as send and recv (all-reduce), or as
//     send and recv + rank * count * elem (all-gather). Out-of-place otherwise.
//   - Every operation has a deadline (OpOptions). An operation fails with
//     DEADLINE_EXCEEDED naming the rank it waited on, UNAVAILABLE naming a
//     lost peer, ABORTED after Abort(), INVALID_ARGUMENT for bad arguments
//     (which does not break the communicator).
//   - Device (GPU) buffers: with plexus::collectives_gpu linked, a buffer in
//     device memory (cudaPointerGetAttributes) goes to NCCL when every member
//     has a GPU, or hierarchically (NCCL in a node, UCX across nodes; all-
//     reduce only) when members span nodes; see Backend and OpOptions.stream.
//     Send and recv must both be host or both be device memory.
//   - Errors are sticky: after a transport error, deadline or Abort, every
//     later operation fails with FAILED_PRECONDITION carrying the first error.
//     Re-form the group (a new communicator, a new store prefix) to go on.
//
// Thread safety: all methods may be called from any thread; operations are
// ordered by submission. Destroying a communicator aborts unfinished work.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives {

class Store;

// The handle of a submitted operation.
class Work {
 public:
  virtual ~Work() = default;
  // Waits until the operation completes or `deadline` passes. Returns the
  // operation's status, or DEADLINE_EXCEEDED if `deadline` passed first (the
  // operation goes on, bounded by its own deadline).
  virtual absl::Status Wait(absl::Time deadline = absl::InfiniteFuture()) = 0;
  virtual bool Done() const = 0;
  // The algorithm that runs (or ran) the operation.
  virtual Algorithm algorithm() const = 0;
};

class Communicator {
 public:
  // Connects rank `rank` of `size` through `store` (borrowed for the call; give
  // each group and epoch its own prefix, see NewPrefixStore).
  static absl::StatusOr<std::unique_ptr<Communicator>> Create(
      Store* store, int rank, int size, const CommunicatorOptions& options);

  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // recv[i] = op over ranks of send[i], i < count, on every rank.
  virtual std::shared_ptr<Work> AllReduceAsync(const void* send, void* recv,
                                               size_t count, DataType type,
                                               ReduceOp op,
                                               const OpOptions& opts = {}) = 0;
  // send holds size() * recv_count elements; rank r gets block r reduced.
  virtual std::shared_ptr<Work> ReduceScatterAsync(
      const void* send, void* recv, size_t recv_count, DataType type,
      ReduceOp op, const OpOptions& opts = {}) = 0;
  // recv holds size() * send_count elements; block r comes from rank r.
  virtual std::shared_ptr<Work> AllGatherAsync(const void* send, void* recv,
                                               size_t send_count, DataType type,
                                               const OpOptions& opts = {}) = 0;
  // buf on every rank becomes root's buf.
  virtual std::shared_ptr<Work> BroadcastAsync(void* buf, size_t count,
                                               DataType type, int root,
                                               const OpOptions& opts = {}) = 0;
  // recv (used on root only; may be null elsewhere) = op over ranks of send.
  virtual std::shared_ptr<Work> ReduceAsync(const void* send, void* recv,
                                            size_t count, DataType type,
                                            ReduceOp op, int root,
                                            const OpOptions& opts = {}) = 0;
  // Completes on every rank once every rank has entered it.
  virtual std::shared_ptr<Work> BarrierAsync(const OpOptions& opts = {}) = 0;

  // Blocking forms: submit, then wait for completion.
  absl::Status AllReduce(const void* send, void* recv, size_t count,
                         DataType type, ReduceOp op,
                         const OpOptions& opts = {});
  absl::Status ReduceScatter(const void* send, void* recv, size_t recv_count,
                             DataType type, ReduceOp op,
                             const OpOptions& opts = {});
  absl::Status AllGather(const void* send, void* recv, size_t send_count,
                         DataType type, const OpOptions& opts = {});
  absl::Status Broadcast(void* buf, size_t count, DataType type, int root,
                         const OpOptions& opts = {});
  absl::Status Reduce(const void* send, void* recv, size_t count, DataType type,
                      ReduceOp op, int root, const OpOptions& opts = {});
  absl::Status Barrier(const OpOptions& opts = {});

  // Fails the operation in flight with ABORTED and every later one with
  // FAILED_PRECONDITION. Returns at once (well within 1 s); any thread.
  virtual void Abort() = 0;
  // The sticky error, or OK.
  virtual absl::Status status() const = 0;
  // The all-reduce algorithm the cost model picks for `bytes` (for tests,
  // benchmarks and logs).
  virtual Algorithm SelectAllReduce(size_t bytes) const = 0;
  // The cost model in use (after calibration, if any).
  virtual CostModel cost_model() const = 0;
  // Who carries operations on device (GPU) buffers: "nccl", "hierarchical",
  // or "none" (device buffers are refused, FAILED_PRECONDITION). Host
  // buffers always go through UCX. See Backend in options.h; device support
  // needs the program to link plexus::collectives_gpu.
  virtual absl::string_view device_backend() const = 0;
};

}  // namespace plexus::collectives
