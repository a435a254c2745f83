// The parameter-server storage engine of one shard: dense variable slices and
// sparse embedding tables, server-side optimizers, consistency modes and
// exactly-once pushes. No gRPC, no protos: ps/service translates ps.proto to
// these calls one to one (Push <-> Push, Pull <-> Pull, Create* <-> Create*).
//
// Data model
//  * A dense variable of shape [R, d1, d2...] is split on axis 0; this shard
//    holds rows [begin, end) (whole-variable coordinates). Row width is
//    d1*d2*..., values in the storage dtype, optimizer slots in fp32, plus per
//    row an update count (Adam's bias correction).
//  * A sparse table holds rows of `dim` elements keyed by uint64 ids, created
//    on first touch (subject to admission). A row is its value (storage
//    dtype), its optimizer slots (fp32), hit count, last-touched step, update
//    count and version (bumped by every applied update). Rows live in striped
//    hash maps, one mutex per stripe: there is no global lock on the data
//    path.
//  * Variables and tables share one namespace per shard.
//
// Pushes (Push) are all-or-nothing: every item of a request is validated
// (names, shapes, dtypes, byte lengths, ids/grad lengths, NaN/Inf under the
// reject policy) before anything changes; any error leaves the engine as it
// was, except for the error counters. (One exception: a sync piece arriving
// after its step completed, which needs more closures than num_workers, is
// refused after earlier items of the same request were applied.) Duplicate
// sparse ids in one item are summed before the optimizer runs once per
// distinct id.
//
// Consistency, per variable/table:
//  * kAsync: applied on arrival; pulls never wait.
//  * kSync: the pushes of one step t are aggregated per closure (closure_id,
//    or worker_id when closure_id is 0); once num_workers closures have
//    contributed (every chunk of their push), the contributions are summed in
//    ascending closure-id order (bitwise deterministic), divided by
//    num_workers and applied once. A pull at step t waits until step t-1 is
//    applied and no step < t is pending (steps <= applied_step given at
//    creation count as applied). Each of the num_workers closures sends its
//    step's gradient for every sync target as one logical push (possibly
//    chunked; an empty push counts), else the step never completes. A push
//    for an already-applied step is FAILED_PRECONDITION.
//  * kBoundedStaleness (bound s): applied on arrival; each worker's progress
//    is the last step it pushed. A pull at step t waits while the slowest
//    tracked worker's progress is < t - s - 1 (it is then working on a step
//    older than t - s). With num_workers = N > 0, fewer than N workers seen
//    counts as progress 0.
// Waits end at PullOptions::deadline (DEADLINE_EXCEEDED) or at Shutdown()
// (UNAVAILABLE).
//
// Exactly-once: the update key of a push piece is (job_id, closure_id,
// push_seq, chunk_index) when closure_id != 0, else (job_id, worker_id,
// step_id, push_seq, chunk_index). A second push with an applied key returns
// PushOutcome::kDuplicate and is not applied (duplicate counter +1). A push
// whose worker_incarnation is older than the newest seen for worker_id is
// FAILED_PRECONDITION (rejected counter +1). The record of keys grows until
// TrimAppliedKeys(C) drops the keys of steps <= C (called when checkpoint C is
// published). A push with neither a closure id nor (worker id and step id) has
// no key (an unregistered client) and is always applied.
//
// Thread safety: every method may be called from any number of threads at
// once. Calls on different rows/stripes proceed in parallel.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "ps/storage/config.h"
#include "ps/storage/tensor.h"

