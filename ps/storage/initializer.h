// Deterministic initial values of rows.
//
// A row's random stream is a splitmix64 sequence seeded by
// Mix64(seed ^ HashRow(HashName(name), key)) (common/hash.h), where `key` is
// the sparse id or the dense row index in whole-variable coordinates. So a row
// gets the same bits on every shard, in every process and after any restart,
// whatever order rows are created in. Uniform and normal draws are computed in
// double (Box-Muller for normal) and rounded to fp32 once.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"
#include "ps/storage/config.h"

namespace plexus::ps {

// The seed of row `key` of variable/table `name_hash` (= HashName(name)).
uint64_t RowStreamSeed(uint64_t seed, uint64_t name_hash, uint64_t key);

// Writes the initial value of one row (n elements) into `out`.
// REQUIRES: ValidateInitializer(config).ok().
void InitializeRow(const InitializerConfig& config, uint64_t name_hash,
                   uint64_t key, float* out, int64_t n);

}  // namespace plexus::ps
