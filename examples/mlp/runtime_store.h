// A collectives rendezvous Store backed by the coordinator, through the worker
// runtime's Rendezvous* calls (worker/include/plexus/worker/runtime.h): how
// the ranks of a collective group find each other in a Plexus cluster, where
// a shared folder (FileStore) is not available.
//
// Keys live in the coordinator's namespace of (group, group_epoch), so a
// re-formed group (a new epoch) never sees the old one's keys.
//
// Add (counters) is not offered by the coordinator's rendezvous and returns
// UNIMPLEMENTED; the Communicator does not use it (it only Sets its own
// address and Gets its peers').
//
// Thread safety: as the runtime's Rendezvous* calls (any thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "collectives/rendezvous/store.h"

namespace plexus::worker {
class Runtime;
}

namespace plexus::examples {

// `runtime` is borrowed and must outlive the store; it must have registered
// (worker_id() != 0) before the store is used.
std::unique_ptr<collectives::Store> NewRuntimeStore(worker::Runtime* runtime,
                                                    std::string group,
                                                    uint64_t group_epoch);

}  // namespace plexus::examples
