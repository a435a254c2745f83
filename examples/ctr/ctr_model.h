// The CTR example's model: a factorisation machine over the dataset's ids
// (ctr_data.h). One embedding table holds, per id, a row of 1 + k floats:
// the id's linear weight and its k-wide interaction vector; the logit of an
// example is sum_i w_i + sum_{i<j} <v_i, v_j> over its ids.
//
// The table lives behind CtrParams: the PS shards (through the worker's PS
// client, Adagrad applied on the server) or, for the single-process
// baseline, an in-process table using the PS's own optimizer code.
//
// The arithmetic of a step lives behind CtrCompute: on the CPU
// (NewCpuCompute, the reference) or in CUDA kernels (NewGpuCompute,
// ctr_gpu.h). TrainStep and Evaluate drive either the same way.
//
// Thread safety: CtrParams and CtrCompute implementations say; the free
// functions are thread-safe given thread-safe params and compute.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

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

  // Whether PullToDevice and PushFromDevice work: the table is reached from
  // GPU memory without a host copy in between that the caller makes.
  // Default false (a GPU compute then stages through Pull and Push).
  virtual bool reaches_device() const { return false; }
  // Pull and Push with `out` / `grads` in device memory (ids.size() *
  // row_dim floats), ordered after the work enqueued on `stream` (a
  // cudaStream_t; null: the default stream) and complete when the call
  // returns. UNIMPLEMENTED unless reaches_device().
  virtual absl::Status PullToDevice(absl::Span<const uint64_t> ids, float* out,
                                    void* stream);
  virtual absl::Status PushFromDevice(absl::Span<const uint64_t> ids,
                                      const float* grads, void* stream);
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

// A batch of examples and the rows it touches: the distinct ids (in order of
// first appearance) and, per (example, feature), the index of the example's
// id among them.
struct CtrBatch {
  int features = 0;  // ids per example
  int64_t dim = 0;   // floats per row (1 + model_k)
  std::vector<CtrExample> examples;
  std::vector<uint64_t> unique_ids;
  std::vector<int32_t> slot;  // examples.size() * features
};

// Examples [first, first + n) of `split` (wrapping around).
CtrBatch MakeCtrBatch(const CtrDataset& data, Split split, int64_t first,
                      int64_t n);

// The forward and backward passes of the model over one batch at a time, on
// some device. A step is Load, Pull, ForwardBackward, Push; scoring is Load,
// Pull, Logits.
//
// Both implementations compute in double per example and sum a row's
// gradient over the batch's occurrences of its id in float, in example
// order (no atomics): the same batch and rows give the same bits run after
// run, and the CPU's and the GPU's results agree to rounding.
//
// Thread safety: one thread at a time.
class CtrCompute {
 public:
  virtual ~CtrCompute() = default;
  // Where the arithmetic runs, for progress lines: "CPU" or "GPU".
  virtual std::string device() const = 0;
  // Makes `b` (borrowed until the next Load) the current batch.
  virtual absl::Status Load(const CtrBatch& b) = 0;
  // Fetches the current batch's rows from `params`.
  virtual absl::Status Pull(CtrParams& params) = 0;
  // The summed log loss of the current batch under the pulled rows; keeps
  // the gradient of that sum with respect to each pulled row for Push.
  virtual absl::StatusOr<double> ForwardBackward() = 0;
  // Sends ForwardBackward's gradients to `params`.
  virtual absl::Status Push(CtrParams& params) = 0;
  // The logit of each example of the current batch under the pulled rows.
  virtual absl::StatusOr<std::vector<double>> Logits() = 0;
};

// The reference compute, on the CPU.
std::unique_ptr<CtrCompute> NewCpuCompute();

struct StepStats {
  double loss = 0;          // mean log loss of the batch (before the update)
  double comm_seconds = 0;  // time in Pull + Push
  double total_seconds = 0;
  int64_t unique_ids = 0;
};

// One training step: examples [(step-1)*batch, step*batch) of the training
// split (wrapping around), pull, forward, backward, push.
absl::StatusOr<StepStats> TrainStep(const CtrDataset& data, uint64_t step,
                                    CtrParams& params, CtrCompute& compute);

struct EvalResult {
  int64_t examples = 0;
  double auc = 0, logloss = 0;              // the learned model
  double truth_auc = 0, truth_logloss = 0;  // the ground truth
};

// Evaluates the first `n` test examples (n <= 0: all).
absl::StatusOr<EvalResult> Evaluate(const CtrDataset& data, int64_t n,
                                    CtrParams& params, CtrCompute& compute);

}  // namespace plexus::examples
