// The device support of plexus::collectives (host only): none. Programs that
// link plexus::collectives_gpu get collectives/nccl/device_collectives_nccl.cc
// instead.
#include "absl/strings/str_cat.h"
#include "collectives/device_collectives.h"

namespace plexus::collectives {

absl::Status PublishDeviceInfo(Store*, int, const CommunicatorOptions&,
                               Backend) {
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceCollectives>> NewDeviceCollectives(
    Store*, int, int, const CommunicatorOptions&, Backend backend) {
  if (backend == Backend::kNccl || backend == Backend::kHierarchical) {
    return absl::FailedPreconditionError(absl::StrCat(
        "collectives backend ", BackendName(backend),
        " was asked for, but this program is linked without GPU support "
        "(link plexus::collectives_gpu, built where CUDA and NCCL are)"));
  }
  return nullptr;
}

}  // namespace plexus::collectives
