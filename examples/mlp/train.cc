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

}  // namespace

absl::StatusOr<TrainResult> Train(const DigitsSplit& data,
                                  const TrainOptions& o,
                                  collectives::Communicator* comm, FILE* out) {
  if (o.hidden <= 0 || o.batch_size <= 0 || o.epochs <= 0 || !(o.lr > 0) ||
      o.momentum < 0 || o.weight_decay < 0 || o.eval_every_steps < 0 ||
      o.report_every <= 0) {
    return absl::InvalidArgumentError(
        "hidden, batch_size, epochs, lr and report_every must be positive; "
        "momentum, weight_decay and eval_every_steps non-negative");
  }
  const int rank = comm ? comm->rank() : 0;
  const int world = comm ? comm->size() : 1;
  if (o.batch_size < world) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch_size ", o.batch_size, " is smaller than the ", world,
        " workers: each worker needs at least one example a step"));
  }
  if (data.train.size() == 0 || data.test.size() == 0) {
    return absl::InvalidArgumentError("empty training or test set");
  }
  const bool report = rank == 0 && out != nullptr;

  Mlp model(o.hidden);
  model.Init(o.seed);
  // Every replica initialises from the same seed; the broadcast makes rank 0's
  // parameters authoritative anyway, as a real job whose ranks may have been
  // built differently would.
  if (comm) {
    PLEXUS_RETURN_IF_ERROR(comm->Broadcast(model.params().data(),
                                           model.num_params(),
                                           DataType::kFloat32, /*root=*/0),
                           "broadcasting the initial parameters");
  }
  MomentumSgd sgd(model.num_params(), o.lr, o.momentum, o.weight_decay);
  // The gradient plus one slot for the loss, so the batch's mean loss comes
  // with the same all-reduce.
  std::vector<float> grad(model.num_params() + 1);
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
                    model.num_params(), o.batch_size, o.epochs,
                    steps_per_epoch, o.target_accuracy);
    } else {
      absl::FPrintF(out,
                    "mlp_example: %s\n  %d training / %d test digits, %d "
                    "parameters, global batch %d, %d epochs x %d steps, "
                    "target test accuracy %.2f%%\n",
                    o.label, n_train, data.test.size(), model.num_params(),
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
      std::fill(grad.begin(), grad.end(), 0.0f);
      const float scale = 1.0f / static_cast<float>(batch);
      const double loss = model.AccumulateGradient(
          data.train, absl::MakeConstSpan(order).subspan(lo, hi - lo), scale,
          absl::MakeSpan(grad).first(model.num_params()));
      grad.back() = static_cast<float>(loss) * scale;
      const absl::Time t1 = absl::Now();
      if (comm) {
        auto work = comm->AllReduceAsync(grad.data(), grad.data(), grad.size(),
                                         DataType::kFloat32, ReduceOp::kSum);
        PLEXUS_RETURN_IF_ERROR(
            work->Wait(), absl::StrCat("all-reduce of step ", r.steps));
        if (r.steps == 0) {
          r.algorithm = std::string(AlgorithmName(work->algorithm()));
        }
      }
      const absl::Time t2 = absl::Now();
      sgd.Apply(absl::MakeConstSpan(grad).first(model.num_params()),
                model.params());
      const absl::Time t3 = absl::Now();
      compute += (t1 - t0) + (t3 - t2);
      comm_time += t2 - t1;
      epoch_loss += grad.back();
      ++epoch_batches;
      ++r.steps;
      r.examples += static_cast<int64_t>(batch);

      const bool epoch_end = s + 1 == steps_per_epoch;
      if (r.steps % eval_every != 0 && !(epoch_end && epoch + 1 == o.epochs)) {
        continue;
      }
      // Every replica holds the same parameters, so every rank computes the
      // same accuracy and takes the same stop decision without talking.
      r.test_accuracy = model.Accuracy(data.test);
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
        absl::FPrintF(out,
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
                      epoch + 1, o.epochs, r.steps, total_steps,
                      Rate(ex_per_s), loss_now, 100 * r.test_accuracy,
                      100 * comm_share, eta);
      }
      fflush(out);
    }
    r.epochs_run = epoch + 1;
  }
  r.wall_s = Seconds(absl::Now() - start);
  r.compute_s = Seconds(compute);
  r.comm_s = Seconds(comm_time);
  r.train_loss = epoch_batches > 0 ? epoch_loss / epoch_batches : 0;
  r.param_hash = model.ParamHash();

  // The replicas must have stayed identical: compare every rank's hash.
  if (comm) {
    std::vector<int64_t> hashes(world);
    const int64_t mine = static_cast<int64_t>(r.param_hash);
    PLEXUS_RETURN_IF_ERROR(comm->AllGather(&mine, hashes.data(), 1,
                                           DataType::kInt64),
                           "gathering the parameter hashes");
    for (int i = 0; i < world; ++i) {
      if (static_cast<uint64_t>(hashes[i]) != r.param_hash) {
        return absl::InternalError(absl::StrFormat(
            "replicas diverged: rank %d's parameters hash to %016x, rank "
            "%d's to %016x",
            i, static_cast<uint64_t>(hashes[i]), rank, r.param_hash));
      }
    }
  }

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