namespace plexus::ps {

// ---- creation ----

struct CreateVariableOptions {
  // The whole variable's configuration.
  VariableConfig config;
  // Rows this shard holds; empty: all rows [0, shape[0]).
  RowRange rows;
  // Initial values of exactly `rows`, shape [rows, shape[1:]...]; dtype
  // kUnspecified (the default): use config.initializer.
  TensorView initial_value;
  // Steps <= applied_step count as applied: in sync mode a pull at step
  // applied_step + 1 does not wait (a variable created or restored in the
  // middle of a job). Not part of the config (ignored by the idempotency
  // comparison). Default 0.
  uint64_t applied_step = 0;
};

struct CreateTableOptions {
  TableConfig config;
  // As CreateVariableOptions::applied_step.
  uint64_t applied_step = 0;
};

// ---- data plane ----

// Who and when, for pushes. Mirrors plexus.v1.RequestHeader + PushRequest.
struct PushOptions {
  std::string job_id;
  // 0: unregistered client (no incarnation check).
  uint64_t worker_id = 0;
  uint64_t worker_incarnation = 0;
  // Steps start at 1; 0: not part of a step (then async only: a sync target
  // refuses it with INVALID_ARGUMENT).
  uint64_t step_id = 0;
  // 0: not run as a closure.
  uint64_t closure_id = 0;
  uint32_t push_seq = 0;
  uint32_t chunk_index = 0;
  // 0 or 1: not split.
  uint32_t num_chunks = 0;
  // If false, no update key is recorded or checked (benchmarks, tools).
  bool exactly_once = true;
};

// A dense gradient for rows `rows` of `variable`: shape
// [rows.size(), shape[1:]...]. The rows must lie inside this shard's slice;
// {0, 0} means the whole slice.
struct DenseGradient {
  absl::string_view variable;
  RowRange rows;
  TensorView grad;
};

// Sparse gradients: ids[i]'s gradient is row i of `grads`, shape
// [ids.size(), dim]. Duplicate ids are summed.
struct SparseGradient {
  absl::string_view table;
  absl::Span<const uint64_t> ids;
  TensorView grads;
};

enum class PushOutcome { kApplied, kDuplicate, kAggregated };

struct PushResult {
  // kDuplicate: nothing applied. kAggregated: at least one item went into a
  // sync aggregation (and maybe completed and applied its step).
  PushOutcome outcome = PushOutcome::kApplied;
  // Dense rows + distinct sparse ids applied or aggregated; 0 for duplicates.
  int64_t rows_applied = 0;
  // Sparse rows dropped because not yet admitted.
  int64_t rows_not_admitted = 0;
  // Sparse rows / dense items skipped under NonFinitePolicy::kSkip.
  int64_t skipped_non_finite = 0;
};

struct PullOptions {
  // Step of the pull (for sync / bounded-staleness waits); 0: never wait.
  uint64_t step_id = 0;
  // Wait bound for consistency waits; DEADLINE_EXCEEDED after it.
  absl::Time deadline = absl::InfiniteFuture();
  // dtype of returned values; kUnspecified: each target's storage dtype.
  DType value_dtype = DType::kUnspecified;
};

// Rows of a dense variable to read; empty `rows`: this shard's whole slice.
struct DenseRead {
  absl::string_view variable;
  RowRange rows;
};

// Sparse rows to read. Missing rows are created (subject to admission) when
// create_missing, else their initializer value is returned and their position
// listed in SparseValues::missing_positions.
struct SparseRead {
  absl::string_view table;
  absl::Span<const uint64_t> ids;
  bool create_missing = false;
};

struct DenseValues {
  RowRange rows;
  DType dtype = DType::kFloat32;
  // [rows, shape[1:]...]
  std::vector<int64_t> shape;
  std::string data;
};

struct SparseValues {
  DType dtype = DType::kFloat32;
  // [ids.size(), dim]
  std::vector<int64_t> shape;
  std::string data;
  std::vector<uint32_t> missing_positions;
};

struct PullResult {
  std::vector<DenseValues> dense;    // one per DenseRead, in order
  std::vector<SparseValues> sparse;  // one per SparseRead, in order
};

struct PushPullResult {
  PushResult push;
  PullResult pull;
};

// ---- introspection ----

struct VariableInfo {
  VariableConfig config;
  RowRange rows;
  int64_t memory_bytes = 0;
  uint64_t last_applied_step_id = 0;
  int64_t updates_applied = 0;
};

struct TableInfo {
  TableConfig config;
  int64_t rows_in_memory = 0;
  // Values, slots and bookkeeping (an estimate of the hash-map overhead
  // included).
  int64_t memory_bytes = 0;
  int64_t rows_evicted = 0;
  uint64_t last_applied_step_id = 0;
  int64_t updates_applied = 0;
  // Pushed rows dropped by admission, since creation.
  int64_t rows_not_admitted = 0;
};

// Engine-wide counters since creation.
struct EngineCounters {
  int64_t duplicate_pushes = 0;
  // Pushes refused for any reason (bad input, stale incarnation, ...).
  int64_t rejected_pushes = 0;
  // Pushes refused or items/rows skipped because of NaN/Inf.
  int64_t non_finite_rejected = 0;
  int64_t non_finite_skipped = 0;
  // Update keys currently held by the exactly-once record.
  int64_t applied_keys = 0;
};

// A raw view of one sparse row, for tests and checkpoint writers.
struct RowSnapshot {
  std::vector<float> value;               // dim, converted to fp32
  std::vector<std::vector<float>> slots;  // num_slots x dim
  uint64_t hit_count = 0;
  uint64_t last_step = 0;
  uint64_t version = 0;
  int64_t update_count = 0;
};

// A raw view of a dense slice, for tests and checkpoint writers.
struct DenseSnapshot {
  RowRange rows;
  std::vector<float> values;              // rows x width
  std::vector<std::vector<float>> slots;  // num_slots x (rows x width)
  std::vector<int64_t> update_count;      // per row
};

// A consistent cut of the whole shard (ps/storage/cut.h).
struct ShardCut;

// Engine::TakeCut (the PrepareCheckpoint RPC's cut).
struct CutOptions {
  // Step C of the checkpoint: FAILED_PRECONDITION if any variable or table
  // has applied an update of a step > C. 0: no check.
  uint64_t step_id = 0;
  // The checkpoint the cut is for; never 0.
  uint64_t checkpoint_id = 0;
  // Checkpoint to cut incrementally against (PrepareCheckpoint's
  // base_checkpoint_id). Honoured only if it is the checkpoint of the
  // engine's previous cut or restore (and not invalidated); otherwise, and
  // for 0, the cut is complete. ShardCut::base_checkpoint_id says which.
  uint64_t base_checkpoint_id = 0;
  // Threads copying rows while pushes are held back; 0: one per core.
  int copy_threads = 0;
  // True (default): sparse rows are not copied under the barrier; each
  // table stripe is copied before its first change after the cut (by the
  // changing thread) or by ShardCut::Finish(), so pushes pause only while
  // the cut is marked (O(stripes + changed rows)), and a push hitting a
  // not-yet-copied stripe pays for copying that stripe once. The cut holds
  // the state at the barrier either way. False: everything is copied under
  // the barrier.
  bool defer_copy = true;
};

struct EngineOptions {
  // Stripes (mutex + hash map) per sparse table; more stripes, less
  // contention. Default 64.
  int table_stripes = 64;
  // Row-range stripes per dense variable slice. Default 16.
  int variable_stripes = 16;
  // Threads that help the calling thread through a sparse pull or push of
  // thousands of ids, or a dense push of 512 K elements or more (each takes
  // a share of the stripes). -1: one per core but the caller's, at most 7;
  // 0: none.
  int parallel_threads = -1;
};

class Engine {
 public:
  virtual ~Engine() = default;

