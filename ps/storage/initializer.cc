#include "ps/storage/initializer.h"

#include <cmath>

#include "common/hash.h"

namespace plexus::ps {
namespace {

class Stream {
 public:
  explicit Stream(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    state_ += 0x9e3779b97f4a7c15ULL;
    return Mix64(state_);
  }
  // Uniform on [0, 1) with 53 random bits.
  double NextUnit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  uint64_t state_;
};

float UniformValue(double lo, double hi, double u) {
  const float f = static_cast<float>(lo + (hi - lo) * u);
  // Rounding to fp32 may reach the open upper bound: step back below it.
  const float fhi = static_cast<float>(hi);
  return f >= fhi && static_cast<double>(fhi) >= hi
             ? std::nextafter(fhi, -INFINITY)
             : f;
}

}  // namespace

uint64_t RowStreamSeed(uint64_t seed, uint64_t name_hash, uint64_t key) {
  return Mix64(seed ^ HashRow(name_hash, key));
}

void InitializeRow(const InitializerConfig& c, uint64_t name_hash, uint64_t key,
                   float* out, int64_t n) {
  using K = InitializerConfig::Kind;
  switch (c.kind) {
    case K::kZeros:
      for (int64_t i = 0; i < n; ++i) out[i] = 0.0f;
      return;
    case K::kConstant: {
      const float v = static_cast<float>(c.value);
      for (int64_t i = 0; i < n; ++i) out[i] = v;
      return;
    }
    case K::kUniform: {
      Stream s(RowStreamSeed(c.seed, name_hash, key));
      for (int64_t i = 0; i < n; ++i) {
        out[i] = UniformValue(c.min, c.max, s.NextUnit());
      }
      return;
    }
    case K::kNormal: {
      Stream s(RowStreamSeed(c.seed, name_hash, key));
      for (int64_t i = 0; i < n; ++i) {
        double z;
        do {
          // Box-Muller, one value per pair of draws (simple and stateless).
          const double u1 = 1.0 - s.NextUnit();  // (0, 1]
          const double u2 = s.NextUnit();
          z = std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
        } while (c.truncated && std::fabs(z) > 2.0);
        out[i] = static_cast<float>(c.mean + c.stddev * z);
      }
      return;
    }
  }
}

}  // namespace plexus::ps
