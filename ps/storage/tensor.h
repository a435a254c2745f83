// Element types, row ranges and borrowed tensor views: the vocabulary of the
// storage engine's API (engine.h). These are plain C++ types, not the wire
// types; ps/service translates plexus.v1.Tensor to TensorView without copying
// (TensorView borrows the proto's bytes).
//
// Thread safety: the types are values; the functions are pure and may be
// called from any thread.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace plexus::ps {

// Element types the engine reads and writes. Values mirror plexus.v1.DType so
// the service can cast; only the floating types are accepted for values and
// gradients.
enum class DType : int {
  kUnspecified = 0,
  kFloat32 = 1,
  kFloat64 = 2,
  kFloat16 = 3,
  kBFloat16 = 4,
};

// Bytes per element: 4, 8, 2, 2; 0 for kUnspecified.
int DTypeSize(DType dtype);
// "float32", "float16", ...
absl::string_view DTypeName(DType dtype);
// True for the dtypes a variable or table may be stored in (fp32/fp16/bf16).
bool IsStorageDType(DType dtype);
// True for the dtypes gradients and pulled values may travel in
// (fp32/fp16/bf16).
bool IsTransferDType(DType dtype);

// A half-open row range [begin, end) along axis 0 of a dense variable, in
// whole-variable row coordinates. begin == end is empty.
struct RowRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool empty() const { return end == begin; }
  friend bool operator==(const RowRange&, const RowRange&) = default;
};

// A borrowed, read-only dense tensor: dtype, shape (outermost first) and its
// bytes in row-major order, little-endian, no padding. The caller keeps the
// shape and bytes alive for the duration of the call it passes the view to.
struct TensorView {
  DType dtype = DType::kUnspecified;
  absl::Span<const int64_t> shape;
  absl::string_view data;
};

// Element count of `shape`: INVALID_ARGUMENT for a negative dimension or a
// product that overflows int64. An empty shape is a scalar (1).
absl::StatusOr<int64_t> ElementCount(absl::Span<const int64_t> shape);

// Checks that `view` is a well-formed tensor of a transfer dtype and shape
// `expected_shape`, and that its byte length matches exactly. Never allocates.
absl::Status CheckTensor(const TensorView& view,
                         absl::Span<const int64_t> expected_shape,
                         absl::string_view what);

// ---- fp16 / bf16 conversion (round to nearest even; NaN stays NaN) ----

uint16_t FloatToHalf(float f);
float HalfToFloat(uint16_t h);
uint16_t FloatToBFloat16(float f);
float BFloat16ToFloat(uint16_t b);

// Converts `n` elements of `dtype` at `src` (unaligned bytes allowed) to fp32.
void ToFloat(DType dtype, const void* src, int64_t n, float* dst);
// Converts `n` elements of `dtype` at `src` to fp32 into *dst (resized; fp32
// is copied without first zero-filling).
void ToFloat(DType dtype, const void* src, int64_t n, std::vector<float>* dst);

// True when none of the `n` floats at `p` is NaN or +-Inf.
bool AllFinite(const float* p, int64_t n);
// Converts `n` fp32 values to `dtype` at `dst` (unaligned bytes allowed).
void FromFloat(DType dtype, const float* src, int64_t n, void* dst);

}  // namespace plexus::ps
