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
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "examples/mlp/digits.h"

namespace plexus::collectives {
class Communicator;
}

namespace plexus::examples {

struct TrainOptions {
  int hidden = 64;           // hidden ReLU units
  int batch_size = 64;       // global batch, split across ranks
  int epochs = 30;           // at most this many passes over the training set
  float lr = 0.05f;          // learning rate
  float momentum = 0.9f;     // heavy-ball momentum
  float weight_decay = 0.0f; // L2 coefficient added to the gradient
  uint64_t seed = 1;         // initial weights and shuffling
  // Test accuracy whose first crossing is the time to accuracy.
  double target_accuracy = 0.90;
  // Stop at the first evaluation that reaches target_accuracy.
  bool stop_at_target = false;
  // Evaluate on the test set every this many steps; 0: once per epoch.
  int eval_every_steps = 0;
  // Report progress every this many evaluations (the summary always).
  int report_every = 1;
  bool json = false;         // JSON lines instead of text
  // Describes the setup in the first line (e.g. "2 workers, ring").
  std::string label = "baseline (1 process, no communication)";
};

struct TrainResult {
  int epochs_run = 0;
  int64_t steps = 0;
  int64_t examples = 0;
  double test_accuracy = 0;   // after the last step
  double train_loss = 0;      // mean over the last epoch's batches
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

// Trains on `data`. `comm` (borrowed for the call) is null for the baseline;
// otherwise this is rank comm->rank() of comm->size(). `out` receives the
// progress and summary (rank 0 only). INVALID_ARGUMENT for bad options; a
// communicator error (naming the peer) as it comes; INTERNAL if the replicas'
// parameters differ at the end.
absl::StatusOr<TrainResult> Train(const DigitsSplit& data,
                                  const TrainOptions& options,
                                  collectives::Communicator* comm, FILE* out);

}  // namespace plexus::examples
