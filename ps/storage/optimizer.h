// Server-side optimizers. One Optimizer object per variable or table, built
// from a validated OptimizerConfig; it holds only hyper-parameters (fp32) and
// is immutable, so Apply may run on many threads at once on disjoint rows.
//
// State layout: a run of `n` parameters has num_slots() slot arrays of `n`
// fp32 each (slot k for element i at slots[k][i]). Sparse tables keep the
// slots of a row next to its value; dense variables keep one array per slot.
//
// Update rules (g the gradient, t the 1-based count of updates this row has
// received, including this one; every computation in fp32):
//   SGD       w -= lr*g
//   Momentum  m = mu*m + g;  w -= lr*m   (Nesterov: w -= lr*(g + mu*m))
//   Adagrad   a += g^2;  w -= lr*g/(sqrt(a) + eps)              slots: a
//   Adam      m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//             w -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps)   slots: m, v
//   AdamW     as Adam with w -= lr*(adam_update + wd*w) (w before the step)
//   FTRL      (TF's Ftrl, with l2_shrinkage and Keras' beta)      slots: z, n
//             gs = g + 2*l2s*w;  n' = n + g^2;
//             z += gs - (n'^-p - n^-p)/lr * w;  n = n'
//             w = |z| <= l1 ? 0 : (sign(z)*l1 - z) / (n'^-p/lr + 2*l2 +
//             beta/lr) (p = learning_rate_power, -p >= 0)
//   RMSProp   (TF's raw op) ms = rho*ms + (1-rho)*g^2;
//             centered: mg = rho*mg + (1-rho)*g, d = ms - mg^2, else d = ms
//             mom = mu*mom + lr*g/sqrt(d + eps);  w -= mom
//                                             slots: ms, mom (, mg if centered)
// Inner loops are plain loops over float arrays that the compiler vectorises.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "ps/storage/config.h"

namespace plexus::ps {

class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Number of fp32 slot arrays per parameter (0 for SGD).
  virtual int num_slots() const = 0;

  // Initial value of slot `k` (e.g. Adagrad's initial accumulator).
  virtual float slot_initial_value(int k) const { return 0.0f; }

  // Applies one update to `n` parameters: w[i], slots[k][i], g[i]. `t` >= 1
  // is the row's update count including this one (used by Adam's bias
  // correction). REQUIRES: the arrays do not alias and hold n elements.
  virtual void Apply(float* w, float* const* slots, const float* g, int64_t n,
                     int64_t t) const = 0;

  const OptimizerConfig& config() const { return config_; }

 protected:
  explicit Optimizer(const OptimizerConfig& config) : config_(config) {}

 private:
  const OptimizerConfig config_;
};

// Validates `config` (INVALID_ARGUMENT naming the field) and builds it.
absl::StatusOr<std::unique_ptr<Optimizer>> CreateOptimizer(
    const OptimizerConfig& config);

}  // namespace plexus::ps
