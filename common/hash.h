// Stable 64-bit hashing shared by every process: sparse-row routing
// (hash(table, id) mod virtual shards) in the client, and per-row initializer
// seeds in the PS, must agree across machines, builds and restarts. So this is
// a fixed function (FNV-1a over the name, splitmix64 finalizer), never
// std::hash.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace plexus {

// splitmix64's finalizer: a bijective mix of 64 bits.
inline constexpr uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// FNV-1a of a name, mixed.
inline uint64_t HashName(absl::string_view name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : name) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return Mix64(h);
}

// The hash of a sparse row: combines a table's name hash with the row id.
inline uint64_t HashRow(uint64_t table_hash, uint64_t id) {
  return Mix64(table_hash ^ Mix64(id + 0x9e3779b97f4a7c15ULL));
}

}  // namespace plexus
