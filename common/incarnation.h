// Incarnation ids: a random, non-zero 64-bit number drawn once per process
// start. Every response carries its server's incarnation, so a client notices
// a restarted server; every request carries its sender's, so a server rejects a
// stale (older) incarnation's late writes.
#pragma once

#include <cstdint>

namespace plexus {

// A fresh non-zero random id from the OS's entropy source.
uint64_t NewIncarnationId();

}  // namespace plexus
