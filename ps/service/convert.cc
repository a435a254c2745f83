#include "ps/service/convert.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace plexus::ps {

absl::StatusOr<DType> FromProto(v1::DType dtype) {
  switch (dtype) {
    case v1::DTYPE_UNSPECIFIED:
      return DType::kUnspecified;
    case v1::DTYPE_FLOAT32:
      return DType::kFloat32;
    case v1::DTYPE_FLOAT64:
      return DType::kFloat64;
    case v1::DTYPE_FLOAT16:
      return DType::kFloat16;
    case v1::DTYPE_BFLOAT16:
      return DType::kBFloat16;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("dtype ", v1::DType_Name(dtype),
                       " is not a floating type the parameter server stores"));
  }
}

v1::DType ToProto(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return v1::DTYPE_FLOAT32;
    case DType::kFloat64:
      return v1::DTYPE_FLOAT64;
    case DType::kFloat16:
      return v1::DTYPE_FLOAT16;
    case DType::kBFloat16:
      return v1::DTYPE_BFLOAT16;
    case DType::kUnspecified:
      break;
  }
  return v1::DTYPE_UNSPECIFIED;
}

RowRange FromProto(const v1::RowRange& r) {
  return {r.row_begin(), r.row_end()};
}

void ToProto(const RowRange& r, v1::RowRange* out) {
  out->set_row_begin(r.begin);
  out->set_row_end(r.end);
}

absl::StatusOr<TensorView> ViewOf(const v1::Tensor& t) {
  PLEXUS_ASSIGN_OR_RETURN(DType dtype, FromProto(t.spec().dtype()));
  TensorView v;
  v.dtype = dtype;
  v.shape = absl::MakeConstSpan(t.spec().shape().data(), t.spec().shape_size());
  v.data = t.data();
  return v;
}

absl::StatusOr<InitializerConfig> FromProto(const v1::InitializerConfig& c) {
  InitializerConfig out;
  out.seed = c.seed();
  switch (c.kind_case()) {
    case v1::InitializerConfig::KIND_NOT_SET:
    case v1::InitializerConfig::kZeros:
      out.kind = InitializerConfig::Kind::kZeros;
      break;
    case v1::InitializerConfig::kConstant:
      out.kind = InitializerConfig::Kind::kConstant;
      out.value = c.constant().value();
      break;
    case v1::InitializerConfig::kUniform:
      out.kind = InitializerConfig::Kind::kUniform;
      out.min = c.uniform().min();
      out.max = c.uniform().max();
      break;
    case v1::InitializerConfig::kNormal:
      out.kind = InitializerConfig::Kind::kNormal;
      out.mean = c.normal().mean();
      out.stddev = c.normal().stddev();
      out.truncated = c.normal().truncated();
      break;
  }
  return out;
}

absl::StatusOr<OptimizerConfig> FromProto(const v1::OptimizerConfig& c) {
  using K = OptimizerConfig::Kind;
  OptimizerConfig o;
  switch (c.kind_case()) {
    case v1::OptimizerConfig::KIND_NOT_SET:
      return absl::InvalidArgumentError("optimizer: not set");
    case v1::OptimizerConfig::kSgd:
      o.kind = K::kSgd;
      o.learning_rate = c.sgd().learning_rate();
      break;
    case v1::OptimizerConfig::kMomentum:
      o.kind = K::kMomentum;
      o.learning_rate = c.momentum().learning_rate();
      o.momentum = c.momentum().momentum();
      o.nesterov = c.momentum().nesterov();
      break;
    case v1::OptimizerConfig::kAdagrad:
      o.kind = K::kAdagrad;
      o.learning_rate = c.adagrad().learning_rate();
      o.initial_accumulator_value = c.adagrad().initial_accumulator_value();
      o.epsilon = c.adagrad().epsilon();
      break;
    case v1::OptimizerConfig::kAdam:
      o.kind = K::kAdam;
      o.learning_rate = c.adam().learning_rate();
      o.beta1 = c.adam().beta1();
      o.beta2 = c.adam().beta2();
      o.epsilon = c.adam().epsilon();
      break;
    case v1::OptimizerConfig::kAdamw:
      o.kind = K::kAdamW;
      o.learning_rate = c.adamw().learning_rate();
      o.beta1 = c.adamw().beta1();
      o.beta2 = c.adamw().beta2();
      o.epsilon = c.adamw().epsilon();
      o.weight_decay = c.adamw().weight_decay();
      break;
    case v1::OptimizerConfig::kFtrl:
      o.kind = K::kFtrl;
      o.learning_rate = c.ftrl().learning_rate();
      o.learning_rate_power = c.ftrl().learning_rate_power();
      o.initial_accumulator_value = c.ftrl().initial_accumulator_value();
      o.l1 = c.ftrl().l1_regularization();
      o.l2 = c.ftrl().l2_regularization();
      o.l2_shrinkage = c.ftrl().l2_shrinkage_regularization();
      o.beta = c.ftrl().beta();
      break;
    case v1::OptimizerConfig::kRmsprop:
      o.kind = K::kRmsProp;
      o.learning_rate = c.rmsprop().learning_rate();
      o.rho = c.rmsprop().rho();
      o.momentum = c.rmsprop().momentum();
      o.epsilon = c.rmsprop().epsilon();
      o.centered = c.rmsprop().centered();
      break;
  }
  return o;
}

