// The CTR example's synthetic dataset: click-through data generated
// deterministically from a known ground-truth model, so that the learned
// model's held-out AUC can be compared with the best any model can reach.
//
// Every example has one categorical feature per field plus a bias feature.
// A field's values are ranks 0..vocab-1 drawn from a Zipf(s) law (rank 0 the
// most frequent) and mapped to scattered 64-bit ids, so a million-example
// stream touches millions of distinct ids, most of them a handful of times.
// The truth is a factorisation machine: a weight per id plus pairwise
// interactions of small per-id vectors, both scaled by 1 / (1 + rank / head):
// frequent ids carry the signal, the long tail carries little (as in real
// click logs, where rare ids are mostly noise), so a model trained on enough
// examples can come within a hair of the truth. Labels are Bernoulli draws
// of sigmoid(truth logit).
//
// Example i of a split is a pure function of (config, split, i): any worker
// can generate any batch, in any order, after any restart.
//
// Thread safety: a CtrDataset is immutable after construction; all methods
// may be called from many threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace plexus::examples {

struct CtrConfig {
  uint64_t seed = 1;
  int fields = 10;            // categorical fields (plus one bias feature)
  int64_t vocab = 1 << 20;    // distinct values per field
  double zipf_s = 1.2;        // Zipf exponent of each field
  double head = 100;          // signal scale halves at rank `head`
  double weight_scale = 0.8;  // truth weight stddev at rank 0
  double fm_scale = 0.35;     // truth interaction vector stddev at rank 0
  int truth_k = 4;            // truth interaction vector width
  double bias = -1.0;         // truth bias logit
  int64_t num_train = 3072000;
  int64_t num_test = 100000;
  // Training (read by workers from the job's arguments).
  int model_k = 8;              // learned interaction vector width
  int64_t batch = 1024;         // examples per step
  double learning_rate = 0.05;  // Adagrad
};

// "key=value,..." with every field of CtrConfig; what the driver passes to
// the workers as the job's arguments.
std::string FormatCtrConfig(const CtrConfig& c);
// Parses FormatCtrConfig's output over `base` (missing keys keep base's
// values); INVALID_ARGUMENT naming an unknown key or a bad value.
absl::StatusOr<CtrConfig> ParseCtrConfig(absl::string_view text,
                                         CtrConfig base = {});

enum class Split { kTrain, kTest };

struct CtrExample {
  std::vector<uint64_t> ids;  // fields + 1 ids; the last is the bias feature
  float label = 0;            // 0 or 1
  double truth_logit = 0;     // the ground-truth model's logit
};

class CtrDataset {
 public:
  // INVALID_ARGUMENT for a config out of range.
  static absl::StatusOr<CtrDataset> Create(const CtrConfig& config);

  const CtrConfig& config() const { return config_; }
  int features_per_example() const { return config_.fields + 1; }
  int64_t size(Split split) const {
    return split == Split::kTrain ? config_.num_train : config_.num_test;
  }
  // Example i of `split` (i taken modulo the split's size).
  CtrExample Example(Split split, int64_t i) const;
  // The id of (field, rank); field == fields is the bias feature.
  uint64_t FeatureId(int field, int64_t rank) const;

 private:
  explicit CtrDataset(const CtrConfig& c) : config_(c) {}
  int64_t SampleRank(uint64_t bits) const;
  double RankScale(int64_t rank) const;

  CtrConfig config_;
  std::vector<double> cdf_;  // cdf_[r] = P(rank <= r)
};

// Area under the ROC curve of `scores` against 0/1 `labels` (ties count
// one half). 0.5 when one class is absent.
double Auc(const std::vector<double>& scores, const std::vector<float>& labels);
// Mean binary log loss of logits against labels.
double LogLoss(const std::vector<double>& logits,
               const std::vector<float>& labels);

}  // namespace plexus::examples
