// Private to ps/storage. One sparse embedding table on one shard.
//
// Rows live in `stripes` hash maps, each with its own mutex; a row belongs to
// stripe Mix64(id ^ salt) % stripes (independent of the shard routing hash).
// An operation on many ids groups them by stripe and locks each stripe once,
// never two at a time, so there is no lock ordering to get wrong.
//
// Row memory: one fp32 block per row, the value first (dim fp32, or dim
// 16-bit values packed into ceil(dim/2) floats) then num_slots*dim fp32
// slots. Every field of a row is plain data, so rows serialise as bytes.
//
// Thread safety: every public method may be called concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"
#include "ps/storage/consistency.h"
#include "ps/storage/cut.h"
#include "ps/storage/engine.h"
#include "ps/storage/optimizer.h"

namespace plexus::ps {

// Where a deferred cut's rows go: stripe s fills positions [begin[s],
// begin[s+1]) of out (all its rows, or its dirty_ids when !complete).
struct PendingCopy {
  TableCut* out = nullptr;
  bool complete = false;
  std::vector<size_t> begin;
};

class SparseTable {
 public:
  // `pool` (may be null; outlives the table) lends threads to large reads
  // and updates (see VisitStripes).
  SparseTable(const TableConfig& config, std::unique_ptr<Optimizer> optimizer,
              int stripes, uint64_t applied_step, ThreadPool* pool = nullptr);

  const TableConfig& config() const { return config_; }
  ConsistencyState& consistency() { return consistency_; }

  // Validates `g` (shape [ids, dim], dtype, bytes) and converts it to fp32
  // with duplicate ids summed. Non-finite rows: INVALID_ARGUMENT under
  // kReject (sets *non_finite), dropped and counted under kSkip. Changes
  // nothing.
  absl::StatusOr<GradPiece> Prepare(const SparseGradient& g,
                                    bool* non_finite) const;

  struct ApplyStats {
    int64_t applied = 0;
    int64_t not_admitted = 0;
  };
  // Applies `piece` (distinct ids, fp32 grads) through the
  // optimizer at `step`, creating admitted rows.
  ApplyStats Apply(const GradPiece& piece, uint64_t step);

  // Reads `ids` into `out` (shape [ids, dim], dtype `dtype`).
  void Read(absl::Span<const uint64_t> ids, bool create_missing, uint64_t step,
            DType dtype, SparseValues* out);

  // Evicts rows untouched since newest_step - ttl_steps (once per newest
  // step) and rows beyond the capacity. Returns the number evicted.
  int64_t Evict(uint64_t newest_step);

  // Checkpoint cuts. Every row change (update, hit count, creation,
  // eviction) marks the row dirty; Cut() copies the rows (all when
  // `complete`, else the dirty ones plus the ids of rows removed since the
  // previous cut) into `out` and starts a new dirty set. `out->data` may be
  // pre-sized by the caller (PrepareCut) so no page is faulted in here.
  // REQUIRES: no concurrent mutation of this table (the engine's cut barrier
  // is held exclusively); stripes are still locked, one at a time.
  // `threads` > 1 copies stripes in parallel. With `defer`, Cut only fixes
  // which rows go where (O(stripes + dirty ids)) and marks the stripes; a
  // change to a marked stripe first saves the pre-image of the row it
  // changes (copy on write), and each stripe is copied later (CopyStripes,
  // FinishCut, or the next Cut) from its rows and those pre-images, so the
  // copy still shows the state at the cut. `out` must stay alive (and its
  // vectors unresized) until FinishCut() returns.
  void Cut(bool complete, int threads, bool defer, TableCut* out) const;
  // Copies every stripe still pending from the last deferred Cut, with up
  // to `threads` threads, one per 16 K rows (each takes the next stripe not
  // taken yet; a stripe a pusher copied meanwhile is skipped).
  void FinishCut(int threads) const;
  // Copies stripes [first, last] of the last deferred Cut where still
  // pending, on the calling thread (a writer streaming the cut stripe by
  // stripe).
  void CopyStripes(int first, int last) const;
  // Sizes out->data for a later Cut(complete) from the current row counts
  // (no lock needed beyond the stripes; an estimate).
  void PrepareCut(bool complete, TableCut* out) const;
  // Installs the rows of `cut` (a freshly constructed, empty table), not
  // dirty. Returns INVALID_ARGUMENT if the row size does not match.
  absl::Status Load(const TableCut& cut);
  // Lazy restore. AttachSource (before the table is published) makes every
  // lookup of an id not in memory consult `source` first (rows found there
  // are loaded, not dirty: they equal the base checkpoint). LoadFromSource
  // loads every row not looked up yet (the background loader; also run
  // inline by complete cuts and ForEachRow) and then detaches the source;
  // it returns early once StopLoading() was called. Rows removed after the
  // restore are remembered so they never come back from the source. Tables
  // that evict (TTL or capacity) load everything at their first sweep.
  void AttachSource(std::shared_ptr<RowSource> source, int64_t rows);
  void LoadFromSource() const;
  void StopLoading() { stop_loading_.store(true); }
  // Rows still only in the source.
  int64_t rows_in_source() const {
    return source_rows_.load(std::memory_order_relaxed);
  }