  // Creates this shard's slice of a dense variable. Returns true if created,
  // false if it already exists with an identical config and slice;
  // ALREADY_EXISTS if the name is taken by anything else. INVALID_ARGUMENT
  // for a bad config, slice or initial value (before any allocation).
  virtual absl::StatusOr<bool> CreateVariable(
      const CreateVariableOptions& options) = 0;
  // Creates this shard's part of a sparse table; as CreateVariable.
  virtual absl::StatusOr<bool> CreateTable(
      const CreateTableOptions& options) = 0;
  // NOT_FOUND if there is no variable (resp. table) of that name.
  virtual absl::Status DeleteVariable(absl::string_view name) = 0;
  virtual absl::Status DeleteTable(absl::string_view name) = 0;

  // Applies (or aggregates) gradients; see the file comment.
  virtual absl::StatusOr<PushResult> Push(
      const PushOptions& options, absl::Span<const DenseGradient> dense,
      absl::Span<const SparseGradient> sparse) = 0;

  // Reads dense slices and sparse rows, waiting as the consistency modes say.
  virtual absl::StatusOr<PullResult> Pull(
      const PullOptions& options, absl::Span<const DenseRead> dense,
      absl::Span<const SparseRead> sparse) = 0;

  // Push then Pull in one call (PushPull RPC): the pulled values reflect the
  // push for async targets; sync targets wait as Pull does. A duplicate push
  // still returns the pull. A failed push returns its error without pulling.
  virtual absl::StatusOr<PushPullResult> PushPull(
      const PushOptions& push_options,
      absl::Span<const DenseGradient> push_dense,
      absl::Span<const SparseGradient> push_sparse,
      const PullOptions& pull_options, absl::Span<const DenseRead> pull_dense,
      absl::Span<const SparseRead> pull_sparse) = 0;

