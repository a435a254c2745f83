// The NCCL backend: collectives on GPU (device) buffers through
// ncclAllReduce and friends, one GPU per rank. Built only where CUDA and
// NCCL are present (PLEXUS_HAVE_NCCL).
//
// Bootstrap: rank 0 creates the NCCL unique id and publishes it in the
// rendezvous Store (collectives/rendezvous/store.h) under "nccl/unique_id";
// the others read it there. Give each group and epoch its own prefixed
// store (NewPrefixStore + GroupEpochPrefix).
//
// Failure handling: the communicator is created non-blocking, so no NCCL
// call can hang the caller. Every operation takes a deadline: the caller's
// thread enqueues it on a CUDA stream and polls the stream and NCCL's
// asynchronous error until the operation finishes; a NCCL error, or the
// deadline passing (a peer died or hangs), aborts the communicator
// (ncclCommAbort) and returns an error naming the operation
// (DEADLINE_EXCEEDED, or INTERNAL/UNAVAILABLE with NCCL's message). After
// that every call returns the same sticky error; form a new communicator
// (next group epoch) to go on.
//
// Streams travel as void* (a cudaStream_t) so this header needs no CUDA
// headers; nullptr means the communicator's own stream, ordered after the
// work already on the legacy default stream. cudaStreamPerThread is
// INVALID_ARGUMENT (NCCL would launch on its own thread's stream). Types: fp32,
// fp64, fp16, bf16, int32, int64; reductions sum, avg (ncclAvg), min, max,
// prod.
//
// Thread safety: one operation at a time per communicator (NCCL requires
// operations in the same order on every rank); Abort from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "collectives/rendezvous/store.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives::nccl {

struct NcclOptions {
  // CUDA device of this rank; -1: the calling thread's current device.
  int device = -1;
  // How long creation may wait for the unique id and for every rank.
  absl::Duration init_timeout = absl::Minutes(5);
};

class NcclCommunicator {
 public:
  // Joins the group of `size` ranks as `rank` (both checked). Fails with
  // DEADLINE_EXCEEDED when the unique id or the other ranks do not come
  // within init_timeout, FAILED_PRECONDITION without a usable GPU.
  static absl::StatusOr<std::unique_ptr<NcclCommunicator>> Create(
      Store* store, int rank, int size, const NcclOptions& options = {});
  ~NcclCommunicator();
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // recv[i] = op over ranks of send[i], i < count, on every rank. In place
  // when send == recv.
  absl::Status AllReduce(const void* send, void* recv, int64_t count,
                         DataType dtype, ReduceOp op, absl::Time deadline,
                         void* stream = nullptr);
  // send holds size * recv_count elements; rank r gets block r reduced.
  absl::Status ReduceScatter(const void* send, void* recv, int64_t recv_count,
                             DataType dtype, ReduceOp op, absl::Time deadline,
                             void* stream = nullptr);
  // recv holds size * send_count elements: every rank's send, by rank.
  absl::Status AllGather(const void* send, void* recv, int64_t send_count,
                         DataType dtype, absl::Time deadline,
                         void* stream = nullptr);
  // buf of `root` to every rank.
  absl::Status Broadcast(void* buf, int64_t count, DataType dtype, int root,
                         absl::Time deadline, void* stream = nullptr);
  // The reduction lands in `recv` of `root` only (recv may be null
  // elsewhere).
  absl::Status Reduce(const void* send, void* recv, int64_t count,
                      DataType dtype, ReduceOp op, int root,
                      absl::Time deadline, void* stream = nullptr);

  // Aborts the communicator (operations in flight on other ranks fail);
  // every later call returns ABORTED. Returns at once.
  void Abort();

  class Impl;

 private:
  NcclCommunicator(int rank, int size, std::unique_ptr<Impl> impl);
  int rank_, size_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace plexus::collectives::nccl
