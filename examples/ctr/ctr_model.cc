#include "examples/ctr/ctr_model.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "plexus/worker/ps_client.h"
#include "ps/storage/optimizer.h"

namespace plexus::examples {
namespace {

int64_t RowDim(const CtrConfig& c) { return 1 + c.model_k; }

double Seconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr double kInitAccumulator = 0.1;
constexpr double kInitStddev = 0.01;

class PsParams final : public CtrParams {
 public:
  PsParams(const CtrConfig& c, worker::PsClient* client, uint64_t step_id)
      : dim_(RowDim(c)), client_(client), step_id_(step_id) {}
  absl::Status Pull(absl::Span<const uint64_t> ids,
                    absl::Span<float> out) override {
    worker::StepOptions so;
    so.step_id = step_id_;
    return client_->PullSparse(kCtrTable, ids, dim_, out, so);
  }
  absl::Status Push(absl::Span<const uint64_t> ids,
                    absl::Span<const float> grads) override {
    worker::StepOptions so;
    so.step_id = step_id_;
    return client_->PushSparse(kCtrTable, ids, dim_, grads, so).status();
  }

 private:
  int64_t dim_;
  worker::PsClient* client_;
  uint64_t step_id_;
};

// The baseline's table: rows created on first touch (normal init), updated
// by the PS's own optimizer implementation.
class LocalParams final : public CtrParams {
 public:
  LocalParams(const CtrConfig& c, std::unique_ptr<ps::Optimizer> opt)
      : dim_(RowDim(c)), seed_(c.seed), opt_(std::move(opt)) {}
  absl::Status Pull(absl::Span<const uint64_t> ids,
                    absl::Span<float> out) override {
    for (size_t i = 0; i < ids.size(); ++i) {
      std::vector<float>& row = Row(ids[i]);
      std::copy_n(row.begin(), dim_, out.begin() + i * dim_);
    }
    return absl::OkStatus();
  }
  absl::Status Push(absl::Span<const uint64_t> ids,
                    absl::Span<const float> grads) override {
    ++t_;
    for (size_t i = 0; i < ids.size(); ++i) {
      std::vector<float>& row = Row(ids[i]);
      float* slots[1] = {row.data() + dim_};
      opt_->Apply(row.data(), slots, grads.data() + i * dim_, dim_, t_);
    }
    return absl::OkStatus();
  }

 private:
  std::vector<float>& Row(uint64_t id) {
    auto [it, inserted] = rows_.try_emplace(id);
    if (inserted) {
      it->second.assign(2 * dim_, static_cast<float>(kInitAccumulator));
      // Box-Muller from the id: deterministic like the PS's initializer.
      uint64_t x = id ^ seed_;
      for (int64_t d = 0; d < dim_; ++d) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        double u1 = ((x >> 11) + 1) * 0x1.0p-53;
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        double u2 = (x >> 11) * 0x1.0p-53;
        it->second[d] =
            static_cast<float>(kInitStddev * std::sqrt(-2 * std::log(u1)) *
                               std::cos(2 * M_PI * u2));
      }
    }
    return it->second;
  }

  int64_t dim_;
  uint64_t seed_;
  std::unique_ptr<ps::Optimizer> opt_;
  int64_t t_ = 0;
  absl::flat_hash_map<uint64_t, std::vector<float>> rows_;
};

// Logit of example e of the batch given the pulled rows; fills `sum` (k).
double Forward(const CtrBatch& b, size_t e, const std::vector<float>& rows,
               std::vector<double>& sum) {
  const int features = b.features;
  const int64_t dim = b.dim;
  std::fill(sum.begin(), sum.end(), 0.0);
  double z = 0, sq = 0;
  for (int j = 0; j < features; ++j) {
    const float* r = rows.data() + b.slot[e * features + j] * dim;
    z += r[0];
    for (int64_t d = 1; d < dim; ++d) {
      sum[d - 1] += r[d];
      sq += static_cast<double>(r[d]) * r[d];
    }
  }
  double pairs = 0;
  for (double s : sum) pairs += s * s;
  return z + 0.5 * (pairs - sq);
}

class CpuCompute final : public CtrCompute {
 public:
  std::string device() const override { return "CPU"; }
  absl::Status Load(const CtrBatch& b) override {
    b_ = &b;
    return absl::OkStatus();
  }
  absl::Status Pull(CtrParams& params) override {
    rows_.assign(b_->unique_ids.size() * b_->dim, 0.0f);
    return params.Pull(b_->unique_ids, absl::MakeSpan(rows_));
  }
  absl::StatusOr<double> ForwardBackward() override {
    const CtrBatch& b = *b_;
    const int features = b.features;
    const int64_t dim = b.dim;
    grads_.assign(rows_.size(), 0.0f);
    std::vector<double> sum(dim - 1);
    double loss = 0;
    for (size_t e = 0; e < b.examples.size(); ++e) {
      double z = Forward(b, e, rows_, sum);
      float y = b.examples[e].label;
      loss += (z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z))) -
              y * z;
      // d loss / d z of the log loss; per-example gradients are summed.
      const double g = 1.0 / (1.0 + std::exp(-z)) - y;
      for (int j = 0; j < features; ++j) {
        const int32_t s = b.slot[e * features + j];
        const float* r = rows_.data() + s * dim;
        float* gr = grads_.data() + s * dim;
        gr[0] += static_cast<float>(g);
        for (int64_t d = 1; d < dim; ++d) {
          gr[d] += static_cast<float>(g * (sum[d - 1] - r[d]));
        }
      }
    }
    return loss;
  }
  absl::Status Push(CtrParams& params) override {
    return params.Push(b_->unique_ids, grads_);
  }
  absl::StatusOr<std::vector<double>> Logits() override {
    std::vector<double> logits(b_->examples.size()), sum(b_->dim - 1);
    for (size_t e = 0; e < logits.size(); ++e) {
      logits[e] = Forward(*b_, e, rows_, sum);
    }
    return logits;
  }

 private:
  const CtrBatch* b_ = nullptr;
  std::vector<float> rows_, grads_;
};

}  // namespace

