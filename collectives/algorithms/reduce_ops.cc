#include "collectives/algorithms/reduce_ops.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "glog/logging.h"

namespace plexus::collectives {

float HalfToFloat(uint16_t h) {
  return static_cast<float>(std::bit_cast<_Float16>(h));
}
uint16_t FloatToHalf(float f) {
  return std::bit_cast<uint16_t>(static_cast<_Float16>(f));
}
float BFloat16ToFloat(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}
uint16_t FloatToBFloat16(float f) {
  uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffff) > 0x7f800000) return 0x7fc0;  // NaN
  u += 0x7fff + ((u >> 16) & 1);                     // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

namespace {

struct Sum {
  template <typename T>
  T operator()(T a, T b) const {
    return a + b;
  }
};
struct Prod {
  template <typename T>
  T operator()(T a, T b) const {
    return a * b;
  }
};
struct Min {
  template <typename T>
  T operator()(T a, T b) const {
    return b < a ? b : a;
  }
};
struct Max {
  template <typename T>
  T operator()(T a, T b) const {
    return a < b ? b : a;
  }
};

template <typename T, typename F>
void Apply(void* dst, const void* src, size_t n, F f) {
  T* __restrict d = static_cast<T*>(dst);
  const T* __restrict s = static_cast<const T*>(src);
  for (size_t i = 0; i < n; ++i) d[i] = f(d[i], s[i]);
}

template <typename T, typename F>
void Apply3(void* dst, const void* a, const void* b, size_t n, F f) {
  T* __restrict d = static_cast<T*>(dst);
  const T* __restrict x = static_cast<const T*>(a);
  const T* __restrict y = static_cast<const T*>(b);
  for (size_t i = 0; i < n; ++i) d[i] = f(x[i], y[i]);
}

// 16-bit floats: widen, apply, round back.
template <float (*ToF)(uint16_t), uint16_t (*FromF)(float), typename F>
void Apply16(void* dst, const void* src, size_t n, F f) {
  uint16_t* __restrict d = static_cast<uint16_t*>(dst);
  const uint16_t* __restrict s = static_cast<const uint16_t*>(src);
  for (size_t i = 0; i < n; ++i) d[i] = FromF(f(ToF(d[i]), ToF(s[i])));
}
template <float (*ToF)(uint16_t), uint16_t (*FromF)(float), typename F>
void Apply16x3(void* dst, const void* a, const void* b, size_t n, F f) {
  uint16_t* __restrict d = static_cast<uint16_t*>(dst);
  const uint16_t* __restrict x = static_cast<const uint16_t*>(a);
  const uint16_t* __restrict y = static_cast<const uint16_t*>(b);
  for (size_t i = 0; i < n; ++i) d[i] = FromF(f(ToF(x[i]), ToF(y[i])));
}

template <typename F>
void Dispatch(DataType type, void* dst, const void* src, size_t n, F f) {
  switch (type) {
    case DataType::kFloat32:
      return Apply<float>(dst, src, n, f);
    case DataType::kFloat64:
      return Apply<double>(dst, src, n, f);
    case DataType::kInt32:
      return Apply<int32_t>(dst, src, n, f);
    case DataType::kInt64:
      return Apply<int64_t>(dst, src, n, f);
    case DataType::kFloat16:
      return Apply16<HalfToFloat, FloatToHalf>(dst, src, n, f);
    case DataType::kBFloat16:
      return Apply16<BFloat16ToFloat, FloatToBFloat16>(dst, src, n, f);
  }
  LOG(FATAL) << "bad data type";
}

template <typename F>
void Dispatch3(DataType type, void* dst, const void* a, const void* b, size_t n,
               F f) {
  switch (type) {
    case DataType::kFloat32:
      return Apply3<float>(dst, a, b, n, f);
    case DataType::kFloat64:
      return Apply3<double>(dst, a, b, n, f);
    case DataType::kInt32:
      return Apply3<int32_t>(dst, a, b, n, f);
    case DataType::kInt64:
      return Apply3<int64_t>(dst, a, b, n, f);
    case DataType::kFloat16:
      return Apply16x3<HalfToFloat, FloatToHalf>(dst, a, b, n, f);
    case DataType::kBFloat16:
      return Apply16x3<BFloat16ToFloat, FloatToBFloat16>(dst, a, b, n, f);
  }
  LOG(FATAL) << "bad data type";
}

template <typename T>
void Divide(void* buf, size_t n, T divisor) {
  T* b = static_cast<T*>(buf);
  for (size_t i = 0; i < n; ++i) b[i] = b[i] / divisor;
}

}  // namespace

void ReduceInto(DataType type, ReduceOp op, void* dst, const void* src,
                size_t count) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return Dispatch(type, dst, src, count, Sum{});
    case ReduceOp::kProd:
      return Dispatch(type, dst, src, count, Prod{});
    case ReduceOp::kMin:
      return Dispatch(type, dst, src, count, Min{});
    case ReduceOp::kMax:
      return Dispatch(type, dst, src, count, Max{});
  }
  LOG(FATAL) << "bad reduce op";
}

void ReduceInto(DataType type, ReduceOp op, void* dst, const void* a,
                const void* b, size_t count) {
  if (dst == a) return ReduceInto(type, op, dst, b, count);
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return Dispatch3(type, dst, a, b, count, Sum{});
    case ReduceOp::kProd:
      return Dispatch3(type, dst, a, b, count, Prod{});
    case ReduceOp::kMin:
      return Dispatch3(type, dst, a, b, count, Min{});
    case ReduceOp::kMax:
      return Dispatch3(type, dst, a, b, count, Max{});
  }
  LOG(FATAL) << "bad reduce op";
}

void FinishAvg(DataType type, void* buf, size_t count, int divisor) {
  if (divisor == 1) return;
  switch (type) {
    case DataType::kFloat32:
      return Divide<float>(buf, count, divisor);
    case DataType::kFloat64:
      return Divide<double>(buf, count, divisor);
    case DataType::kInt32:
      return Divide<int32_t>(buf, count, divisor);
    case DataType::kInt64:
      return Divide<int64_t>(buf, count, divisor);
    case DataType::kFloat16:
    case DataType::kBFloat16: {
      const bool half = type == DataType::kFloat16;
      uint16_t* b = static_cast<uint16_t*>(buf);
      for (size_t i = 0; i < count; ++i) {
        float v = (half ? HalfToFloat(b[i]) : BFloat16ToFloat(b[i])) / divisor;
        b[i] = half ? FloatToHalf(v) : FloatToBFloat16(v);
      }
      return;
    }
  }
}

}  // namespace plexus::collectives
