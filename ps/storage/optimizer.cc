#include "ps/storage/optimizer.h"

#include <algorithm>
#include <cmath>

#include "common/status.h"

namespace plexus::ps {
namespace {

class Sgd final : public Optimizer {
 public:
  explicit Sgd(const OptimizerConfig& c)
      : Optimizer(c), lr_(static_cast<float>(c.learning_rate)) {}
  int num_slots() const override { return 0; }
  void Apply(float* __restrict w, float* const* slots,
             const float* __restrict g, int64_t n, int64_t t) const override {
    const float lr = lr_;
    for (int64_t i = 0; i < n; ++i) w[i] -= lr * g[i];
  }

 private:
  const float lr_;
};

class Momentum final : public Optimizer {
 public:
  explicit Momentum(const OptimizerConfig& c)
      : Optimizer(c),
        lr_(static_cast<float>(c.learning_rate)),
        mu_(static_cast<float>(c.momentum)),
        nesterov_(c.nesterov) {}
  int num_slots() const override { return 1; }
  void Apply(float* __restrict w, float* const* slots,
             const float* __restrict g, int64_t n, int64_t t) const override {
    float* __restrict m = slots[0];
    const float lr = lr_, mu = mu_;
    if (nesterov_) {
      for (int64_t i = 0; i < n; ++i) {
        m[i] = mu * m[i] + g[i];
        w[i] -= lr * (g[i] + mu * m[i]);
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        m[i] = mu * m[i] + g[i];
        w[i] -= lr * m[i];
      }
    }
  }

 private:
  const float lr_, mu_;
  const bool nesterov_;
};

class Adagrad final : public Optimizer {
 public:
  explicit Adagrad(const OptimizerConfig& c)
      : Optimizer(c),
        lr_(static_cast<float>(c.learning_rate)),
        eps_(static_cast<float>(c.epsilon)),
        init_(static_cast<float>(c.initial_accumulator_value)) {}
  int num_slots() const override { return 1; }
  float slot_initial_value(int k) const override { return init_; }
  void Apply(float* __restrict w, float* const* slots,
             const float* __restrict g, int64_t n, int64_t t) const override {
    float* __restrict a = slots[0];
    const float lr = lr_, eps = eps_;
    for (int64_t i = 0; i < n; ++i) {
      a[i] += g[i] * g[i];
      w[i] -= lr * g[i] / (std::sqrt(a[i]) + eps);
    }
  }

 private:
  const float lr_, eps_, init_;
};

// Adam and AdamW (weight_decay > 0 only for AdamW).
class Adam final : public Optimizer {
 public:
  Adam(const OptimizerConfig& c, bool decoupled)
      : Optimizer(c),
        lr_(static_cast<float>(c.learning_rate)),
        b1_(static_cast<float>(c.beta1)),
        b2_(static_cast<float>(c.beta2)),
        eps_(static_cast<float>(c.epsilon)),
        wd_(decoupled ? static_cast<float>(c.weight_decay) : 0.0f) {}
  int num_slots() const override { return 2; }
  void Apply(float* __restrict w, float* const* slots,
             const float* __restrict g, int64_t n, int64_t t) const override {
    float* __restrict m = slots[0];
    float* __restrict v = slots[1];
    const float b1 = b1_, b2 = b2_, eps = eps_, lr = lr_, wd = wd_;
    const double td = static_cast<double>(t);
    const float c1 = static_cast<float>(1.0 / (1.0 - std::pow(double{b1}, td)));
    const float c2 = static_cast<float>(1.0 / (1.0 - std::pow(double{b2}, td)));
    const float ob1 = 1.0f - b1, ob2 = 1.0f - b2;
    for (int64_t i = 0; i < n; ++i) {
      m[i] = b1 * m[i] + ob1 * g[i];
      v[i] = b2 * v[i] + ob2 * g[i] * g[i];
      const float update = (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
      w[i] -= lr * (update + wd * w[i]);
    }
  }

 private:
  const float lr_, b1_, b2_, eps_, wd_;
};

class Ftrl final : public Optimizer {
 public:
  explicit Ftrl(const OptimizerConfig& c)
      : Optimizer(c),
        lr_(static_cast<float>(c.learning_rate)),
        neg_p_(static_cast<float>(-c.learning_rate_power)),
        init_(static_cast<float>(c.initial_accumulator_value)),
        l1_(static_cast<float>(c.l1)),
        l2_(static_cast<float>(c.l2)),
        l2s_(static_cast<float>(c.l2_shrinkage)),
        beta_(static_cast<float>(c.beta)) {}
  int num_slots() const override { return 2; }
  float slot_initial_value(int k) const override { return k == 1 ? init_ : 0; }
  void Apply(float* __restrict w, float* const* slots,
             const float* __restrict g, int64_t n, int64_t t) const override {
    float* __restrict z = slots[0];
    float* __restrict acc = slots[1];
    const float inv_lr = 1.0f / lr_, l1 = l1_, l2 = l2_, l2s = l2s_;
    const float beta_term = beta_ * inv_lr;
    if (neg_p_ == 0.5f) {
      for (int64_t i = 0; i < n; ++i) {
        const float gs = g[i] + 2.0f * l2s * w[i];
        const float n_new = acc[i] + g[i] * g[i];
        const float s_new = std::sqrt(n_new);
        z[i] += gs - (s_new - std::sqrt(acc[i])) * inv_lr * w[i];
        acc[i] = n_new;
        const float quad = s_new * inv_lr + 2.0f * l2 + beta_term;
        // z shrunk towards 0 by l1 (0 within [-l1, l1]), without branches
        // so that the loop vectorises; the same bits as the three cases.
        const float zc = z[i] - std::min(std::max(z[i], -l1), l1);
        w[i] = -zc / quad;
      }
    } else {
      const float np = neg_p_;
      for (int64_t i = 0; i < n; ++i) {
        const float gs = g[i] + 2.0f * l2s * w[i];
        const float n_new = acc[i] + g[i] * g[i];
        const float p_new = std::pow(n_new, np);
        z[i] += gs - (p_new - std::pow(acc[i], np)) * inv_lr * w[i];
        acc[i] = n_new;
        const float quad = p_new * inv_lr + 2.0f * l2 + beta_term;
        // z shrunk towards 0 by l1 (0 within [-l1, l1]), without branches
        // so that the loop vectorises; the same bits as the three cases.
        const float zc = z[i] - std::min(std::max(z[i], -l1), l1);
        w[i] = -zc / quad;
      }
    }
  }

