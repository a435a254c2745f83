#include "examples/mlp/train.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status.h"
#include "examples/mlp/mlp.h"
#include "plexus/collectives/communicator.h"

namespace plexus::examples {
namespace {

using collectives::DataType;
using collectives::ReduceOp;

// The epoch's order of the training images: a Fisher-Yates shuffle driven by
// splitmix64 of (seed, epoch), identical on every rank.
std::vector<int> EpochOrder(size_t n, uint64_t seed, int epoch) {
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  uint64_t state = seed * 0x9e3779b97f4a7c15ULL + static_cast<uint64_t>(epoch);
  auto next = [&state] {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[next() % i]);
  return order;
}

std::string Rate(double per_s) {
  if (per_s >= 1e6) return absl::StrFormat("%.2fM", per_s / 1e6);
  if (per_s >= 1e3) return absl::StrFormat("%.1fk", per_s / 1e3);
  return absl::StrFormat("%.0f", per_s);
}

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

class CpuReplica : public Replica {
 public:
  CpuReplica(const DigitsSplit& data, const TrainOptions& o,
             collectives::Communicator* comm)
      : data_(data),
        comm_(comm),
        model_(o.hidden),
        sgd_(model_.num_params(), o.lr, o.momentum, o.weight_decay),
        grad_(model_.num_params() + 1) {
    model_.Init(o.seed);
  }

  int rank() const override { return comm_ ? comm_->rank() : 0; }
  int world() const override { return comm_ ? comm_->size() : 1; }
  size_t num_params() const override { return model_.num_params(); }
  std::string algorithm() const override { return algorithm_; }

  absl::Status SyncInitialParams() override {
    // Every replica initialises from the same seed; the broadcast makes rank
    // 0's parameters authoritative anyway, as a real job whose ranks may
    // have been built differently would.
    if (comm_ == nullptr) return absl::OkStatus();
    return Annotate(comm_->Broadcast(model_.params().data(),
                                     model_.num_params(), DataType::kFloat32,
                                     /*root=*/0),
                    "broadcasting the initial parameters");
  }

  absl::StatusOr<double> ComputeGradient(absl::Span<const int> index,
                                         float scale) override {
    std::fill(grad_.begin(), grad_.end(), 0.0f);
    return model_.AccumulateGradient(
        data_.train, index, scale,
        absl::MakeSpan(grad_).first(model_.num_params()));
  }

  absl::StatusOr<double> AllReduceGradient(double loss) override {
    // The loss rides in the last slot, so it costs no extra operation.
    grad_.back() = static_cast<float>(loss);
    if (comm_ != nullptr) {
      auto work =
          comm_->AllReduceAsync(grad_.data(), grad_.data(), grad_.size(),
                                DataType::kFloat32, ReduceOp::kSum);
      PLEXUS_RETURN_IF_ERROR(work->Wait(), absl::StrCat("all-reduce ", ops_));
      if (ops_++ == 0) {
        algorithm_ = std::string(AlgorithmName(work->algorithm()));
      }
    }
    return grad_.back();
  }

  absl::Status ApplyUpdate() override {
    sgd_.Apply(absl::MakeConstSpan(grad_).first(model_.num_params()),
               model_.params());
    return absl::OkStatus();
  }

  absl::StatusOr<double> TestAccuracy() override {
    return model_.Accuracy(data_.test);
  }

  absl::StatusOr<uint64_t> ParamHash() override { return model_.ParamHash(); }

  absl::Status CheckAgreement(uint64_t hash) override {
    if (comm_ == nullptr) return absl::OkStatus();
    std::vector<int64_t> hashes(world());
    const int64_t mine = static_cast<int64_t>(hash);
    PLEXUS_RETURN_IF_ERROR(
        comm_->AllGather(&mine, hashes.data(), 1, DataType::kInt64),
        "gathering the parameter hashes");
    for (int i = 0; i < world(); ++i) {
      if (static_cast<uint64_t>(hashes[i]) != hash) {
        return absl::InternalError(absl::StrFormat(
            "replicas diverged: rank %d's parameters hash to %016x, rank "
            "%d's to %016x",
            i, static_cast<uint64_t>(hashes[i]), rank(), hash));
      }
    }
    return absl::OkStatus();
  }

