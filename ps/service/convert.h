// Translation between the wire types (plexus.v1, ps.proto) and the storage
// engine's types (ps/storage). One function per concept; tensors are
// borrowed, never copied, on the way in.
//
// Thread safety: pure functions.
#pragma once

#include "absl/status/statusor.h"
#include "plexus/v1/ps.pb.h"
#include "ps/storage/config.h"
#include "ps/storage/engine.h"
#include "ps/storage/tensor.h"

namespace plexus::ps {

absl::StatusOr<DType> FromProto(v1::DType dtype);
v1::DType ToProto(DType dtype);

RowRange FromProto(const v1::RowRange& r);
void ToProto(const RowRange& r, v1::RowRange* out);

// A view of `t`'s bytes and shape. INVALID_ARGUMENT for a dtype the engine
// does not take. `t` must outlive the view.
absl::StatusOr<TensorView> ViewOf(const v1::Tensor& t);

absl::StatusOr<InitializerConfig> FromProto(const v1::InitializerConfig& c);
absl::StatusOr<OptimizerConfig> FromProto(const v1::OptimizerConfig& c);
absl::StatusOr<ConsistencyConfig> FromProto(const v1::ConsistencyConfig& c);
absl::StatusOr<VariableConfig> FromProto(const v1::VariableConfig& c);
absl::StatusOr<TableConfig> FromProto(const v1::TableConfig& c);

// Engine config -> wire config (after a restore, for what the engine holds
// but this process never saw created). Hyper-parameters come back as the
// engine keeps them (rounded to fp32); memory_budget_bytes is not kept.
void ToProto(const VariableConfig& c, v1::VariableConfig* out);
void ToProto(const TableConfig& c, v1::TableConfig* out);

// Engine outcome -> wire outcome.
v1::PushOutcome ToProto(PushOutcome outcome);

}  // namespace plexus::ps
