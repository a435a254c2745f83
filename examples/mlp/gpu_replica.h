// The dense example's GPU replica: parameters, optimizer state and both data
// sets in device memory, the gradient computed by CUDA kernels
// (gpu_kernels.h, fixed summation order), and replicas summing gradients with
// the collectives' NCCL backend (collectives/nccl/nccl_communicator.h:
// bootstrapped through the rendezvous Store, every operation bounded by a
// deadline).
//
// One GPU per rank: rank r uses device r mod the device count. NCCL refuses
// two ranks of one communicator on the same GPU, so world > 1 needs that
// many GPUs (on a one-GPU machine, run the CPU example's ranks instead).
//
// Compiled where CUDA is found (PLEXUS_HAVE_CUDA); elsewhere, and on machines
// without a usable GPU, NewGpuReplica fails with FAILED_PRECONDITION saying
// why. world > 1 also needs NCCL (PLEXUS_HAVE_NCCL).
//
// Thread safety: one thread, as Replica.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "examples/mlp/digits.h"
#include "examples/mlp/train.h"

namespace plexus::collectives {
class Store;
}

namespace plexus::examples {

// `data` is copied to the device (it must still outlive the replica, as
// Train reads its sizes); `store` (borrowed, outliving the call; may be null
// when world == 1) carries the NCCL id. `timeout` bounds joining the group
// and each collective operation.
absl::StatusOr<std::unique_ptr<Replica>> NewGpuReplica(
    const DigitsSplit& data, const TrainOptions& options,
    collectives::Store* store, int rank, int world, absl::Duration timeout);

}  // namespace plexus::examples
