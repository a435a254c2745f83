// A two-layer perceptron for the digits: 64 inputs -> `hidden` ReLU units ->
// 10 logits, softmax cross-entropy. All parameters live in one flat float
// vector (so that one all-reduce carries every gradient), laid out as
// W1 [hidden x 64], b1 [hidden], W2 [10 x hidden], b2 [10].
//
// Plain loops in a fixed order: the same inputs give bitwise-identical
// outputs, which the deterministic mode relies on.
//
// Thread safety: none; one thread per Mlp.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "examples/mlp/digits.h"

namespace plexus::examples {

class Mlp {
 public:
  // REQUIRES: hidden > 0. Parameters start at zero; see Init.
  explicit Mlp(int hidden);

  // He-uniform weights and zero biases from `seed`; the same seed gives the
  // same bits on every machine (a fixed generator, no std distributions).
  void Init(uint64_t seed);

  int hidden() const { return hidden_; }
  size_t num_params() const { return params_.size(); }
  absl::Span<float> params() { return absl::MakeSpan(params_); }
  absl::Span<const float> params() const { return params_; }

  // Adds the gradient of the summed cross-entropy of examples `index`
  // (positions in `data`) to `grad` (num_params() floats), scaled by
  // `scale` (1 / global batch size, so that slices from several workers sum
  // to the batch mean). Returns the summed (unscaled) loss.
  double AccumulateGradient(const Dataset& data, absl::Span<const int> index,
                            float scale, absl::Span<float> grad) const;

  // Fraction of `data` classified correctly.
  double Accuracy(const Dataset& data) const;

  // FNV-1a of the parameters' bytes: equal hashes mean (all but certainly)
  // bitwise-equal parameters.
  uint64_t ParamHash() const;

 private:
  // Logits of one example into `hidden_out` (post-ReLU) and `logits`.
  void Forward(const float* x, float* hidden_out, float* logits) const;

  int hidden_;
  std::vector<float> params_;
  // Offsets of the four tensors in params_.
  size_t w1_, b1_, w2_, b2_;
};

// FNV-1a of the floats' bytes (Mlp::ParamHash; the GPU replica hashes its
// parameters with it too).
uint64_t HashFloats(absl::Span<const float> values);

// SGD with momentum (heavy ball): v = momentum * v + grad + wd * w;
// w -= lr * v. Element-wise, so every replica given the same gradient makes
// the same update.
class MomentumSgd {
 public:
  MomentumSgd(size_t n, float lr, float momentum, float weight_decay)
      : velocity_(n, 0.0f),
        lr_(lr),
        momentum_(momentum),
        weight_decay_(weight_decay) {}
  void Apply(absl::Span<const float> grad, absl::Span<float> params);

 private:
  std::vector<float> velocity_;
  float lr_, momentum_, weight_decay_;
};

}  // namespace plexus::examples
