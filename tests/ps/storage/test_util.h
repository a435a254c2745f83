// Helpers for the storage-engine tests: owned tensors to build TensorViews
// from, configs with few fields, and decoding of pulled values.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "ps/storage/engine.h"

namespace plexus::ps::testing {

// An owned tensor; view() borrows it.
struct OwnedTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  std::string bytes;
  TensorView view() const { return {dtype, shape, bytes}; }
};

inline OwnedTensor F32(std::vector<int64_t> shape,
                       const std::vector<float>& values) {
  OwnedTensor t{DType::kFloat32, std::move(shape), std::string()};
  t.bytes.resize(values.size() * 4);
  if (!values.empty()) {
    std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  }
  return t;
}

inline std::vector<float> Decode(DType dtype, const std::string& data) {
  const int64_t n = static_cast<int64_t>(data.size()) / DTypeSize(dtype);
  std::vector<float> out(static_cast<size_t>(n));
  ToFloat(dtype, data.data(), n, out.data());
  return out;
}

inline OptimizerConfig Sgd(double lr) {
  return {.kind = OptimizerConfig::Kind::kSgd, .learning_rate = lr};
}

inline ConsistencyConfig Async() { return {.mode = ConsistencyMode::kAsync}; }

inline TableConfig SimpleTable(const std::string& name, int64_t dim,
                               double lr = 0.5) {
  TableConfig c;
  c.name = name;
  c.dim = dim;
  c.optimizer = Sgd(lr);
  c.consistency = Async();
  return c;
}

inline VariableConfig SimpleVariable(const std::string& name,
                                     std::vector<int64_t> shape,
                                     double lr = 0.5) {
  VariableConfig c;
  c.name = name;
  c.shape = std::move(shape);
  c.optimizer = Sgd(lr);
  c.consistency = Async();
  return c;
}

inline std::unique_ptr<Engine> NewEngine(EngineOptions options = {}) {
  auto engine = CreateEngine(options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return *std::move(engine);
}

// Pulls `ids` of `table` (no create, no wait) as fp32.
inline std::vector<float> PullRows(Engine& e, const std::string& table,
                                   const std::vector<uint64_t>& ids) {
  SparseRead r{table, ids, false};
  auto res = e.Pull({}, {}, {&r, 1});
  EXPECT_TRUE(res.ok()) << res.status();
  if (!res.ok()) return {};
  return Decode(res->sparse[0].dtype, res->sparse[0].data);
}

// Pulls this shard's whole slice of `variable` as fp32.
inline std::vector<float> PullDense(Engine& e, const std::string& variable) {
  DenseRead r{variable, {}};
  auto res = e.Pull({}, {&r, 1}, {});
  EXPECT_TRUE(res.ok()) << res.status();
  if (!res.ok()) return {};
  return Decode(res->dense[0].dtype, res->dense[0].data);
}

// Pushes fp32 sparse gradients without exactly-once bookkeeping.
inline absl::StatusOr<PushResult> PushRows(Engine& e, const std::string& table,
                                           const std::vector<uint64_t>& ids,
                                           const std::vector<float>& grads,
                                           PushOptions options = {
                                               .exactly_once = false}) {
  const int64_t dim =
      ids.empty() ? 0 : static_cast<int64_t>(grads.size() / ids.size());
  OwnedTensor g = F32({static_cast<int64_t>(ids.size()), dim}, grads);
  SparseGradient sg{table, ids, g.view()};
  return e.Push(options, {}, {&sg, 1});
}

}  // namespace plexus::ps::testing
