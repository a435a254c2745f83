// Test helpers shared by the in-process communicator test and the rank program
// of the multi-process test: deterministic inputs per (rank, element, seed),
// chosen so that every dtype represents them and their sums and products
// exactly, and a reference computed from them in double precision.
//
// Tolerance: integers must match exactly; floats within
// rel_tol * max(1, |reference|), rel_tol = 1e-6 (fp32, fp64) or 1e-2 (fp16,
// bf16). Only kAvg can round at all with these inputs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "collectives/algorithms/reduce_ops.h"
#include "plexus/collectives/options.h"

namespace plexus::collectives::testing {

// Inputs in [-8, 8] for sum/avg/min/max; in {1, -1, 2} for prod (products of
// up to 8 ranks stay within 2^8, exact in bf16).
inline double InputValue(ReduceOp op, int rank, size_t i, int seed) {
  const uint64_t h = rank * 2654435761u + i * 40503u + seed * 97u;
  if (op == ReduceOp::kProd) {
    static const double kChoices[] = {1, -1, 2, 1};
    return kChoices[(h >> 3) % 4];
  }
  return static_cast<double>((h >> 3) % 17) - 8.0;
}

inline void Store(DataType type, void* buf, size_t i, double v) {
  switch (type) {
    case DataType::kFloat32:
      static_cast<float*>(buf)[i] = v;
      break;
    case DataType::kFloat64:
      static_cast<double*>(buf)[i] = v;
      break;
    case DataType::kInt32:
      static_cast<int32_t*>(buf)[i] = static_cast<int32_t>(v);
      break;
    case DataType::kInt64:
      static_cast<int64_t*>(buf)[i] = static_cast<int64_t>(v);
      break;
    case DataType::kFloat16:
      static_cast<uint16_t*>(buf)[i] = FloatToHalf(static_cast<float>(v));
      break;
    case DataType::kBFloat16:
      static_cast<uint16_t*>(buf)[i] = FloatToBFloat16(static_cast<float>(v));
      break;
  }
}

inline double Load(DataType type, const void* buf, size_t i) {
  switch (type) {
    case DataType::kFloat32:
      return static_cast<const float*>(buf)[i];
    case DataType::kFloat64:
      return static_cast<const double*>(buf)[i];
    case DataType::kInt32:
      return static_cast<const int32_t*>(buf)[i];
    case DataType::kInt64:
      return static_cast<const int64_t*>(buf)[i];
    case DataType::kFloat16:
      return HalfToFloat(static_cast<const uint16_t*>(buf)[i]);
    case DataType::kBFloat16:
      return BFloat16ToFloat(static_cast<const uint16_t*>(buf)[i]);
  }
  return 0;
}

inline bool IsInteger(DataType t) {
  return t == DataType::kInt32 || t == DataType::kInt64;
}

// Fills `count` elements of rank `rank`'s input, starting at element `first`
// of the logical input vector.
inline std::vector<char> MakeInput(DataType type, ReduceOp op, int rank,
                                   size_t count, int seed, size_t first = 0) {
  std::vector<char> buf(count * DataTypeSize(type));
  for (size_t i = 0; i < count; ++i) {
    Store(type, buf.data(), i, InputValue(op, rank, first + i, seed));
  }
  return buf;
}

// The reduction over ranks 0..n-1 of element i.
inline double Reference(DataType type, ReduceOp op, int n, size_t i, int seed) {
  double acc = InputValue(op, 0, i, seed);
  for (int r = 1; r < n; ++r) {
    const double v = InputValue(op, r, i, seed);
    switch (op) {
      case ReduceOp::kSum:
      case ReduceOp::kAvg:
        acc += v;
        break;
      case ReduceOp::kProd:
        acc *= v;
        break;
      case ReduceOp::kMin:
        acc = std::min(acc, v);
        break;
      case ReduceOp::kMax:
        acc = std::max(acc, v);
        break;
    }
  }
  if (op == ReduceOp::kAvg) {
    acc = IsInteger(type) ? std::trunc(acc / n) : acc / n;
  }
  return acc;
}

inline bool Close(DataType type, double got, double want) {
  if (IsInteger(type)) return got == want;
  const double tol =
      (type == DataType::kFloat16 || type == DataType::kBFloat16) ? 1e-2 : 1e-6;
  return std::fabs(got - want) <= tol * std::max(1.0, std::fabs(want));
}

// Checks `count` elements of `buf` against the reduction of elements
// first..first+count-1. Returns "" or a description of the first mismatch.
inline std::string CheckReduced(DataType type, ReduceOp op, int n,
                                const void* buf, size_t count, int seed,
                                size_t first = 0) {
  for (size_t i = 0; i < count; ++i) {
    const double want = Reference(type, op, n, first + i, seed);
    const double got = Load(type, buf, i);
    if (!Close(type, got, want)) {
      return absl::StrCat("element ", first + i, ": got ", got, ", want ",
                          want);
    }
  }
  return "";
}

inline const std::vector<DataType>& AllTypes() {
  static const std::vector<DataType> kTypes = {
      DataType::kFloat32,  DataType::kFloat64, DataType::kFloat16,
      DataType::kBFloat16, DataType::kInt32,   DataType::kInt64};
  return kTypes;
}
inline const std::vector<ReduceOp>& AllOps() {
  static const std::vector<ReduceOp> kOps = {ReduceOp::kSum, ReduceOp::kAvg,
                                             ReduceOp::kMin, ReduceOp::kMax,
                                             ReduceOp::kProd};
  return kOps;
}

}  // namespace plexus::collectives::testing
