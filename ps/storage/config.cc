#include "ps/storage/config.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace plexus::ps {
namespace {

absl::Status Bad(absl::string_view field, absl::string_view rule, double v) {
  return absl::InvalidArgumentError(
      absl::StrCat(field, " must be ", rule, " (got ", v, ")"));
}

bool Finite(double v) { return std::isfinite(v); }

absl::Status Positive(absl::string_view field, double v) {
  return Finite(v) && v > 0 ? absl::OkStatus() : Bad(field, "> 0", v);
}
absl::Status NonNegative(absl::string_view field, double v) {
  return Finite(v) && v >= 0 ? absl::OkStatus() : Bad(field, ">= 0", v);
}
absl::Status UnitInterval(absl::string_view field, double v) {
  return Finite(v) && v >= 0 && v < 1 ? absl::OkStatus()
                                      : Bad(field, "in [0, 1)", v);
}

}  // namespace

absl::Status ValidateName(absl::string_view name) {
  if (name.empty() || name.size() > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("name must be 1..256 bytes (got ", name.size(), ")"));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '_' || c == '.' ||
                    c == ':' || c == '/' || c == '-';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "name '", name, "' has a character outside [A-Za-z0-9_.:/-]"));
    }
  }
  size_t start = 0;
  while (start <= name.size()) {
    size_t end = name.find('/', start);
    if (end == absl::string_view::npos) end = name.size();
    absl::string_view part = name.substr(start, end - start);
    if (part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat("name '", name, "' has a path-like component"));
    }
    start = end + 1;
  }
  return absl::OkStatus();
}

absl::Status ValidateInitializer(const InitializerConfig& c) {
  using K = InitializerConfig::Kind;
  switch (c.kind) {
    case K::kZeros:
      return absl::OkStatus();
    case K::kConstant:
      return Finite(c.value) ? absl::OkStatus()
                             : Bad("initializer.value", "finite", c.value);
    case K::kUniform:
      if (!Finite(c.min) || !Finite(c.max) || !(c.max > c.min)) {
        return absl::InvalidArgumentError(
            absl::StrCat("initializer: uniform needs finite min < max (got [",
                         c.min, ", ", c.max, "))"));
      }
      return absl::OkStatus();
    case K::kNormal:
      if (!Finite(c.mean)) return Bad("initializer.mean", "finite", c.mean);
      return Positive("initializer.stddev", c.stddev);
  }
  return absl::InvalidArgumentError("initializer: unknown kind");
}

absl::Status ValidateOptimizer(const OptimizerConfig& c) {
  using K = OptimizerConfig::Kind;
  if (c.kind == K::kUnspecified) {
    return absl::InvalidArgumentError("optimizer: kind not set");
  }
  PLEXUS_RETURN_IF_ERROR(Positive("optimizer.learning_rate", c.learning_rate));
  switch (c.kind) {
    case K::kSgd:
      return absl::OkStatus();
    case K::kMomentum:
      return UnitInterval("optimizer.momentum", c.momentum);
    case K::kAdagrad:
      PLEXUS_RETURN_IF_ERROR(NonNegative("optimizer.initial_accumulator_value",
                                         c.initial_accumulator_value));
      PLEXUS_RETURN_IF_ERROR(NonNegative("optimizer.epsilon", c.epsilon));
      if (c.initial_accumulator_value == 0 && c.epsilon == 0) {
        // A zero gradient on a fresh row would compute 0 / 0.
        return absl::InvalidArgumentError(
            "optimizer: adagrad needs initial_accumulator_value > 0 or "
            "epsilon > 0");
      }
      return absl::OkStatus();
    case K::kAdamW:
      PLEXUS_RETURN_IF_ERROR(
          NonNegative("optimizer.weight_decay", c.weight_decay));
      [[fallthrough]];
    case K::kAdam:
      PLEXUS_RETURN_IF_ERROR(UnitInterval("optimizer.beta1", c.beta1));
      PLEXUS_RETURN_IF_ERROR(UnitInterval("optimizer.beta2", c.beta2));
      return Positive("optimizer.epsilon", c.epsilon);
    case K::kFtrl:
      if (!Finite(c.learning_rate_power) || c.learning_rate_power > 0) {
        return Bad("optimizer.learning_rate_power", "<= 0",
                   c.learning_rate_power);
      }
      PLEXUS_RETURN_IF_ERROR(NonNegative("optimizer.initial_accumulator_value",
                                         c.initial_accumulator_value));
      PLEXUS_RETURN_IF_ERROR(NonNegative("optimizer.l1", c.l1));
      PLEXUS_RETURN_IF_ERROR(NonNegative("optimizer.l2", c.l2));
      PLEXUS_RETURN_IF_ERROR(
          NonNegative("optimizer.l2_shrinkage", c.l2_shrinkage));
      PLEXUS_RETURN_IF_ERROR(NonNegative("optimizer.beta", c.beta));
      if (c.initial_accumulator_value == 0 && c.learning_rate_power < 0) {
        // n^-p with n = 0 is infinite on the first step.
        return Bad("optimizer.initial_accumulator_value",
                   "> 0 when learning_rate_power < 0",
                   c.initial_accumulator_value);
      }
      return absl::OkStatus();
    case K::kRmsProp:
      PLEXUS_RETURN_IF_ERROR(UnitInterval("optimizer.rho", c.rho));
      PLEXUS_RETURN_IF_ERROR(UnitInterval("optimizer.momentum", c.momentum));
      return Positive("optimizer.epsilon", c.epsilon);
    default:
      return absl::InvalidArgumentError("optimizer: unknown kind");
  }
}