  // Drops the exactly-once keys of steps <= step_id (keys pushed with
  // step_id 0 are kept until Trim with UINT64_MAX).
  virtual void TrimAppliedKeys(uint64_t step_id) = 0;

  // Evicts from every table the rows untouched for ttl_steps, counted from
  // the newest step the engine has seen, and rows beyond capacity. Pushes run
  // this for the tables they touch; the service may also call it
  // periodically. Returns the number of rows evicted.
  virtual int64_t RunEviction() = 0;

  // Wakes every waiting Pull with UNAVAILABLE; later waits fail at once.
  virtual void Shutdown() = 0;

  virtual absl::StatusOr<VariableInfo> DescribeVariable(
      absl::string_view name) const = 0;
  virtual absl::StatusOr<TableInfo> DescribeTable(
      absl::string_view name) const = 0;
  // Sorted by name.
  virtual std::vector<VariableInfo> ListVariables() const = 0;
  virtual std::vector<TableInfo> ListTables() const = 0;
  virtual EngineCounters counters() const = 0;

  // The stored row `id` of `table`; NOT_FOUND if the table or row is absent.
  virtual absl::StatusOr<RowSnapshot> ReadRow(absl::string_view table,
                                              uint64_t id) const = 0;

  // Visits every row of `table` (for checkpoint writers), one stripe at a
  // time with that stripe locked: concurrent updates to other stripes go on,
  // so the visit is not a global cut. `fn` must not call into the engine.
  // NOT_FOUND if no such table.
  virtual absl::Status ForEachRow(
      absl::string_view table,
      const std::function<void(uint64_t id, const RowSnapshot& row)>& fn)
      const = 0;

  // The whole slice of `variable`: values (fp32), slots and per-row update
  // counts. NOT_FOUND if no such variable.
  virtual absl::StatusOr<DenseSnapshot> ReadVariable(
      absl::string_view variable) const = 0;

  // ---- checkpoints (ps/storage/checkpoint.h drives these) ----

  // Takes a consistent cut: values, optimizer slots, per-row bookkeeping of
  // every table and variable, the exactly-once record and the step, all as
  // of one moment. Pushes, pull-created rows, creations, deletions and
  // evictions are held back by an engine-wide barrier while the cut is
  // marked (ShardCut::pause says how long); with defer_copy the sparse rows
  // are copied afterwards (ShardCut::Finish; copy on write keeps the state
  // of the barrier). Incremental cuts hold only the rows changed since the
  // previous cut. The cut starts a new change record: a caller that fails to
  // persist the cut must call InvalidateCutBase.
  virtual absl::StatusOr<std::unique_ptr<ShardCut>> TakeCut(
      const CutOptions& options) = 0;

  // The cut of `checkpoint_id` will not serve as a base (its write failed or
  // the checkpoint was abandoned): if it was the newest cut, the next cut is
  // complete. Idempotent.
  virtual void InvalidateCutBase(uint64_t checkpoint_id) = 0;

  // Replaces the engine's whole state (tables, variables, rows, applied
  // keys, incarnations, newest step) by `state` (a complete cut read back
  // from checkpoint state.checkpoint_id); every target counts steps <=
  // state.step_id as applied. Pulls waiting on replaced targets return
  // UNAVAILABLE. INVALID_ARGUMENT (engine unchanged) for an inconsistent
  // state. The next cut may be incremental against state.checkpoint_id.
  virtual absl::Status ReplaceState(const ShardCut& state) = 0;
};

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const EngineOptions& options = {});

}  // namespace plexus::ps
