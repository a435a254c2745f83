// The CTR example's model: a factorisation machine over the dataset's ids
// (ctr_data.h). One embedding table holds, per id, a row of 1 + k floats:
// the id's linear weight and its k-wide interaction vector; the logit of an
// example is sum_i w_i + sum_{i<j} <v_i, v_j> over its ids.
//
// The table lives behind CtrParams: the PS shards (through the worker's PS
// client, Adagrad applied on the server) or, for the single-process
// baseline, an in-process table using the PS's own optimizer code.
//
// Thread safety: CtrParams implementations say; the free functions are
// thread-safe given thread-safe params.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "examples/ctr/ctr_data.h"
#include "plexus/v1/ps.pb.h"

namespace plexus::worker {
class PsClient;
struct StepOptions;
}  // namespace plexus::worker

namespace plexus::examples {

inline constexpr char kCtrTable[] = "ctr";

class CtrParams {
 public:
  virtual ~CtrParams() = default;
  // Rows of `ids` (row_dim floats each) into `out`; missing rows are
  // created by the table's initializer.
  virtual absl::Status Pull(absl::Span<const uint64_t> ids,
                            absl::Span<float> out) = 0;
  // Applies gradients (row_dim floats per id; ids distinct).
  virtual absl::Status Push(absl::Span<const uint64_t> ids,
                            absl::Span<const float> grads) = 0;
};

// The table's configuration on the PS (Adagrad, async, normal init).
v1::TableConfig CtrTableConfig(const CtrConfig& config);

// Params on the PS through `client` (borrowed). `step` (may be null) is
// re-read on every push so a step context can number them.
std::unique_ptr<CtrParams> NewPsParams(const CtrConfig& config,
                                       worker::PsClient* client,
                                       uint64_t step_id);
// An in-process table with the same optimizer as the PS. Not thread-safe.
absl::StatusOr<std::unique_ptr<CtrParams>> NewLocalParams(
    const CtrConfig& config);

struct StepStats {
  double loss = 0;          // mean log loss of the batch (before the update)
  double comm_seconds = 0;  // time in Pull + Push
  double total_seconds = 0;
  int64_t unique_ids = 0;
};

// One training step: examples [(step-1)*batch, step*batch) of the training
// split (wrapping around), pull, forward, backward, push.
absl::StatusOr<StepStats> TrainStep(const CtrDataset& data, uint64_t step,
                                    CtrParams& params);

struct EvalResult {
  int64_t examples = 0;
  double auc = 0, logloss = 0;              // the learned model
  double truth_auc = 0, truth_logloss = 0;  // the ground truth
};

// Evaluates the first `n` test examples (n <= 0: all).
absl::StatusOr<EvalResult> Evaluate(const CtrDataset& data, int64_t n,
                                    CtrParams& params);

}  // namespace plexus::examples
