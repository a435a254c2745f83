// The chaos monkey of `plexus local up --chaos`: every so often it SIGKILLs
// a random worker of a local cluster, starts it again from its saved command
// line (as a supervisor such as Kubernetes would) and reports how long the
// worker took to be back, registered with the coordinator. The job itself
// recovers through the coordinator, which re-queues the killed worker's step.
//
// Thread safety: RunChaos runs on the calling thread.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace plexus::local {

struct ChaosOptions {
  // The cluster's root folder (what `plexus local up --dir` got). Required.
  std::string root_dir;
  // Time between kills; > 0.
  absl::Duration every = absl::Seconds(10);
  // Seed of the choice of victims.
  uint64_t seed = 1;
  // How long a restarted worker may take to register.
  absl::Duration restart_timeout = absl::Seconds(60);
};

// Kills and restarts workers, printing one line per kill and per recovery
// to stdout, until the cluster's state file disappears (`plexus local
// down`) or `stop` returns true (polled often). OK then; an error when a
// worker cannot be restarted.
absl::Status RunChaos(const ChaosOptions& options,
                      const std::function<bool()>& stop);

}  // namespace plexus::local