  // Engine-local identity: distinct for every SparseTable ever constructed.
  uint64_t serial() const { return serial_; }
  int64_t row_floats() const {
    return value_floats_ + num_slots_ * config_.dim;
  }

  TableInfo Info() const;
  absl::StatusOr<RowSnapshot> ReadRow(uint64_t id) const;
  // See Engine::ForEachRow.
  void ForEachRow(
      const std::function<void(uint64_t, const RowSnapshot&)>& fn) const;

 private:
  struct Row {
    uint64_t hit_count = 0;
    uint64_t last_step = 0;
    uint64_t version = 0;
    int64_t update_count = 0;
    // Changed since the previous cut (and listed in its stripe's dirty_ids)
    // iff dirty_epoch == the table's epoch_ (a cut starts a new epoch).
    uint32_t dirty_epoch = 0;
    std::unique_ptr<float[]> data;
  };
  struct Stripe {
    absl::Mutex mu;
    absl::flat_hash_map<uint64_t, Row> rows ABSL_GUARDED_BY(mu);
    // Admission: touches of ids that have no row yet. At most
    // kMaxPendingPerStripe entries; beyond that the counts start over.
    absl::flat_hash_map<uint64_t, uint32_t> pending_hits ABSL_GUARDED_BY(mu);
    // (last_step or hit_count, id): eviction order, kept only when the table
    // evicts (ttl or capacity).
    absl::btree_set<std::pair<uint64_t, uint64_t>> by_step ABSL_GUARDED_BY(mu);
    absl::btree_set<std::pair<uint64_t, uint64_t>> by_hits ABSL_GUARDED_BY(mu);
    // Ids changed or removed since the previous cut (may repeat an id that
    // was removed and created again).
    std::vector<uint64_t> dirty_ids ABSL_GUARDED_BY(mu);
    // Lazy restore: whether rows of this stripe may still be in source_, and
    // the ids already resolved against it (loaded, found absent, removed).
    bool sourced ABSL_GUARDED_BY(mu) = false;
    // A deferred cut still waiting for this stripe's rows; null if none.
    // While set, the first change of a row the cut holds saves the row's
    // pre-image in `preserved` (copy on write); rows created after the cut
    // are listed in born_after (complete cuts); cut_ids are the ids an
    // incremental cut holds (sorted).
    const struct PendingCopy* pending ABSL_GUARDED_BY(mu) = nullptr;
    absl::flat_hash_map<uint64_t, Row> preserved ABSL_GUARDED_BY(mu);
    absl::flat_hash_set<uint64_t> born_after ABSL_GUARDED_BY(mu);
    std::vector<uint64_t> cut_ids ABSL_GUARDED_BY(mu);
    absl::flat_hash_set<uint64_t> resolved ABSL_GUARDED_BY(mu);
  };

  static constexpr size_t kMaxPendingPerStripe = size_t{1} << 16;

