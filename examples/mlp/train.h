// Synchronous data-parallel training of the digits MLP.
//
// Every step takes the next global batch of `batch_size` training images (the
// same shuffled order on every rank: it depends only on the seed and the
// epoch). Rank r of W computes the gradient of its slice of the batch, scaled
// by 1 / batch, and the ranks all-reduce (sum) those gradients, which gives
// every rank the batch-mean gradient; every rank then applies the same
// momentum-SGD update, so the replicas stay bitwise identical (checked at the
// end by comparing parameter hashes). Without a communicator (the baseline)
// one process does the same on the whole batch: the same model up to the
// order of float additions.
//
// Progress (per evaluation) and a summary go to a Reporter: human text or
// JSON lines. Only rank 0 reports.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "examples/mlp/digits.h"

namespace plexus::collectives {
class Communicator;
}

namespace plexus::examples {

struct TrainOptions {
  int hidden = 64;            // hidden ReLU units
  int batch_size = 64;        // global batch, split across ranks
  int epochs = 30;            // at most this many passes over the training set
  float lr = 0.05f;           // learning rate
  float momentum = 0.9f;      // heavy-ball momentum
  float weight_decay = 0.0f;  // L2 coefficient added to the gradient
  uint64_t seed = 1;          // initial weights and shuffling
  // Test accuracy whose first crossing is the time to accuracy.
  double target_accuracy = 0.90;
  // Stop at the first evaluation that reaches target_accuracy.
  bool stop_at_target = false;
  // Evaluate on the test set every this many steps; 0: once per epoch.
  int eval_every_steps = 0;
  // Report progress every this many evaluations (the summary always).
  int report_every = 1;
  bool json = false;  // JSON lines instead of text
  // Describes the setup in the first line (e.g. "2 workers, ring").
  std::string label = "baseline (1 process, no communication)";
};

struct TrainResult {
  int epochs_run = 0;
  int64_t steps = 0;
  int64_t examples = 0;
  double test_accuracy = 0;  // after the last step
  double train_loss = 0;     // mean over the last epoch's batches
  // Wall seconds from the first step to the end (evaluations included).
  double wall_s = 0;
  // Seconds inside steps: computing (gradient and update) and inside the
  // all-reduce (waiting for peers included).
  double compute_s = 0;
  double comm_s = 0;
  // Wall seconds until the test accuracy first reached the target, if it did.
  std::optional<double> time_to_target_s;
  std::optional<int> epoch_at_target;
  uint64_t param_hash = 0;
  std::string algorithm = "none";  // all-reduce algorithm that ran
};

// One replica of the model (parameters, optimizer state, a gradient buffer)
// and the way replicas agree: on the CPU with a collectives Communicator
// (NewCpuReplica), or on a GPU with NCCL (gpu_replica.h). Train drives it; the
// split into phases is what lets it time computing and communicating apart.
// Thread safety: one thread.
class Replica {
 public:
  virtual ~Replica() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual size_t num_params() const = 0;
  // The all-reduce algorithm that ran ("none" without communication).
  virtual std::string algorithm() const = 0;
  // Makes every replica's parameters rank 0's.
  virtual absl::Status SyncInitialParams() = 0;
  // Replaces the gradient buffer with the gradient of the summed loss of
  // training images `index`, times `scale`; returns the summed loss.
  // Returns when the gradient is computed (GPU work included).
  virtual absl::StatusOr<double> ComputeGradient(absl::Span<const int> index,
                                                 float scale) = 0;
  // Sums the gradient buffers over the replicas, along with `loss` (this
  // replica's share of the batch's mean loss); returns the summed loss.
  virtual absl::StatusOr<double> AllReduceGradient(double loss) = 0;
  // One optimizer step with the (summed) gradient buffer.
  virtual absl::Status ApplyUpdate() = 0;
  virtual absl::StatusOr<double> TestAccuracy() = 0;
  // A hash of the parameters' bytes.
  virtual absl::StatusOr<uint64_t> ParamHash() = 0;
  // INTERNAL, naming the ranks, when another replica's parameters hash
  // differently from `hash`.
  virtual absl::Status CheckAgreement(uint64_t hash) = 0;
};

// The CPU replica (Mlp + MomentumSgd). `comm` (borrowed, may be null: the
// baseline, no communication) must outlive the replica; so must `data`.
std::unique_ptr<Replica> NewCpuReplica(const DigitsSplit& data,
                                       const TrainOptions& options,
                                       collectives::Communicator* comm);

// Trains `replica` (borrowed for the call) on `data`. `out` receives the
// progress and summary (rank 0 only; null: none). INVALID_ARGUMENT for bad
// options; a replica's error (naming the peer) as it comes; INTERNAL if the
// replicas' parameters differ at the end.
absl::StatusOr<TrainResult> Train(const DigitsSplit& data,
                                  const TrainOptions& options, Replica* replica,
                                  FILE* out);

// Train on a CPU replica over `comm` (null: the baseline).
absl::StatusOr<TrainResult> TrainOnCpu(const DigitsSplit& data,
                                       const TrainOptions& options,
                                       collectives::Communicator* comm,
                                       FILE* out);

// INVALID_ARGUMENT, saying which, for options no replica can train with.
absl::Status ValidateTrainOptions(const TrainOptions& options);

}  // namespace plexus::examples
