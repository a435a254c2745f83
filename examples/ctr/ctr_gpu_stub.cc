// ctr_gpu.h where the build found no CUDA toolkit.
#include "examples/ctr/ctr_gpu.h"

namespace plexus::examples {
namespace {

absl::Status NoCuda() {
  return absl::FailedPreconditionError(
      "this ctr_example was built without CUDA (no nvcc at configure time): "
      "use --device=cpu, or rebuild where the CUDA toolkit is installed");
}

}  // namespace

absl::StatusOr<std::unique_ptr<CtrCompute>> NewGpuCompute() { return NoCuda(); }

absl::StatusOr<std::unique_ptr<DevicePsParams>> NewDevicePsParams() {
  return NoCuda();
}

}  // namespace plexus::examples