  int StripeOf(uint64_t id) const;
  // Groups positions 0..n-1 of `ids` by stripe: order[] lists positions,
  // stripe s owning order[begin[s] .. begin[s+1]).
  void GroupByStripe(absl::Span<const uint64_t> ids, std::vector<int>* begin,
                     std::vector<int32_t>* order) const;
  // How many parts VisitStripes splits a batch of n ids into: one per
  // kIdsPerPart ids, at most one per pool thread plus the caller.
  int PartsFor(size_t n) const;
  // Calls fn(part, stripe, from, to) with each stripe that owns ids
  // (order[from, to)) locked. The stripes are cut into `parts` runs of
  // about as many ids each, run in parallel (ParallelFor on the pool); a
  // run visits its stripes one at a time, in an order that avoids convoys.
  template <typename Fn>
  void VisitStripes(const std::vector<int>& begin, int parts, Fn&& fn);
  Row NewRow(uint64_t id) const;
  // Updates hit count / last step (and the eviction indexes).
  void Touch(Stripe& s, uint64_t id, Row& row, uint64_t step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // Copies the stripe into its pending cut, if any.
  void EnsureCopied(Stripe& s) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // Call before changing, removing (row non-null) or creating (row null)
  // row `id`: keeps what a pending cut needs (copy on write).
  void BeforeChange(Stripe& s, uint64_t id, const Row* row) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // Starts loading what visiting ids[order[k]] of [.., to) will need a few
  // positions on: the hash slot, then the row's first `bytes`. The rows are
  // scattered over the heap, so each lookup is otherwise a cache miss or
  // two, waited for one at a time (engine_bench, 1 M rows: pulled rows/s
  // +10-16%, pushed rows/s 1.6-3x).
  void PrefetchAhead(const Stripe& s, absl::Span<const uint64_t> ids,
                     absl::Span<const int32_t> order, int k, int to,
                     size_t bytes) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // The row `id` if in memory, else faulted in from the source; null if
  // neither.
  Row* Lookup(Stripe& s, uint64_t id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // Inserts a row read from the source (not dirty).
  Row* InsertSourced(Stripe& s, uint64_t id, const RowMeta& meta,
                     const float* data) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  // Looks up or creates (if admitted) the row. Null if not admitted.
  Row* FindOrAdmit(Stripe& s, uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void EraseRow(Stripe& s, uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu);
  void MarkDirty(Stripe& s, uint64_t id, Row& row) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(s.mu) {
    const uint32_t epoch = epoch_.load(std::memory_order_relaxed);
    if (row.dirty_epoch != epoch) {
      row.dirty_epoch = epoch;
      s.dirty_ids.push_back(id);
      dirty_entries_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void ValueToFloat(const Row& row, float* out) const;
  RowSnapshot SnapshotOf(const Row& row) const;
  void ValueFromFloat(const float* in, Row& row) const;
  int64_t BytesPerRow() const;

  // Constant after construction.
  const TableConfig config_;
  const std::unique_ptr<Optimizer> optimizer_;
  const uint64_t name_hash_;
  const int num_slots_;
  const int64_t value_floats_;  // floats holding the value
  const bool index_by_step_;    // ttl or LRU
  const bool index_by_hits_;    // LFU
  const std::unique_ptr<Stripe[]> stripes_;
  const int num_stripes_;
  ThreadPool* const pool_;
  const uint64_t serial_;
  ConsistencyState consistency_;

  // Newest step a TTL sweep ran for (sweeps run once per step).
  std::atomic<uint64_t> ttl_swept_step_{0};
  mutable std::atomic<int64_t> num_rows_{0};
  std::atomic<int64_t> rows_evicted_{0};
  std::atomic<int64_t> rows_not_admitted_{0};
  // The dirty epoch; bumped by every cut (under the engine's barrier).
  mutable std::atomic<uint32_t> epoch_{1};
  // Entries pushed to the stripes' dirty_ids since the previous cut.
  mutable std::atomic<int64_t> dirty_entries_{0};
  // Lazy restore: set once before publication, then read-only.
  std::shared_ptr<RowSource> source_;
  mutable std::atomic<int64_t> source_rows_{0};
  std::atomic<bool> stop_loading_{false};
  // False from AttachSource until LoadFromSource has loaded every row.
  mutable std::atomic<bool> loaded_{true};
  // The last deferred cut (set under the engine's cut barrier; the stripes
  // point at it while they are pending).
  mutable std::shared_ptr<const struct PendingCopy> pending_cut_;
  // Serialises LoadFromSource runs (loader thread vs. inline callers).
  mutable absl::Mutex load_mu_;
};

}  // namespace plexus::ps
