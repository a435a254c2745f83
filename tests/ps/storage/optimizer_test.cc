// Each optimizer against a plain reference written separately (double
// precision, scalar, straight from the published formulas) over several
// steps, for dense-style runs and lazily updated sparse rows.
#include "ps/storage/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace plexus::ps {
namespace {

using K = OptimizerConfig::Kind;

// The reference: state per element, one step at a time.
struct RefState {
  double w, s0 = 0, s1 = 0, s2 = 0;
  int64_t t = 0;
};

void RefStep(const OptimizerConfig& c, RefState& st, double g) {
  ++st.t;
  const double lr = c.learning_rate;
  switch (c.kind) {
    case K::kSgd:
      st.w = st.w - lr * g;
      break;
    case K::kMomentum: {
      double m = c.momentum * st.s0 + g;
      st.s0 = m;
      st.w = c.nesterov ? st.w - lr * (g + c.momentum * m) : st.w - lr * m;
      break;
    }
    case K::kAdagrad:
      st.s0 = st.s0 + g * g;
      st.w = st.w - lr * g / (std::sqrt(st.s0) + c.epsilon);
      break;
    case K::kAdam:
    case K::kAdamW: {
      st.s0 = c.beta1 * st.s0 + (1 - c.beta1) * g;
      st.s1 = c.beta2 * st.s1 + (1 - c.beta2) * g * g;
      const double mhat = st.s0 / (1 - std::pow(c.beta1, st.t));
      const double vhat = st.s1 / (1 - std::pow(c.beta2, st.t));
      const double wd = c.kind == K::kAdamW ? c.weight_decay : 0.0;
      st.w = st.w - lr * (mhat / (std::sqrt(vhat) + c.epsilon) + wd * st.w);
      break;
    }
    case K::kFtrl: {
      // McMahan et al. with TF's shrinkage and Keras' beta.
      const double p = -c.learning_rate_power;
      const double g_shr = g + 2 * c.l2_shrinkage * st.w;
      const double n_old = st.s1, n_new = st.s1 + g * g;
      const double sigma = (std::pow(n_new, p) - std::pow(n_old, p)) / lr;
      st.s0 += g_shr - sigma * st.w;
      st.s1 = n_new;
      const double z = st.s0;
      if (std::fabs(z) <= c.l1) {
        st.w = 0;
      } else {
        const double sgn = z > 0 ? 1.0 : -1.0;
        st.w = -(z - sgn * c.l1) /
               (std::pow(n_new, p) / lr + 2 * c.l2 + c.beta / lr);
      }
      break;
    }
    case K::kRmsProp: {
      st.s0 = c.rho * st.s0 + (1 - c.rho) * g * g;
      double denom = st.s0;
      if (c.centered) {
        st.s2 = c.rho * st.s2 + (1 - c.rho) * g;
        denom -= st.s2 * st.s2;
      }
      st.s1 = c.momentum * st.s1 + lr * g / std::sqrt(denom + c.epsilon);
      st.w -= st.s1;
      break;
    }
    default:
      FAIL() << "no reference";
  }
}

struct Case {
  const char* name;
  OptimizerConfig config;
};

std::vector<Case> Cases() {
  std::vector<Case> cases;
  auto add = [&](const char* name, OptimizerConfig c) {
    cases.push_back({name, c});
  };
  add("sgd", {.kind = K::kSgd, .learning_rate = 0.1});
  add("momentum",
      {.kind = K::kMomentum, .learning_rate = 0.05, .momentum = 0.9});
  add("nesterov", {.kind = K::kMomentum,
                   .learning_rate = 0.05,
                   .momentum = 0.9,
                   .nesterov = true});
  add("adagrad", {.kind = K::kAdagrad,
                  .learning_rate = 0.1,
                  .initial_accumulator_value = 0.1,
                  .epsilon = 1e-7});
  add("adam", {.kind = K::kAdam,
               .learning_rate = 0.01,
               .epsilon = 1e-8,
               .beta1 = 0.9,
               .beta2 = 0.999});
  add("adamw", {.kind = K::kAdamW,
                .learning_rate = 0.01,
                .epsilon = 1e-8,
                .beta1 = 0.9,
                .beta2 = 0.999,
                .weight_decay = 0.01});
  add("ftrl", {.kind = K::kFtrl,
               .learning_rate = 0.1,
               .initial_accumulator_value = 0.1,
               .learning_rate_power = -0.5,
               .l1 = 0.001,
               .l2 = 0.01,
               .l2_shrinkage = 0.001,
               .beta = 0.5});
  add("ftrl_pow", {.kind = K::kFtrl,
                   .learning_rate = 0.1,
                   .initial_accumulator_value = 0.1,
                   .learning_rate_power = -0.7,
                   .l1 = 0.0,
                   .l2 = 0.0});
  add("rmsprop", {.kind = K::kRmsProp,
                  .learning_rate = 0.01,
                  .momentum = 0.5,
                  .epsilon = 1e-7,
                  .rho = 0.9});
  add("rmsprop_centered", {.kind = K::kRmsProp,
                           .learning_rate = 0.01,
                           .momentum = 0.0,
                           .epsilon = 1e-7,
                           .rho = 0.9,
                           .centered = true});
  return cases;
}

class OptimizerTest : public ::testing::TestWithParam<Case> {};

// Deterministic gradients of mixed sign and magnitude.
double Grad(int step, int i) {
  return std::sin(0.7 * step + 1.3 * i) * (1 + 0.1 * (i % 5));
}

TEST_P(OptimizerTest, MatchesReferenceOverSeveralSteps) {
  const OptimizerConfig& c = GetParam().config;
  auto opt = CreateOptimizer(c);
  ASSERT_TRUE(opt.ok()) << opt.status();
  constexpr int kN = 37;  // odd: exercises the vector loops' tails
  std::vector<float> w(kN);
  std::vector<std::vector<float>> slots((*opt)->num_slots(),
                                        std::vector<float>(kN));
  std::vector<RefState> ref(kN);
  for (int i = 0; i < kN; ++i) {
    w[i] = static_cast<float>(0.5 - 0.03 * i);
    ref[i].w = w[i];
    for (int k = 0; k < (*opt)->num_slots(); ++k) {
      slots[k][i] = (*opt)->slot_initial_value(k);
    }
    // The reference keeps accumulators separately: seed them identically.
    if (c.kind == K::kAdagrad) ref[i].s0 = c.initial_accumulator_value;
    if (c.kind == K::kFtrl) ref[i].s1 = c.initial_accumulator_value;
  }
  std::vector<float*> slot_ptr;
  for (auto& s : slots) slot_ptr.push_back(s.data());
  for (int step = 1; step <= 10; ++step) {
    std::vector<float> g(kN);
    for (int i = 0; i < kN; ++i) {
      g[i] = static_cast<float>(Grad(step, i));
      RefStep(c, ref[i], g[i]);
    }
    (*opt)->Apply(w.data(), slot_ptr.data(), g.data(), kN, step);
    for (int i = 0; i < kN; ++i) {
      ASSERT_NEAR(w[i], ref[i].w, 2e-5 + 1e-4 * std::fabs(ref[i].w))
          << GetParam().name << " step " << step << " element " << i;
    }
  }
}

// Lazy (sparse) application: a row updated only at some steps advances its
// own count t; the reference sees only the steps that touched the row.
TEST_P(OptimizerTest, LazyRowsUseTheirOwnStepCount) {
  const OptimizerConfig& c = GetParam().config;
  auto opt = CreateOptimizer(c);
  ASSERT_TRUE(opt.ok());
  constexpr int kDim = 8;
  std::vector<float> w(kDim, 0.25f);
  std::vector<std::vector<float>> slots((*opt)->num_slots(),
                                        std::vector<float>(kDim));
  std::vector<float*> slot_ptr;
  for (int k = 0; k < (*opt)->num_slots(); ++k) {
    std::fill(slots[k].begin(), slots[k].end(), (*opt)->slot_initial_value(k));
    slot_ptr.push_back(slots[k].data());
  }
  std::vector<RefState> ref(kDim);
  for (auto& r : ref) {
    r.w = 0.25;
    if (c.kind == K::kAdagrad) r.s0 = c.initial_accumulator_value;
    if (c.kind == K::kFtrl) r.s1 = c.initial_accumulator_value;
  }
  int64_t t = 0;
  for (int step = 1; step <= 12; ++step) {
    if (step % 3 == 0) continue;  // not touched at this step
    ++t;
    std::vector<float> g(kDim);
    for (int i = 0; i < kDim; ++i) {
      g[i] = static_cast<float>(Grad(step, i));
      RefStep(c, ref[i], g[i]);
    }
    (*opt)->Apply(w.data(), slot_ptr.data(), g.data(), kDim, t);
  }
  for (int i = 0; i < kDim; ++i) {
    EXPECT_NEAR(w[i], ref[i].w, 2e-5 + 1e-4 * std::fabs(ref[i].w))
        << GetParam().name;
  }
}

INSTANTIATE_TEST_SUITE_P(All, OptimizerTest, ::testing::ValuesIn(Cases()),
                         [](const auto& info) { return info.param.name; });

TEST(OptimizerValidation, RejectsOutOfRangeHyperParameters) {
  std::vector<OptimizerConfig> bad = {
      {},                                       // kind not set
      {.kind = K::kSgd, .learning_rate = 0},    // lr <= 0
      {.kind = K::kSgd, .learning_rate = -1},   //
      {.kind = K::kSgd, .learning_rate = NAN},  //
      {.kind = K::kMomentum, .learning_rate = 0.1, .momentum = 1.0},
      {.kind = K::kAdagrad,
       .learning_rate = 0.1,
       .initial_accumulator_value = -1},
      {.kind = K::kAdagrad, .learning_rate = 0.1},  // acc 0, eps 0: 0 / 0
      {.kind = K::kAdam,
       .learning_rate = 0.1,
       .epsilon = 1e-8,
       .beta1 = 1.0,
       .beta2 = 0.9},
      {.kind = K::kAdam,
       .learning_rate = 0.1,
       .epsilon = 1e-8,
       .beta1 = 0.9,
       .beta2 = -0.1},
      {.kind = K::kAdam,
       .learning_rate = 0.1,
       .epsilon = 0,
       .beta1 = 0.9,
       .beta2 = 0.9},
      {.kind = K::kAdamW,
       .learning_rate = 0.1,
       .epsilon = 1e-8,
       .beta1 = 0.9,
       .beta2 = 0.9,
       .weight_decay = -0.1},
      {.kind = K::kFtrl,
       .learning_rate = 0.1,
       .initial_accumulator_value = 0.1,
       .learning_rate_power = 0.5},
      {.kind = K::kFtrl,
       .learning_rate = 0.1,
       .initial_accumulator_value = 0.1,
       .learning_rate_power = -0.5,
       .l1 = -1},
      {.kind = K::kRmsProp, .learning_rate = 0.1, .epsilon = 1e-7, .rho = 1.5},
      {.kind = K::kRmsProp, .learning_rate = 0.1, .epsilon = 0, .rho = 0.9},
      {.kind = static_cast<K>(99), .learning_rate = 0.1},  // unknown kind
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    auto opt = CreateOptimizer(bad[i]);
    EXPECT_EQ(opt.status().code(), absl::StatusCode::kInvalidArgument)
        << "case " << i;
  }
}

TEST(OptimizerValidation, SlotCounts) {
  EXPECT_EQ(
      (*CreateOptimizer({.kind = K::kSgd, .learning_rate = 1}))->num_slots(),
      0);
  EXPECT_EQ((*CreateOptimizer({.kind = K::kAdam,
                               .learning_rate = 1,
                               .epsilon = 1e-8,
                               .beta1 = 0.9,
                               .beta2 = 0.9}))
                ->num_slots(),
            2);
  EXPECT_EQ((*CreateOptimizer({.kind = K::kRmsProp,
                               .learning_rate = 1,
                               .epsilon = 1e-8,
                               .rho = 0.9,
                               .centered = true}))
                ->num_slots(),
            3);
}

}  // namespace
}  // namespace plexus::ps