 private:
  const DigitsSplit& data_;
  collectives::Communicator* const comm_;
  Mlp model_;
  MomentumSgd sgd_;
  // The gradient plus one slot for the loss.
  std::vector<float> grad_;
  std::string algorithm_ = "none";
  int64_t ops_ = 0;
};

}  // namespace

std::unique_ptr<Replica> NewCpuReplica(const DigitsSplit& data,
                                       const TrainOptions& options,
                                       collectives::Communicator* comm) {
  return std::make_unique<CpuReplica>(data, options, comm);
}

absl::Status ValidateTrainOptions(const TrainOptions& o) {
  if (o.hidden <= 0 || o.batch_size <= 0 || o.epochs <= 0 || !(o.lr > 0) ||
      o.momentum < 0 || o.weight_decay < 0 || o.eval_every_steps < 0 ||
      o.report_every <= 0) {
    return absl::InvalidArgumentError(
        "hidden, batch_size, epochs, lr and report_every must be positive; "
        "momentum, weight_decay and eval_every_steps non-negative");
  }
  return absl::OkStatus();
}

absl::StatusOr<TrainResult> TrainOnCpu(const DigitsSplit& data,
                                       const TrainOptions& options,
                                       collectives::Communicator* comm,
                                       FILE* out) {
  PLEXUS_RETURN_IF_ERROR(ValidateTrainOptions(options));
  CpuReplica replica(data, options, comm);
  return Train(data, options, &replica, out);
}

absl::StatusOr<TrainResult> Train(const DigitsSplit& data,
                                  const TrainOptions& o, Replica* replica,
                                  FILE* out) {
  PLEXUS_RETURN_IF_ERROR(ValidateTrainOptions(o));
  const int rank = replica->rank();
  const int world = replica->world();
  if (o.batch_size < world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size ", o.batch_size, " is smaller than the ", world,
        " workers: each worker needs at least one example a step"));
  }
  if (data.train.size() == 0 || data.test.size() == 0) {
    return absl::InvalidArgumentError("empty training or test set");
  }
  const bool report = rank == 0 && out != nullptr;

  PLEXUS_RETURN_IF_ERROR(replica->SyncInitialParams());
  const size_t n_train = data.train.size();
  const int steps_per_epoch =
      static_cast<int>((n_train + o.batch_size - 1) / o.batch_size);
  const int64_t total_steps = static_cast<int64_t>(steps_per_epoch) * o.epochs;
  const int eval_every =
      o.eval_every_steps > 0 ? o.eval_every_steps : steps_per_epoch;

  if (report) {
    if (o.json) {
      absl::FPrintF(out,
                    "{\"event\":\"start\",\"setup\":\"%s\",\"workers\":%d,"
                    "\"train\":%d,\"test\":%d,\"params\":%d,\"batch\":%d,"
                    "\"epochs\":%d,\"steps_per_epoch\":%d,\"target\":%.4f}\n",
                    o.label, world, n_train, data.test.size(),
                    replica->num_params(), o.batch_size, o.epochs,
                    steps_per_epoch, o.target_accuracy);
    } else {
      absl::FPrintF(out,
                    "mlp_example: %s\n  %d training / %d test digits, %d "
                    "parameters, global batch %d, %d epochs x %d steps, "
                    "target test accuracy %.2f%%\n",
                    o.label, n_train, data.test.size(), replica->num_params(),
                    o.batch_size, o.epochs, steps_per_epoch,
                    100 * o.target_accuracy);
    }
    fflush(out);
  }

  TrainResult r;
  absl::Duration compute, comm_time;
  const absl::Time start = absl::Now();
  int evaluations = 0;
  double epoch_loss = 0;
  int epoch_batches = 0;
  bool stop = false;
  for (int epoch = 0; epoch < o.epochs && !stop; ++epoch) {
    const std::vector<int> order = EpochOrder(n_train, o.seed, epoch);
    epoch_loss = 0;
    epoch_batches = 0;
    for (int s = 0; s < steps_per_epoch && !stop; ++s) {
      const size_t begin = static_cast<size_t>(s) * o.batch_size;
      const size_t batch = std::min<size_t>(o.batch_size, n_train - begin);
      // This rank's slice of the batch; with fewer images than ranks in a
      // last batch a rank may get none and contributes zeros.
      const size_t lo = begin + batch * rank / world;
      const size_t hi = begin + batch * (rank + 1) / world;
      const absl::Time t0 = absl::Now();
      const float scale = 1.0f / static_cast<float>(batch);
      PLEXUS_ASSIGN_OR_RETURN(
          const double loss,
          replica->ComputeGradient(
              absl::MakeConstSpan(order).subspan(lo, hi - lo), scale));
      const absl::Time t1 = absl::Now();
      PLEXUS_ASSIGN_OR_RETURN(const double batch_loss,
                              replica->AllReduceGradient(loss * scale),
                              absl::StrCat("step ", r.steps));
      const absl::Time t2 = absl::Now();
      PLEXUS_RETURN_IF_ERROR(replica->ApplyUpdate());
      const absl::Time t3 = absl::Now();
      compute += (t1 - t0) + (t3 - t2);
      comm_time += t2 - t1;
      epoch_loss += batch_loss;
      ++epoch_batches;
      ++r.steps;
      r.examples += static_cast<int64_t>(batch);

      const bool epoch_end = s + 1 == steps_per_epoch;
      if (r.steps % eval_every != 0 && !(epoch_end && epoch + 1 == o.epochs)) {
        continue;
      }
      // Every replica holds the same parameters, so every rank computes the
      // same accuracy and takes the same stop decision without talking.
      PLEXUS_ASSIGN_OR_RETURN(r.test_accuracy, replica->TestAccuracy());
      const double elapsed = Seconds(absl::Now() - start);
      if (!r.time_to_target_s && r.test_accuracy >= o.target_accuracy) {
        r.time_to_target_s = elapsed;
        r.epoch_at_target = epoch + 1;
        stop = o.stop_at_target;
      }
      ++evaluations;
      if (!report || (evaluations % o.report_every != 0 && !stop)) continue;
      const double step_s = Seconds(compute + comm_time);
      const double ex_per_s = r.examples / std::max(step_s, 1e-9);
      const double comm_share = Seconds(comm_time) / std::max(step_s, 1e-9);
      const double eta = elapsed / r.steps * (total_steps - r.steps);
      const double loss_now = epoch_loss / epoch_batches;
      if (o.json) {
        absl::FPrintF(
            out,
            "{\"event\":\"progress\",\"epoch\":%d,\"step\":%d,"
            "\"total_steps\":%d,\"examples_per_s\":%.1f,"
            "\"loss\":%.6f,\"test_accuracy\":%.6f,"
            "\"comm_share\":%.4f,\"elapsed_s\":%.4f,\"eta_s\":%.3f}\n",
            epoch + 1, r.steps, total_steps, ex_per_s, loss_now,
            r.test_accuracy, comm_share, elapsed, eta);
      } else {
        absl::FPrintF(out,
                      "  epoch %3d/%d  step %5d/%d  %8s ex/s  loss %.4f  "
                      "test acc %6.2f%%  comm %3.0f%%  ETA %.1fs\n",
                      epoch + 1, o.epochs, r.steps, total_steps, Rate(ex_per_s),
                      loss_now, 100 * r.test_accuracy, 100 * comm_share, eta);
      }
      fflush(out);
    }
    r.epochs_run = epoch + 1;
  }
  r.wall_s = Seconds(absl::Now() - start);
  r.compute_s = Seconds(compute);
  r.comm_s = Seconds(comm_time);
  r.train_loss = epoch_batches > 0 ? epoch_loss / epoch_batches : 0;
  PLEXUS_ASSIGN_OR_RETURN(r.param_hash, replica->ParamHash());
  r.algorithm = replica->algorithm();
  // The replicas must have stayed identical: compare every rank's hash.
  PLEXUS_RETURN_IF_ERROR(replica->CheckAgreement(r.param_hash));

  if (report) {
    const double step_s = r.compute_s + r.comm_s;
    const double steps_per_s = r.steps / std::max(step_s, 1e-9);
    const double ex_per_s = r.examples / std::max(step_s, 1e-9);
    const double comm_share = r.comm_s / std::max(step_s, 1e-9);
    if (o.json) {
      absl::FPrintF(
          out,
          "{\"event\":\"summary\",\"workers\":%d,\"algorithm\":\"%s\","
          "\"epochs\":%d,\"steps\":%d,\"test_accuracy\":%.6f,"
          "\"train_loss\":%.6f,\"target\":%.4f,\"time_to_target_s\":%s,"
          "\"epoch_at_target\":%s,\"wall_s\":%.4f,\"compute_s\":%.4f,"
          "\"comm_s\":%.4f,\"comm_share\":%.4f,\"steps_per_s\":%.2f,"
          "\"examples_per_s\":%.1f,\"param_hash\":\"%016x\"}\n",
          world, r.algorithm, r.epochs_run, r.steps, r.test_accuracy,
          r.train_loss, o.target_accuracy,
          r.time_to_target_s ? absl::StrFormat("%.4f", *r.time_to_target_s)
                             : "null",
          r.epoch_at_target ? absl::StrCat(*r.epoch_at_target) : "null",
          r.wall_s, r.compute_s, r.comm_s, comm_share, steps_per_s, ex_per_s,
          r.param_hash);
    } else {
      const std::string tta =
          r.time_to_target_s
              ? absl::StrFormat("reached at epoch %d after %.2f s",
                                *r.epoch_at_target, *r.time_to_target_s)
              : std::string("not reached");
      absl::FPrintF(out,
                    "summary: test accuracy %.2f%%, target %.2f%% %s\n"
                    "  %d steps (%d epochs) in %.2f s: %.0f steps/s, %s "
                    "examples/s; %.0f%% of step time in all-reduce (%s)\n"
                    "  final parameters hash %016x\n",
                    100 * r.test_accuracy, 100 * o.target_accuracy, tta,
                    r.steps, r.epochs_run, r.wall_s, steps_per_s,
                    Rate(ex_per_s), 100 * comm_share, r.algorithm,
                    r.param_hash);
    }
    fflush(out);
  }
  return r;
}

}  // namespace plexus::examples
