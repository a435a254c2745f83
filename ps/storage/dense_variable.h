// Private to ps/storage. This shard's slice (rows [begin, end)) of one dense
// variable.
//
// The slice is cut into row-range stripes, each with its own mutex guarding
// the values, slots and update counts of its rows; an operation on a row range
// locks the stripes it overlaps one at a time (never two at once).
//
// Thread safety: every public method may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"
#include "ps/storage/consistency.h"
#include "ps/storage/cut.h"
#include "ps/storage/engine.h"
#include "ps/storage/optimizer.h"

namespace plexus::ps {

class DenseVariable {
 public:
  // Validates the slice and initial value, then allocates and initialises.
  // `pool` (may be null; outlives the variable) lends threads to large
  // updates.
  static absl::StatusOr<std::unique_ptr<DenseVariable>> Create(
      const CreateVariableOptions& options, int stripes,
      ThreadPool* pool = nullptr);

  const VariableConfig& config() const { return config_; }
  RowRange rows() const { return rows_; }
  int64_t width() const { return width_; }
  ConsistencyState& consistency() { return consistency_; }

  // Resolves an empty range to the whole slice; INVALID_ARGUMENT if `r` is
  // not inside the slice.
  absl::StatusOr<RowRange> Resolve(RowRange r) const;

  // Validates and converts a gradient to fp32; as SparseTable::Prepare (a
  // non-finite item is skipped as a whole under kSkip: empty rows).
  absl::StatusOr<GradPiece> Prepare(const DenseGradient& g,
                                    bool* non_finite) const;

  // Applies fp32 gradients of rows piece.rows (grads piece.grads), or of the
  // rows marked in `mask` (relative to piece.rows.begin) when non-null.
  void Apply(const GradPiece& piece, const std::vector<bool>* mask);

  // Reads rows `r` (already resolved) as `dtype`.
  void Read(RowRange r, DType dtype, DenseValues* out) const;

  VariableInfo Info() const;
  // See Engine::ReadVariable.
  DenseSnapshot Snapshot() const;

  // Checkpoint cut: copies the slice in its storage form into `out` when it
  // changed since the previous cut or `!incremental` (else out->changed =
  // false and only the config is filled in), and starts a new change
  // record. REQUIRES: no concurrent Apply (the engine's cut barrier).
  void Cut(bool incremental, VariableCut* out) const;
  // Installs the values, slots and update counts of `cut` (same slice and
  // width); INVALID_ARGUMENT otherwise. Not concurrent with anything.
  absl::Status Load(const VariableCut& cut);

 private:
  DenseVariable(const CreateVariableOptions& options, RowRange rows,
                int64_t width, std::unique_ptr<Optimizer> optimizer,
                int stripes, ThreadPool* pool);
  // Applies rows [a, b) (local indexes) inside one stripe.
  void ApplySegment(int64_t a, int64_t b, const float* g);
  // Apply's work on local rows [r, end) of the piece (starting at local
  // row `base`), a stripe at a time.
  void ApplyRows(int64_t r, int64_t end, int64_t base, const GradPiece& piece,
                 const std::vector<bool>* mask);

  // Constant after construction.
  const VariableConfig config_;
  const RowRange rows_;
  const int64_t width_;
  const std::unique_ptr<Optimizer> optimizer_;
  const int num_slots_;
  const int64_t rows_per_stripe_;
  ThreadPool* const pool_;
  ConsistencyState consistency_;

  // The mutexes; stripe i guards local rows [i*rows_per_stripe_, ...) of the
  // arrays below (not expressible with ABSL_GUARDED_BY).
  std::unique_ptr<absl::Mutex[]> stripe_mu_;
  std::vector<float> values32_;     // fp32 storage
  std::vector<uint16_t> values16_;  // fp16 / bf16 storage
  std::vector<std::vector<float>> slots_;
  std::vector<int64_t> update_count_;
  // Applied to since the previous cut.
  mutable std::atomic<bool> dirty_{true};
};

}  // namespace plexus::ps
