// Configuration of dense variables and sparse tables as the storage engine
// sees it: plain C++ mirrors of the concepts in plexus.v1 (VariableConfig,
// TableConfig, OptimizerConfig, InitializerConfig, ConsistencyConfig...). The
// service fills these from the protos; the engine validates them at creation
// (Validate* below, INVALID_ARGUMENT with a message naming the field).
//
// Hyper-parameters are taken literally (no defaults are filled in: a field
// left 0 means 0) and rounded to fp32 once, at creation.
//
// Thread safety: plain values.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "ps/storage/tensor.h"

namespace plexus::ps {

// How new rows (sparse) or new variables (dense) are initialised. The random
// stream of a sparse row is derived from (seed, table name, id) and of a dense
// row from (seed, variable name, row index) through common/hash.h, so every
// shard and every restart produce bit-identical values.
struct InitializerConfig {
  enum class Kind { kZeros, kConstant, kUniform, kNormal };
  Kind kind = Kind::kZeros;
  // kConstant: every element.
  double value = 0;
  // kUniform: [min, max), max > min.
  double min = 0;
  double max = 0;
  // kNormal: mean and stddev > 0; truncated redraws values further than two
  // stddev from the mean.
  double mean = 0;
  double stddev = 0;
  bool truncated = false;
  // Seed of the stream; 0 is a valid seed.
  uint64_t seed = 0;
  friend bool operator==(const InitializerConfig&,
                         const InitializerConfig&) = default;
};

// The optimizer a variable or table applies to pushed gradients; see
// optimizer.h for the update rules. Only the fields of `kind` are read.
struct OptimizerConfig {
  enum class Kind {
    kUnspecified,
    kSgd,
    kMomentum,
    kAdagrad,
    kAdam,
    kAdamW,
    kFtrl,
    kRmsProp
  };
  Kind kind = Kind::kUnspecified;
  double learning_rate = 0;  // every kind: > 0
  // kMomentum: momentum in [0, 1), nesterov. kRmsProp: momentum in [0, 1).
  double momentum = 0;
  bool nesterov = false;
  // kAdagrad, kFtrl: >= 0.
  double initial_accumulator_value = 0;
  // kAdagrad: >= 0 (not both it and initial_accumulator_value 0).
  // kAdam, kAdamW, kRmsProp: > 0.
  double epsilon = 0;
  // kAdam, kAdamW: in [0, 1).
  double beta1 = 0;
  double beta2 = 0;
  // kAdamW: >= 0.
  double weight_decay = 0;
  // kFtrl: learning_rate_power <= 0; l1, l2, l2_shrinkage, beta >= 0.
  double learning_rate_power = 0;
  double l1 = 0;
  double l2 = 0;
  double l2_shrinkage = 0;
  double beta = 0;
  // kRmsProp: rho in [0, 1), centered.
  double rho = 0;
  bool centered = false;
  friend bool operator==(const OptimizerConfig&,
                         const OptimizerConfig&) = default;
};

// When pushed updates are applied (see engine.h for the exact semantics).
enum class ConsistencyMode { kUnspecified, kAsync, kSync, kBoundedStaleness };

struct ConsistencyConfig {
  ConsistencyMode mode = ConsistencyMode::kUnspecified;
  // kSync: closures per step, > 0. kBoundedStaleness: workers tracked (0:
  // every worker that has pushed).
  uint32_t num_workers = 0;
  // kBoundedStaleness: the bound s in steps.
  uint32_t staleness_bound = 0;
  friend bool operator==(const ConsistencyConfig&,
                         const ConsistencyConfig&) = default;
};

// What happens to a push holding NaN or Inf.
enum class NonFinitePolicy {
  // The whole push fails with INVALID_ARGUMENT, nothing applied.
  kReject,
  // Sparse rows / dense items holding a non-finite value are skipped, the
  // rest applied; PushResult::skipped_non_finite counts them.
  kSkip,
};

// Victim selection when a table exceeds its row capacity.
enum class EvictionPolicy { kNone, kLru, kLfu };

// A dense variable (the whole variable; a shard holds a row range of it).
struct VariableConfig {
  std::string name;
  // Full shape, rank >= 1; axis 0 is split across shards.
  std::vector<int64_t> shape;
  // kFloat32, kFloat16 or kBFloat16. Optimizer slots are always fp32.
  DType storage_dtype = DType::kFloat32;
  InitializerConfig initializer;
  OptimizerConfig optimizer;
  ConsistencyConfig consistency;
  NonFinitePolicy non_finite_policy = NonFinitePolicy::kReject;
  friend bool operator==(const VariableConfig&,
                         const VariableConfig&) = default;
};

// A sparse embedding table: rows of `dim` elements keyed by 64-bit ids.
struct TableConfig {
  std::string name;
  int64_t dim = 0;  // > 0
  DType storage_dtype = DType::kFloat32;
  InitializerConfig initializer;
  OptimizerConfig optimizer;
  ConsistencyConfig consistency;
  // A pushed-to row is created once its id has been seen this many times
  // (pushes and pulls with create_missing count); 0 or 1: on first touch.
  // The pending counts are bounded (64 Ki ids per stripe); when a stripe's
  // fill up they are forgotten and counting starts over.
  uint32_t admission_min_hit_count = 0;
  // Rows not touched for this many steps (counted from the newest step the
  // engine has seen) are evicted; 0: never.
  uint64_t ttl_steps = 0;
  // Row capacity of this table on this shard; beyond it `eviction_policy`
  // picks victims. 0: unlimited. > 0 requires a policy.
  int64_t capacity_rows = 0;
  EvictionPolicy eviction_policy = EvictionPolicy::kNone;
  NonFinitePolicy non_finite_policy = NonFinitePolicy::kReject;
  friend bool operator==(const TableConfig&, const TableConfig&) = default;
};

// Names: non-empty, at most 256 bytes of [A-Za-z0-9_.:/-], no "." or ".."
// path component.
absl::Status ValidateName(absl::string_view name);
absl::Status ValidateInitializer(const InitializerConfig& config);
absl::Status ValidateOptimizer(const OptimizerConfig& config);
absl::Status ValidateConsistency(const ConsistencyConfig& config);
absl::Status ValidateVariableConfig(const VariableConfig& config);
absl::Status ValidateTableConfig(const TableConfig& config);

}  // namespace plexus::ps