absl::StatusOr<ConsistencyConfig> FromProto(const v1::ConsistencyConfig& c) {
  ConsistencyConfig out;
  switch (c.mode()) {
    case v1::CONSISTENCY_MODE_ASYNC:
      out.mode = ConsistencyMode::kAsync;
      break;
    case v1::CONSISTENCY_MODE_SYNC:
      out.mode = ConsistencyMode::kSync;
      break;
    case v1::CONSISTENCY_MODE_BOUNDED_STALENESS:
      out.mode = ConsistencyMode::kBoundedStaleness;
      break;
    default:
      return absl::InvalidArgumentError("consistency mode: not set");
  }
  out.num_workers = c.num_workers();
  out.staleness_bound = c.staleness_bound();
  return out;
}

namespace {

NonFinitePolicy NonFiniteFromProto(v1::NonFinitePolicy p) {
  return p == v1::NON_FINITE_POLICY_SKIP ? NonFinitePolicy::kSkip
                                         : NonFinitePolicy::kReject;
}

absl::StatusOr<DType> StorageDType(v1::DType d) {
  PLEXUS_ASSIGN_OR_RETURN(DType dtype, FromProto(d), "storage_dtype");
  return dtype == DType::kUnspecified ? DType::kFloat32 : dtype;
}

}  // namespace

absl::StatusOr<VariableConfig> FromProto(const v1::VariableConfig& c) {
  VariableConfig out;
  out.name = c.name();
  out.shape.assign(c.spec().shape().begin(), c.spec().shape().end());
  PLEXUS_ASSIGN_OR_RETURN(out.storage_dtype, StorageDType(c.storage_dtype()));
  PLEXUS_ASSIGN_OR_RETURN(out.initializer, FromProto(c.initializer()));
  PLEXUS_ASSIGN_OR_RETURN(out.optimizer, FromProto(c.optimizer()),
                          absl::StrCat("variable ", c.name()));
  PLEXUS_ASSIGN_OR_RETURN(out.consistency, FromProto(c.consistency()),
                          absl::StrCat("variable ", c.name()));
  out.non_finite_policy = NonFiniteFromProto(c.non_finite_policy());
  return out;
}

absl::StatusOr<TableConfig> FromProto(const v1::TableConfig& c) {
  TableConfig out;
  out.name = c.name();
  out.dim = c.dim();
  PLEXUS_ASSIGN_OR_RETURN(out.storage_dtype, StorageDType(c.storage_dtype()));
  PLEXUS_ASSIGN_OR_RETURN(out.initializer, FromProto(c.initializer()));
  PLEXUS_ASSIGN_OR_RETURN(out.optimizer, FromProto(c.optimizer()),
                          absl::StrCat("table ", c.name()));
  PLEXUS_ASSIGN_OR_RETURN(out.consistency, FromProto(c.consistency()),
                          absl::StrCat("table ", c.name()));
  out.admission_min_hit_count = c.admission().min_hit_count();
  out.ttl_steps = c.eviction().ttl_steps();
  out.capacity_rows = c.eviction().capacity_rows();
  switch (c.eviction().policy()) {
    case v1::EVICTION_POLICY_LRU:
      out.eviction_policy = EvictionPolicy::kLru;
      break;
    case v1::EVICTION_POLICY_LFU:
      out.eviction_policy = EvictionPolicy::kLfu;
      break;
    default:
      out.eviction_policy = EvictionPolicy::kNone;
  }
  out.non_finite_policy = NonFiniteFromProto(c.non_finite_policy());
  return out;
}

v1::PushOutcome ToProto(PushOutcome outcome) {
  switch (outcome) {
    case PushOutcome::kApplied:
      return v1::PUSH_OUTCOME_APPLIED;
    case PushOutcome::kDuplicate:
      return v1::PUSH_OUTCOME_DUPLICATE;
    case PushOutcome::kAggregated:
      return v1::PUSH_OUTCOME_AGGREGATED;
  }
  return v1::PUSH_OUTCOME_UNSPECIFIED;
}

}  // namespace plexus::ps