v1::TableConfig CtrTableConfig(const CtrConfig& c) {
  v1::TableConfig t;
  t.set_name(kCtrTable);
  t.set_dim(RowDim(c));
  auto* normal = t.mutable_initializer()->mutable_normal();
  normal->set_stddev(kInitStddev);
  t.mutable_initializer()->set_seed(c.seed);
  auto* ada = t.mutable_optimizer()->mutable_adagrad();
  ada->set_learning_rate(c.learning_rate);
  ada->set_initial_accumulator_value(kInitAccumulator);
  ada->set_epsilon(1e-7);
  t.mutable_consistency()->set_mode(v1::CONSISTENCY_MODE_ASYNC);
  return t;
}

std::unique_ptr<CtrParams> NewPsParams(const CtrConfig& config,
                                       worker::PsClient* client,
                                       uint64_t step_id) {
  return std::make_unique<PsParams>(config, client, step_id);
}

absl::StatusOr<std::unique_ptr<CtrParams>> NewLocalParams(
    const CtrConfig& config) {
  ps::OptimizerConfig oc;
  oc.kind = ps::OptimizerConfig::Kind::kAdagrad;
  oc.learning_rate = config.learning_rate;
  oc.initial_accumulator_value = kInitAccumulator;
  oc.epsilon = 1e-7;
  PLEXUS_ASSIGN_OR_RETURN(std::unique_ptr<ps::Optimizer> opt,
                          ps::CreateOptimizer(oc));
  return std::make_unique<LocalParams>(config, std::move(opt));
}

absl::Status CtrParams::PullToDevice(absl::Span<const uint64_t>, float*,
                                     void*) {
  return absl::UnimplementedError("these CTR params live in host memory");
}

absl::Status CtrParams::PushFromDevice(absl::Span<const uint64_t>, const float*,
                                       void*) {
  return absl::UnimplementedError("these CTR params live in host memory");
}

CtrBatch MakeCtrBatch(const CtrDataset& data, Split split, int64_t first,
                      int64_t n) {
  CtrBatch b;
  b.features = data.features_per_example();
  b.dim = RowDim(data.config());
  b.examples.reserve(n);
  b.slot.reserve(n * b.features);
  absl::flat_hash_map<uint64_t, int32_t> index;
  for (int64_t i = 0; i < n; ++i) {
    b.examples.push_back(data.Example(split, first + i));
    for (uint64_t id : b.examples.back().ids) {
      auto [it, inserted] =
          index.try_emplace(id, static_cast<int32_t>(b.unique_ids.size()));
      if (inserted) b.unique_ids.push_back(id);
      b.slot.push_back(it->second);
    }
  }
  return b;
}

std::unique_ptr<CtrCompute> NewCpuCompute() {
  return std::make_unique<CpuCompute>();
}

absl::StatusOr<StepStats> TrainStep(const CtrDataset& data, uint64_t step,
                                    CtrParams& params, CtrCompute& compute) {
  const CtrConfig& c = data.config();
  const double start = Seconds();
  CtrBatch b = MakeCtrBatch(data, Split::kTrain,
                            static_cast<int64_t>(step - 1) * c.batch, c.batch);
  StepStats stats;
  stats.unique_ids = static_cast<int64_t>(b.unique_ids.size());
  PLEXUS_RETURN_IF_ERROR(compute.Load(b));
  double t0 = Seconds();
  PLEXUS_RETURN_IF_ERROR(compute.Pull(params));
  stats.comm_seconds += Seconds() - t0;
  PLEXUS_ASSIGN_OR_RETURN(double loss, compute.ForwardBackward());
  stats.loss = loss / static_cast<double>(b.examples.size());
  t0 = Seconds();
  PLEXUS_RETURN_IF_ERROR(compute.Push(params));
  stats.comm_seconds += Seconds() - t0;
  stats.total_seconds = Seconds() - start;
  return stats;
}

absl::StatusOr<EvalResult> Evaluate(const CtrDataset& data, int64_t n,
                                    CtrParams& params, CtrCompute& compute) {
  const int64_t total = data.size(Split::kTest);
  if (n <= 0 || n > total) n = total;
  CtrBatch b = MakeCtrBatch(data, Split::kTest, 0, n);
  PLEXUS_RETURN_IF_ERROR(compute.Load(b));
  PLEXUS_RETURN_IF_ERROR(compute.Pull(params));
  PLEXUS_ASSIGN_OR_RETURN(std::vector<double> logits, compute.Logits());
  std::vector<double> truth(n);
  std::vector<float> labels(n);
  for (int64_t e = 0; e < n; ++e) {
    truth[e] = b.examples[e].truth_logit;
    labels[e] = b.examples[e].label;
  }
  EvalResult r;
  r.examples = n;
  r.auc = Auc(logits, labels);
  r.logloss = LogLoss(logits, labels);
  r.truth_auc = Auc(truth, labels);
  r.truth_logloss = LogLoss(truth, labels);
  return r;
}

}  // namespace plexus::examples
