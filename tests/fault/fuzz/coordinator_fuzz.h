// The in-process coordinator the coordinator fuzzers drive.
#pragma once

#include <cstdlib>

#include "coordinator/service/coordinator_service.h"

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

}  // namespace plexus::fuzz
