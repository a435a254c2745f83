// libFuzzer target: random bytes as a request to the coordinator service's
// control-plane RPCs (in-process, no state folder, handlers called as gRPC
// would). The first byte picks the RPC, the rest is the serialized request.
// Every input must get a status back, never a crash or a sanitizer report.
// Waits are clamped to 1 ms so that no input blocks the fuzzer; the
// streaming Heartbeat and the RPCs that call the PS shards are left out.
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
  switch (data[0] % 12) {
    case 0:
      plexus::fuzz::CallCoordinator<v1::RegisterRequest, v1::RegisterResponse>(
          body, n, &S::Register);
      break;
    case 1:
      plexus::fuzz::CallCoordinator<v1::ListProcessesRequest,
                                    v1::ListProcessesResponse>(
          body, n, &S::ListProcesses);
      break;
    case 2:
      plexus::fuzz::CallCoordinator<v1::GetShardMapRequest,
                                    v1::GetShardMapResponse>(body, n,
                                                             &S::GetShardMap);
      break;
    case 3:
      plexus::fuzz::CallCoordinator<v1::NextTaskRequest, v1::NextTaskResponse>(
          body, n, &S::NextTask,
          [](auto& r) { r.set_wait_ms(std::min<int64_t>(r.wait_ms(), 1)); });
      break;
    case 4:
      plexus::fuzz::CallCoordinator<v1::ReportResultRequest,
                                    v1::ReportResultResponse>(body, n,
                                                              &S::ReportResult);
      break;
    case 5:
      plexus::fuzz::CallCoordinator<v1::SubmitJobRequest,
                                    v1::SubmitJobResponse>(body, n,
                                                           &S::SubmitJob);
      break;
    case 6:
      plexus::fuzz::CallCoordinator<v1::ScheduleRequest, v1::ScheduleResponse>(
          body, n, &S::Schedule);
      break;
    case 7:
      plexus::fuzz::CallCoordinator<v1::JoinRequest, v1::JoinResponse>(
          body, n, &S::Join, [](auto& r) {
            r.set_timeout_ms(std::clamp<int64_t>(r.timeout_ms(), 1, 1));
          });
      break;
    case 8:
      plexus::fuzz::CallCoordinator<v1::FetchRequest, v1::FetchResponse>(
          body, n, &S::Fetch);
      break;
    case 9:
      plexus::fuzz::CallCoordinator<v1::CancelJobRequest,
                                    v1::CancelJobResponse>(body, n,
                                                           &S::CancelJob);
      break;
    case 10:
      plexus::fuzz::CallCoordinator<v1::GetJobStatusRequest,
                                    v1::GetJobStatusResponse>(body, n,
                                                              &S::GetJobStatus);
      break;
    case 11:
      plexus::fuzz::CallCoordinator<v1::ListCheckpointsRequest,
                                    v1::ListCheckpointsResponse>(
          body, n, &S::ListCheckpoints);
      break;
  }
  return 0;
}
