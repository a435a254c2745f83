// Private to ps/storage. Per variable/table consistency state: synchronous
// aggregation of a step's closure contributions, bounded-staleness progress,
// and the waits of pulls. See engine.h for the semantics.
//
// Thread safety: every method may be called from any thread; one mutex per
// target guards the state (the data itself is guarded by the target's
// stripes, not here).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "ps/storage/config.h"
#include "ps/storage/tensor.h"

namespace plexus::ps {

// A validated gradient in fp32: dense (rows) or sparse (distinct ids).
struct GradPiece {
  RowRange rows;
  std::vector<uint64_t> ids;
  std::vector<float> grads;
  // A dense piece of an async variable may borrow the request's own fp32
  // bytes instead (valid while the push runs; `grads` then stays empty):
  // the copy was a tenth of a large push's server time (ps_bench profile).
  const float* borrowed = nullptr;
  const float* data() const {
    return borrowed != nullptr ? borrowed : grads.data();
  }
  // Sparse rows / dense items dropped by the skip policy while preparing.
  int64_t skipped_non_finite = 0;
  // Rows this piece covers (dense rows or distinct ids).
  int64_t num_rows() const {
    return ids.empty() ? rows.size() : static_cast<int64_t>(ids.size());
  }
};

class ConsistencyState {
 public:
  // Steps <= applied_step count as applied (a target created or restored in
  // the middle of a job).
  ConsistencyState(const ConsistencyConfig& config, uint64_t applied_step);

  const ConsistencyConfig& config() const { return config_; }
  bool is_sync() const { return config_.mode == ConsistencyMode::kSync; }

  // Sync mode: OK if a push for `step` can still be aggregated.
  absl::Status CheckSyncPush(uint64_t step) const;

  // Sync mode: stores the contribution of `closure` (its piece
  // (push_seq, chunk_index) of num_chunks). When this completes the step
  // (num_workers closures with every chunk in), returns the step's pieces in
  // the fixed order (closure ascending, then (push_seq, chunk) ascending) and
  // the step counts as "applying" until MarkApplied(step).
  absl::StatusOr<std::optional<std::vector<GradPiece>>> AddSyncContribution(
      uint64_t step, uint64_t closure, uint32_t push_seq, uint32_t chunk_index,
      uint32_t num_chunks, GradPiece piece);

  // Records that an update of `step` was applied (every mode).
  void MarkApplied(uint64_t step);

  // Bounded staleness: `worker` has pushed `step`.
  void RecordProgress(uint64_t worker, uint64_t step);

  // Blocks as the mode requires for a pull at `step`. DEADLINE_EXCEEDED at
  // `deadline`, UNAVAILABLE after Shutdown().
  absl::Status WaitForPull(uint64_t step, absl::Time deadline);

  // Wakes every waiter; later waits fail at once.
  void Shutdown();

  uint64_t last_applied_step() const;
  int64_t updates_applied() const;

 private:
  struct Contribution {
    // (push_seq, chunk_index) -> piece, in arrival order per key.
    std::vector<std::pair<std::pair<uint32_t, uint32_t>, GradPiece>> pieces;
    // push_seq -> (chunks expected, distinct chunks seen)
    absl::flat_hash_map<uint32_t, std::pair<uint32_t, std::vector<uint32_t>>>
        chunks;
    bool complete() const;
  };
  struct PendingStep {
    absl::btree_map<uint64_t, Contribution> closures;
    int complete_closures = 0;
    bool applying = false;
  };

  bool PullReady(uint64_t step) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint64_t SlowestProgress() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ConsistencyConfig config_;

  mutable absl::Mutex mu_;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t last_applied_step_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t updates_applied_ ABSL_GUARDED_BY(mu_) = 0;
  // Sync: steps with contributions not yet applied.
  std::map<uint64_t, PendingStep> pending_ ABSL_GUARDED_BY(mu_);
  // Bounded staleness: last pushed step per worker.
  absl::flat_hash_map<uint64_t, uint64_t> progress_ ABSL_GUARDED_BY(mu_);
};

}  // namespace plexus::ps
