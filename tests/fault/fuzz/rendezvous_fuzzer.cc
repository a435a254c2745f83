// libFuzzer target: random bytes as requests to the coordinator's
// rendezvous and collective-group RPCs (RendezvousSet/Get/Wait, JoinGroup,
// GetGroup, BumpGroupEpoch), in-process. The first byte picks the RPC, the
// rest is the serialized request; waits are clamped to 1 ms. Every input
// must get a status back, never a crash or a sanitizer report.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "tests/fault/fuzz/coordinator_fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  namespace v1 = plexus::v1;
  using S = plexus::coordinator::CoordinatorService;
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  auto none = [](auto&) {};
  switch (data[0] % 6) {
    case 0:
      plexus::fuzz::CallCoordinator<v1::RendezvousSetRequest,
                                    v1::RendezvousSetResponse>(
          body, n, &S::RendezvousSet, none);
      break;
    case 1:
      plexus::fuzz::CallCoordinator<v1::RendezvousGetRequest,
                                    v1::RendezvousGetResponse>(
          body, n, &S::RendezvousGet, none);
      break;
    case 2:
      plexus::fuzz::CallCoordinator<v1::RendezvousWaitRequest,
                                    v1::RendezvousWaitResponse>(
          body, n, &S::RendezvousWait, [](auto& r) {
            r.set_timeout_ms(std::clamp<int64_t>(r.timeout_ms(), 1, 1));
          });
      break;
    case 3:
      plexus::fuzz::CallCoordinator<v1::JoinGroupRequest,
                                    v1::JoinGroupResponse>(
          body, n, &S::JoinGroup, [](auto& r) {
            r.set_timeout_ms(std::clamp<int64_t>(r.timeout_ms(), 1, 1));
          });
      break;
    case 4:
      plexus::fuzz::CallCoordinator<v1::GetGroupRequest, v1::GetGroupResponse>(
          body, n, &S::GetGroup, none);
      break;
    case 5:
      plexus::fuzz::CallCoordinator<v1::BumpGroupEpochRequest,
                                    v1::BumpGroupEpochResponse>(
          body, n, &S::BumpGroupEpoch, none);
      break;
  }
  return 0;
}
