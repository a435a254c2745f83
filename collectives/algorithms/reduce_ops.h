// Element-wise reductions over the public data types. fp16 and bf16 are
// reduced through float with one rounding per operation. kAvg reduces as a
// sum; FinishAvg divides afterwards.
//
// Thread safety: pure functions over caller-owned memory.
#pragma once

#include <cstddef>
#include <cstdint>

#include "plexus/collectives/options.h"

namespace plexus::collectives {

// dst[i] = dst[i] op src[i] for i < count.
void ReduceInto(DataType type, ReduceOp op, void* dst, const void* src,
                size_t count);
// dst[i] = a[i] op b[i] for i < count: the same order and bits as
// ReduceInto(dst = a, src = b), without first copying a into dst. REQUIRES:
// dst is a or overlaps neither a nor b.
void ReduceInto(DataType type, ReduceOp op, void* dst, const void* a,
                const void* b, size_t count);
// buf[i] /= divisor (the second half of kAvg).
void FinishAvg(DataType type, void* buf, size_t count, int divisor);

// Conversions, exposed for tests and the reference implementation.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float BFloat16ToFloat(uint16_t b);
uint16_t FloatToBFloat16(float f);

}  // namespace plexus::collectives
