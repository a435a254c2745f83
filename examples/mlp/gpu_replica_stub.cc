// NewGpuReplica where the build found no CUDA toolkit.
#include "examples/mlp/gpu_replica.h"

namespace plexus::examples {

absl::StatusOr<std::unique_ptr<Replica>> NewGpuReplica(const DigitsSplit&,
                                                       const TrainOptions&,
                                                       collectives::Store*, int,
                                                       int, absl::Duration) {
  return absl::FailedPreconditionError(
      "this mlp_example was built without CUDA (no nvcc at configure time): "
      "use --device=cpu, or rebuild where the CUDA toolkit is installed");
}

}  // namespace plexus::examples