 private:
  const float lr_, neg_p_, init_, l1_, l2_, l2s_, beta_;
};

class RmsProp final : public Optimizer {
 public:
  explicit RmsProp(const OptimizerConfig& c)
      : Optimizer(c),
        lr_(static_cast<float>(c.learning_rate)),
        rho_(static_cast<float>(c.rho)),
        mu_(static_cast<float>(c.momentum)),
        eps_(static_cast<float>(c.epsilon)),
        centered_(c.centered) {}
  int num_slots() const override { return centered_ ? 3 : 2; }
  void Apply(float* __restrict w, float* const* slots,
             const float* __restrict g, int64_t n, int64_t t) const override {
    float* __restrict ms = slots[0];
    float* __restrict mom = slots[1];
    const float rho = rho_, orho = 1.0f - rho_, mu = mu_, lr = lr_, eps = eps_;
    if (centered_) {
      float* __restrict mg = slots[2];
      for (int64_t i = 0; i < n; ++i) {
        ms[i] = rho * ms[i] + orho * g[i] * g[i];
        mg[i] = rho * mg[i] + orho * g[i];
        const float d = ms[i] - mg[i] * mg[i];
        mom[i] = mu * mom[i] + lr * g[i] / std::sqrt(d + eps);
        w[i] -= mom[i];
      }
    } else {
      for (int64_t i = 0; i < n; ++i) {
        ms[i] = rho * ms[i] + orho * g[i] * g[i];
        mom[i] = mu * mom[i] + lr * g[i] / std::sqrt(ms[i] + eps);
        w[i] -= mom[i];
      }
    }
  }

 private:
  const float lr_, rho_, mu_, eps_;
  const bool centered_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> CreateOptimizer(
    const OptimizerConfig& config) {
  PLEXUS_RETURN_IF_ERROR(ValidateOptimizer(config));
  using K = OptimizerConfig::Kind;
  switch (config.kind) {
    case K::kSgd:
      return std::make_unique<Sgd>(config);
    case K::kMomentum:
      return std::make_unique<Momentum>(config);
    case K::kAdagrad:
      return std::make_unique<Adagrad>(config);
    case K::kAdam:
      return std::make_unique<Adam>(config, /*decoupled=*/false);
    case K::kAdamW:
      return std::make_unique<Adam>(config, /*decoupled=*/true);
    case K::kFtrl:
      return std::make_unique<Ftrl>(config);
    case K::kRmsProp:
      return std::make_unique<RmsProp>(config);
    default:
      return absl::InvalidArgumentError("optimizer: kind not set");
  }
}

}  // namespace plexus::ps
