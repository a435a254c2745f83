// The in-process coordinator the coordinator fuzzers drive.
#pragma once

#include <cstdlib>

#include "coordinator/service/coordinator_service.h"
#include "tests/fault/fuzz/fuzz_call.h"

namespace plexus::fuzz {

// One in-process coordinator (no state folder) for the whole fuzzing run.
inline coordinator::CoordinatorService* FuzzCoordinator() {
  static coordinator::CoordinatorService* service = [] {
    auto s = coordinator::CoordinatorService::Create({});
    if (!s.ok()) std::abort();
    return s->release();
  }();
  return service;
}

// Hands the bytes to the coordinator's handler `method` as a Req.
template <typename Req, typename Resp, typename... Fix>
void CallCoordinator(const uint8_t* data, size_t size, auto method,
                     Fix... fix) {
  CallHandler<Req, Resp>(FuzzCoordinator(), data, size, method, fix...);
}

}  // namespace plexus::fuzz
