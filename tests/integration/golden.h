// The golden workload of ../shared/FAULTS.md, shared by golden_worker and the
// tests that check its result: step s adds GoldenDelta(s, i) to element i.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "plexus/v1/ps.pb.h"

namespace plexus::testing {

inline constexpr int64_t kGoldenElements = 8;

// A multiple of 1/16 in [1/16, 1]: exact in fp32, and sums of them are exact
// (and so order-independent) while they stay below 2^20.
inline float GoldenDelta(uint64_t step, int64_t i) {
  return static_cast<float>((step * 7 + static_cast<uint64_t>(i) * 3) % 16 +
                            1) /
         16.0f;
}

// The variable after steps 1..num_steps were each applied exactly once to
// zeros.
inline std::vector<float> GoldenValues(uint64_t num_steps, int64_t elements) {
  std::vector<float> w(elements, 0.0f);
  for (uint64_t s = 1; s <= num_steps; ++s) {
    for (int64_t i = 0; i < elements; ++i) w[i] += GoldenDelta(s, i);
  }
  return w;
}

// The golden dense variable: kGoldenElements fp32 zeros, SGD with learning
// rate 1 (so a pushed gradient -d adds d), applied on arrival.
inline v1::VariableConfig GoldenVariableConfig(
    const std::string& name = "golden") {
  v1::VariableConfig v;
  v.set_name(name);
  v.mutable_spec()->set_dtype(v1::DTYPE_FLOAT32);
  v.mutable_spec()->add_shape(kGoldenElements);
  v.mutable_optimizer()->mutable_sgd()->set_learning_rate(1.0);
  v.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  return v;
}

}  // namespace plexus::testing
