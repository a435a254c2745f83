// Private to ps/storage: the Engine implementation. See engine.h for the
// contract.
//
// Locking: registry_mu_ guards only the name -> target maps (readers share
// it; it is held just long enough to copy shared_ptrs, never across data
// work). Data is guarded by each target's stripes, consistency state by each
// target's own mutex, exactly-once keys by AppliedKeys' stripes. No two of
// these are ever held together, except registry_mu_ (shared) around a
// target's Shutdown().
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "ps/storage/applied_keys.h"
#include "ps/storage/dense_variable.h"
#include "ps/storage/engine.h"
#include "ps/storage/sparse_table.h"

namespace plexus::ps {

class EngineImpl final : public Engine {
 public:
  explicit EngineImpl(const EngineOptions& options);
  // Stops and joins the background loaders of lazily restored tables.
  ~EngineImpl() override;

  absl::StatusOr<bool> CreateVariable(
      const CreateVariableOptions& options) override;
  absl::StatusOr<bool> CreateTable(const CreateTableOptions& options) override;
  absl::Status DeleteVariable(absl::string_view name) override;
  absl::Status DeleteTable(absl::string_view name) override;
  absl::StatusOr<PushResult> Push(
      const PushOptions& options, absl::Span<const DenseGradient> dense,
      absl::Span<const SparseGradient> sparse) override;
  absl::StatusOr<PullResult> Pull(const PullOptions& options,
                                  absl::Span<const DenseRead> dense,
                                  absl::Span<const SparseRead> sparse) override;
  absl::StatusOr<PushPullResult> PushPull(
      const PushOptions& push_options,
      absl::Span<const DenseGradient> push_dense,
      absl::Span<const SparseGradient> push_sparse,
      const PullOptions& pull_options, absl::Span<const DenseRead> pull_dense,
      absl::Span<const SparseRead> pull_sparse) override;
  void TrimAppliedKeys(uint64_t step_id) override;
  int64_t RunEviction() override;
  void Shutdown() override;
  absl::StatusOr<VariableInfo> DescribeVariable(
      absl::string_view name) const override;
  absl::StatusOr<TableInfo> DescribeTable(
      absl::string_view name) const override;
  std::vector<VariableInfo> ListVariables() const override;
  std::vector<TableInfo> ListTables() const override;
  EngineCounters counters() const override;
  absl::StatusOr<RowSnapshot> ReadRow(absl::string_view table,
                                      uint64_t id) const override;
  absl::Status ForEachRow(
      absl::string_view table,
      const std::function<void(uint64_t, const RowSnapshot&)>& fn)
      const override;
  absl::StatusOr<DenseSnapshot> ReadVariable(
      absl::string_view variable) const override;
  absl::StatusOr<std::unique_ptr<ShardCut>> TakeCut(
      const CutOptions& options) override;
  void InvalidateCutBase(uint64_t checkpoint_id) override;
  absl::Status ReplaceState(const ShardCut& state) override;

 private:
  absl::StatusOr<std::shared_ptr<DenseVariable>> FindVariable(
      absl::string_view name) const;
  absl::StatusOr<std::shared_ptr<SparseTable>> FindTable(
      absl::string_view name) const;
  absl::StatusOr<PushResult> PushImpl(const PushOptions& options,
                                      absl::Span<const DenseGradient> dense,
                                      absl::Span<const SparseGradient> sparse);
  void NoteStep(uint64_t step);

  const EngineOptions options_;
  // Lent to the tables (null: no parallel_threads); outlives them.
  const std::unique_ptr<ThreadPool> pool_;
  AppliedKeys keys_;

  // The cut barrier. Every state change (push application, row creation by
  // pulls, create/delete, eviction) holds it shared; TakeCut and
  // ReplaceState hold it exclusively. Acquired before registry_mu_ and any
  // stripe, never while waiting for a pull's consistency condition.
  mutable absl::Mutex cut_mu_;
  // Checkpoint of the newest cut or restore (0: none or invalidated), and
  // the table serials it held: a table whose serial differs is cut complete.
  uint64_t cut_base_id_ ABSL_GUARDED_BY(cut_mu_) = 0;
  absl::flat_hash_map<std::string, uint64_t> cut_table_serials_
      ABSL_GUARDED_BY(cut_mu_);

  mutable absl::Mutex registry_mu_;
  bool shutdown_ ABSL_GUARDED_BY(registry_mu_) = false;
  absl::flat_hash_map<std::string, std::shared_ptr<DenseVariable>> variables_
      ABSL_GUARDED_BY(registry_mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<SparseTable>> tables_
      ABSL_GUARDED_BY(registry_mu_);

  // Background loaders of lazily restored tables (ReplaceState).
  absl::Mutex loader_mu_;
  std::vector<std::thread> loaders_ ABSL_GUARDED_BY(loader_mu_);
  std::vector<std::shared_ptr<SparseTable>> loading_
      ABSL_GUARDED_BY(loader_mu_);

  std::atomic<uint64_t> newest_step_{0};
  std::atomic<int64_t> duplicate_pushes_{0};
  std::atomic<int64_t> rejected_pushes_{0};
  std::atomic<int64_t> non_finite_rejected_{0};
  std::atomic<int64_t> non_finite_skipped_{0};
};

}  // namespace plexus::ps