absl::Status ValidateConsistency(const ConsistencyConfig& c) {
  switch (c.mode) {
    case ConsistencyMode::kAsync:
    case ConsistencyMode::kBoundedStaleness:
      return absl::OkStatus();
    case ConsistencyMode::kSync:
      if (c.num_workers == 0) {
        return absl::InvalidArgumentError(
            "consistency.num_workers must be > 0 in sync mode");
      }
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("consistency.mode not set");
  }
}

absl::Status ValidateVariableConfig(const VariableConfig& c) {
  PLEXUS_RETURN_IF_ERROR(ValidateName(c.name), "variable");
  if (c.shape.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("variable ", c.name, ": rank must be >= 1"));
  }
  auto count = ElementCount(c.shape);
  PLEXUS_RETURN_IF_ERROR(count.status(), absl::StrCat("variable ", c.name));
  if (!IsStorageDType(c.storage_dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "variable ", c.name, ": storage dtype ", DTypeName(c.storage_dtype),
        " is not float32, float16 or bfloat16"));
  }
  const std::string ctx = absl::StrCat("variable ", c.name);
  PLEXUS_RETURN_IF_ERROR(ValidateInitializer(c.initializer), ctx);
  PLEXUS_RETURN_IF_ERROR(ValidateOptimizer(c.optimizer), ctx);
  PLEXUS_RETURN_IF_ERROR(ValidateConsistency(c.consistency), ctx);
  return absl::OkStatus();
}

absl::Status ValidateTableConfig(const TableConfig& c) {
  PLEXUS_RETURN_IF_ERROR(ValidateName(c.name), "table");
  const std::string ctx = absl::StrCat("table ", c.name);
  if (c.dim <= 0 || c.dim > (int64_t{1} << 24)) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ": dim must be in [1, 2^24] (got ", c.dim, ")"));
  }
  if (!IsStorageDType(c.storage_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ": storage dtype ", DTypeName(c.storage_dtype),
                     " is not float32, float16 or bfloat16"));
  }
  PLEXUS_RETURN_IF_ERROR(ValidateInitializer(c.initializer), ctx);
  PLEXUS_RETURN_IF_ERROR(ValidateOptimizer(c.optimizer), ctx);
  PLEXUS_RETURN_IF_ERROR(ValidateConsistency(c.consistency), ctx);
  if (c.capacity_rows < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ": capacity_rows must be >= 0"));
  }
  if (c.capacity_rows > 0 && c.eviction_policy == EvictionPolicy::kNone) {
    return absl::InvalidArgumentError(absl::StrCat(
        ctx, ": capacity_rows > 0 needs an eviction policy (LRU or LFU)"));
  }
  return absl::OkStatus();
}

}  // namespace plexus::ps
