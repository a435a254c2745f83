#include "plexus/collectives/options.h"

#include "absl/strings/ascii.h"
#include "glog/logging.h"

namespace plexus::collectives {

size_t DataTypeSize(DataType type) {
  switch (type) {
    case DataType::kFloat32:
    case DataType::kInt32:
      return 4;
    case DataType::kFloat64:
    case DataType::kInt64:
      return 8;
    case DataType::kFloat16:
    case DataType::kBFloat16:
      return 2;
  }
  LOG(FATAL) << "bad data type " << static_cast<int>(type);
}

absl::string_view DataTypeName(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return "fp32";
    case DataType::kFloat64:
      return "fp64";
    case DataType::kFloat16:
      return "fp16";
    case DataType::kBFloat16:
      return "bf16";
    case DataType::kInt32:
      return "int32";
    case DataType::kInt64:
      return "int64";
  }
  return "?";
}

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMin:
      return "min";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kProd:
      return "prod";
  }
  return "?";
}

absl::string_view AlgorithmName(Algorithm algorithm) {
  switch (algorithm) {
    case Algorithm::kAuto:
      return "auto";
    case Algorithm::kRing:
      return "ring";
    case Algorithm::kTree:
      return "tree";
    case Algorithm::kRecursiveDoubling:
      return "rd";
  }
  return "?";
}

std::optional<Algorithm> ParseAlgorithm(absl::string_view name) {
  const std::string s = absl::AsciiStrToLower(name);
  if (s == "auto") return Algorithm::kAuto;
  if (s == "ring") return Algorithm::kRing;
  if (s == "tree") return Algorithm::kTree;
  if (s == "rd" || s == "recursive_doubling") {
    return Algorithm::kRecursiveDoubling;
  }
  return std::nullopt;
}

absl::string_view BackendName(Backend backend) {
  switch (backend) {
    case Backend::kAuto:
      return "auto";
    case Backend::kUcx:
      return "ucx";
    case Backend::kNccl:
      return "nccl";
    case Backend::kHierarchical:
      return "hierarchical";
  }
  return "?";
}

std::optional<Backend> ParseBackend(absl::string_view name) {
  const std::string s = absl::AsciiStrToLower(name);
  if (s == "auto") return Backend::kAuto;
  if (s == "ucx") return Backend::kUcx;
  if (s == "nccl") return Backend::kNccl;
  if (s == "hierarchical" || s == "hier") return Backend::kHierarchical;
  return std::nullopt;
}

}  // namespace plexus::collectives
