#include "examples/mlp/mlp.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "glog/logging.h"

namespace plexus::examples {
namespace {

// splitmix64: a fixed generator, so initial weights are the same bits
// everywhere.
uint64_t NextRandom(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Uniform in [-1, 1).
double Uniform(uint64_t* state) {
  return static_cast<double>(NextRandom(state) >> 11) * 0x1.0p-52 - 1.0;
}

}  // namespace

Mlp::Mlp(int hidden) : hidden_(hidden) {
  CHECK_GT(hidden, 0);
  w1_ = 0;
  b1_ = w1_ + static_cast<size_t>(hidden) * kDigitsFeatures;
  w2_ = b1_ + hidden;
  b2_ = w2_ + static_cast<size_t>(kDigitsClasses) * hidden;
  params_.assign(b2_ + kDigitsClasses, 0.0f);
}

void Mlp::Init(uint64_t seed) {
  uint64_t state = seed;
  std::fill(params_.begin(), params_.end(), 0.0f);
  const double a1 = std::sqrt(6.0 / kDigitsFeatures);
  for (size_t i = w1_; i < b1_; ++i) {
    params_[i] = static_cast<float>(a1 * Uniform(&state));
  }
  const double a2 = std::sqrt(6.0 / hidden_);
  for (size_t i = w2_; i < b2_; ++i) {
    params_[i] = static_cast<float>(a2 * Uniform(&state));
  }
}

void Mlp::Forward(const float* x, float* h, float* logits) const {
  const float* w1 = &params_[w1_];
  const float* b1 = &params_[b1_];
  for (int j = 0; j < hidden_; ++j) {
    const float* row = w1 + static_cast<size_t>(j) * kDigitsFeatures;
    float s = b1[j];
    for (int i = 0; i < kDigitsFeatures; ++i) s += row[i] * x[i];
    h[j] = s > 0 ? s : 0;
  }
  const float* w2 = &params_[w2_];
  const float* b2 = &params_[b2_];
  for (int k = 0; k < kDigitsClasses; ++k) {
    const float* row = w2 + static_cast<size_t>(k) * hidden_;
    float s = b2[k];
    for (int j = 0; j < hidden_; ++j) s += row[j] * h[j];
    logits[k] = s;
  }
}

double Mlp::AccumulateGradient(const Dataset& data, absl::Span<const int> index,
                               float scale, absl::Span<float> grad) const {
  CHECK_EQ(grad.size(), params_.size());
  std::vector<float> h(hidden_), dh(hidden_);
  float logits[kDigitsClasses], dlogits[kDigitsClasses];
  const float* w2 = &params_[w2_];
  float* gw1 = &grad[w1_];
  float* gb1 = &grad[b1_];
  float* gw2 = &grad[w2_];
  float* gb2 = &grad[b2_];
  double loss = 0;
  for (int e : index) {
    const float* x = &data.features[static_cast<size_t>(e) * kDigitsFeatures];
    const int y = data.labels[e];
    Forward(x, h.data(), logits);
    // Softmax cross-entropy, shifted by the max logit for stability.
    const float m = *std::max_element(logits, logits + kDigitsClasses);
    double z = 0;
    for (int k = 0; k < kDigitsClasses; ++k) z += std::exp(logits[k] - m);
    loss += std::log(z) - (logits[y] - m);
    for (int k = 0; k < kDigitsClasses; ++k) {
      const float p = static_cast<float>(std::exp(logits[k] - m) / z);
      dlogits[k] = (p - (k == y ? 1.0f : 0.0f)) * scale;
    }
    std::fill(dh.begin(), dh.end(), 0.0f);
    for (int k = 0; k < kDigitsClasses; ++k) {
      const float d = dlogits[k];
      const float* row = w2 + static_cast<size_t>(k) * hidden_;
      float* grow = gw2 + static_cast<size_t>(k) * hidden_;
      for (int j = 0; j < hidden_; ++j) {
        grow[j] += d * h[j];
        dh[j] += d * row[j];
      }
      gb2[k] += d;
    }
    for (int j = 0; j < hidden_; ++j) {
      if (h[j] <= 0) continue;  // ReLU passes no gradient where it was off
      const float d = dh[j];
      float* grow = gw1 + static_cast<size_t>(j) * kDigitsFeatures;
      for (int i = 0; i < kDigitsFeatures; ++i) grow[i] += d * x[i];
      gb1[j] += d;
    }
  }
  return loss;
}

double Mlp::Accuracy(const Dataset& data) const {
  if (data.size() == 0) return 0;
  std::vector<float> h(hidden_);
  float logits[kDigitsClasses];
  size_t correct = 0;
  for (size_t e = 0; e < data.size(); ++e) {
    Forward(&data.features[e * kDigitsFeatures], h.data(), logits);
    const int pred = static_cast<int>(
        std::max_element(logits, logits + kDigitsClasses) - logits);
    correct += pred == data.labels[e];
  }
  return static_cast<double>(correct) / data.size();
}

uint64_t Mlp::ParamHash() const { return HashFloats(params_); }

uint64_t HashFloats(absl::Span<const float> values) {
  uint64_t h = 0xcbf29ce484222325ULL;
  const auto* bytes = reinterpret_cast<const unsigned char*>(values.data());
  for (size_t i = 0; i < values.size() * sizeof(float); ++i) {
    h ^= bytes[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

void MomentumSgd::Apply(absl::Span<const float> grad,
                        absl::Span<float> params) {
  CHECK_EQ(grad.size(), velocity_.size());
  CHECK_EQ(params.size(), velocity_.size());
  for (size_t i = 0; i < params.size(); ++i) {
    velocity_[i] =
        momentum_ * velocity_[i] + grad[i] + weight_decay_ * params[i];
    params[i] -= lr_ * velocity_[i];
  }
}

}  // namespace plexus::examples
