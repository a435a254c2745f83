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

namespace {

void InitializerToProto(const InitializerConfig& c, v1::InitializerConfig* o) {
  o->set_seed(c.seed);
  switch (c.kind) {
    case InitializerConfig::Kind::kZeros:
      o->mutable_zeros();
      break;
    case InitializerConfig::Kind::kConstant:
      o->mutable_constant()->set_value(c.value);
      break;
    case InitializerConfig::Kind::kUniform:
      o->mutable_uniform()->set_min(c.min);
      o->mutable_uniform()->set_max(c.max);
      break;
    case InitializerConfig::Kind::kNormal:
      o->mutable_normal()->set_mean(c.mean);
      o->mutable_normal()->set_stddev(c.stddev);
      o->mutable_normal()->set_truncated(c.truncated);
      break;
  }
}

void OptimizerToProto(const OptimizerConfig& c, v1::OptimizerConfig* o) {
  using K = OptimizerConfig::Kind;
  switch (c.kind) {
    case K::kUnspecified:
      break;
    case K::kSgd:
      o->mutable_sgd()->set_learning_rate(c.learning_rate);
      break;
    case K::kMomentum: {
      auto* m = o->mutable_momentum();
      m->set_learning_rate(c.learning_rate);
      m->set_momentum(c.momentum);
      m->set_nesterov(c.nesterov);
      break;
    }
    case K::kAdagrad: {
      auto* m = o->mutable_adagrad();
      m->set_learning_rate(c.learning_rate);
      m->set_initial_accumulator_value(c.initial_accumulator_value);
      m->set_epsilon(c.epsilon);
      break;
    }
    case K::kAdam: {
      auto* m = o->mutable_adam();
      m->set_learning_rate(c.learning_rate);
      m->set_beta1(c.beta1);
      m->set_beta2(c.beta2);
      m->set_epsilon(c.epsilon);
      break;
    }
    case K::kAdamW: {
      auto* m = o->mutable_adamw();
      m->set_learning_rate(c.learning_rate);
      m->set_beta1(c.beta1);
      m->set_beta2(c.beta2);
      m->set_epsilon(c.epsilon);
      m->set_weight_decay(c.weight_decay);
      break;
    }
    case K::kFtrl: {
      auto* m = o->mutable_ftrl();
      m->set_learning_rate(c.learning_rate);
      m->set_learning_rate_power(c.learning_rate_power);
      m->set_initial_accumulator_value(c.initial_accumulator_value);
      m->set_l1_regularization(c.l1);
      m->set_l2_regularization(c.l2);
      m->set_l2_shrinkage_regularization(c.l2_shrinkage);
      m->set_beta(c.beta);
      break;
    }
    case K::kRmsProp: {
      auto* m = o->mutable_rmsprop();
      m->set_learning_rate(c.learning_rate);
      m->set_rho(c.rho);
      m->set_momentum(c.momentum);
      m->set_epsilon(c.epsilon);
      m->set_centered(c.centered);
      break;
    }
  }
}

void ConsistencyToProto(const ConsistencyConfig& c, v1::ConsistencyConfig* o) {
  switch (c.mode) {
    case ConsistencyMode::kAsync:
      o->set_mode(v1::CONSISTENCY_MODE_ASYNC);
      break;
    case ConsistencyMode::kSync:
      o->set_mode(v1::CONSISTENCY_MODE_SYNC);
      break;
    case ConsistencyMode::kBoundedStaleness:
      o->set_mode(v1::CONSISTENCY_MODE_BOUNDED_STALENESS);
      break;
    case ConsistencyMode::kUnspecified:
      break;
  }
  o->set_num_workers(c.num_workers);
  o->set_staleness_bound(c.staleness_bound);
}

v1::NonFinitePolicy NonFiniteToProto(NonFinitePolicy p) {
  return p == NonFinitePolicy::kSkip ? v1::NON_FINITE_POLICY_SKIP
                                     : v1::NON_FINITE_POLICY_REJECT;
}

}  // namespace

void ToProto(const VariableConfig& c, v1::VariableConfig* out) {
  out->set_name(c.name);
  out->mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  for (int64_t d : c.shape) out->mutable_spec()->add_shape(d);
  out->set_storage_dtype(ToProto(c.storage_dtype));
  InitializerToProto(c.initializer, out->mutable_initializer());
  OptimizerToProto(c.optimizer, out->mutable_optimizer());
  ConsistencyToProto(c.consistency, out->mutable_consistency());
  out->set_non_finite_policy(NonFiniteToProto(c.non_finite_policy));
}

void ToProto(const TableConfig& c, v1::TableConfig* out) {
  out->set_name(c.name);
  out->set_dim(c.dim);
  out->set_storage_dtype(ToProto(c.storage_dtype));
  InitializerToProto(c.initializer, out->mutable_initializer());
  OptimizerToProto(c.optimizer, out->mutable_optimizer());
  ConsistencyToProto(c.consistency, out->mutable_consistency());
  out->mutable_admission()->set_min_hit_count(c.admission_min_hit_count);
  out->mutable_eviction()->set_ttl_steps(c.ttl_steps);
  out->mutable_eviction()->set_capacity_rows(c.capacity_rows);
  out->mutable_eviction()->set_policy(
      c.eviction_policy == EvictionPolicy::kLru ? v1::EVICTION_POLICY_LRU
      : c.eviction_policy == EvictionPolicy::kLfu
          ? v1::EVICTION_POLICY_LFU
          : v1::EVICTION_POLICY_UNSPECIFIED);
  out->set_non_finite_policy(NonFiniteToProto(c.non_finite_policy));
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
