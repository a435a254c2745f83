#include "ps/storage/engine_impl.h"

#include <algorithm>
#include <optional>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "common/tsan.h"

namespace plexus::ps {
namespace {

// Sums sync contributions (given in the fixed order) into one piece and
// divides by n. Sparse: by id, in order of first appearance.
GradPiece SumSparse(const std::vector<GradPiece>& pieces, int64_t dim,
                    float inv_n) {
  GradPiece out;
  absl::flat_hash_map<uint64_t, int64_t> index;
  for (const GradPiece& p : pieces) {
    for (size_t i = 0; i < p.ids.size(); ++i) {
      auto [it, inserted] =
          index.try_emplace(p.ids[i], static_cast<int64_t>(out.ids.size()));
      const float* g = p.grads.data() + static_cast<int64_t>(i) * dim;
      if (inserted) {
        out.ids.push_back(p.ids[i]);
        out.grads.insert(out.grads.end(), g, g + dim);
      } else {
        float* d = out.grads.data() + it->second * dim;
        for (int64_t j = 0; j < dim; ++j) d[j] += g[j];
      }
    }
  }
  for (float& g : out.grads) g *= inv_n;
  return out;
}

GradPiece SumDense(const std::vector<GradPiece>& pieces, int64_t width,
                   float inv_n, std::vector<bool>* mask) {
  GradPiece out;
  int64_t lo = INT64_MAX, hi = INT64_MIN;
  for (const GradPiece& p : pieces) {
    if (p.rows.empty()) continue;
    lo = std::min(lo, p.rows.begin);
    hi = std::max(hi, p.rows.end);
  }
  if (lo >= hi) return out;
  out.rows = {lo, hi};
  out.grads.assign(static_cast<size_t>((hi - lo) * width), 0.0f);
  mask->assign(static_cast<size_t>(hi - lo), false);
  for (const GradPiece& p : pieces) {
    float* d = out.grads.data() + (p.rows.begin - lo) * width;
    const int64_t n = p.rows.size() * width;
    for (int64_t i = 0; i < n; ++i) d[i] += p.grads[i];
    for (int64_t r = p.rows.begin; r < p.rows.end; ++r) (*mask)[r - lo] = true;
  }
  for (float& g : out.grads) g *= inv_n;
  return out;
}

std::unique_ptr<ThreadPool> MakePool(int threads) {
  if (threads < 0) {
    threads = std::min<int>(7, UsableCpus() - 1);
  }
  if (threads <= 0) return nullptr;
  return std::make_unique<ThreadPool>(threads);
}

}  // namespace

EngineImpl::EngineImpl(const EngineOptions& options)
    : options_(options), pool_(MakePool(options.parallel_threads)) {}

EngineImpl::~EngineImpl() {
  MutexLock lock(&loader_mu_);
  for (auto& t : loading_) t->StopLoading();
  for (auto& t : loaders_) t.join();
}

absl::StatusOr<std::unique_ptr<Engine>> CreateEngine(
    const EngineOptions& options) {
  if (options.table_stripes < 1 || options.variable_stripes < 1) {
    return absl::InvalidArgumentError("engine: stripe counts must be >= 1");
  }
  if (options.parallel_threads < -1) {
    return absl::InvalidArgumentError(
        "engine: parallel_threads must be >= -1 (-1: one per core)");
  }
  return std::make_unique<EngineImpl>(options);
}

absl::StatusOr<bool> EngineImpl::CreateVariable(
    const CreateVariableOptions& options) {
  {
    // Repeating a create (idempotent retry) must not allocate a second copy.
    ReaderMutexLock lock(&registry_mu_);
    auto it = variables_.find(options.config.name);
    if (it != variables_.end() && it->second->config() == options.config &&
        (it->second->rows() == options.rows ||
         (options.rows == RowRange{} &&
          it->second->rows() == RowRange{0, options.config.shape[0]}))) {
      return false;
    }
  }
  PLEXUS_ASSIGN_OR_RETURN(
      auto var,
      DenseVariable::Create(options, options_.variable_stripes, pool_.get()));
  std::shared_ptr<DenseVariable> shared = std::move(var);
  ReaderMutexLock barrier(&cut_mu_);
  MutexLock lock(&registry_mu_);
  const std::string& name = options.config.name;
  if (tables_.contains(name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("'", name, "' is already a sparse table"));
  }
  auto it = variables_.find(name);
  if (it != variables_.end()) {
    if (it->second->config() == options.config &&
        it->second->rows() == shared->rows()) {
      return false;
    }
    return absl::AlreadyExistsError(absl::StrCat(
        "variable ", name, " exists with a different config or slice"));
  }
  if (shutdown_) shared->consistency().Shutdown();
  variables_.emplace(name, std::move(shared));
  return true;
}

absl::StatusOr<bool> EngineImpl::CreateTable(
    const CreateTableOptions& options) {
  PLEXUS_RETURN_IF_ERROR(ValidateTableConfig(options.config));
  PLEXUS_ASSIGN_OR_RETURN(auto optimizer,
                          CreateOptimizer(options.config.optimizer),
                          absl::StrCat("table ", options.config.name));
  ReaderMutexLock barrier(&cut_mu_);
  MutexLock lock(&registry_mu_);
  const std::string& name = options.config.name;
  if (variables_.contains(name)) {
    return absl::AlreadyExistsError(
        absl::StrCat("'", name, "' is already a dense variable"));
  }
  auto it = tables_.find(name);
  if (it != tables_.end()) {
    if (it->second->config() == options.config) return false;
    return absl::AlreadyExistsError(
        absl::StrCat("table ", name, " exists with a different config"));
  }
  auto table = std::make_shared<SparseTable>(
      options.config, std::move(optimizer), options_.table_stripes,
      options.applied_step, pool_.get());
  if (shutdown_) table->consistency().Shutdown();
  tables_.emplace(name, std::move(table));
  return true;
}

absl::Status EngineImpl::DeleteVariable(absl::string_view name) {
  std::shared_ptr<DenseVariable> victim;
  {
    ReaderMutexLock barrier(&cut_mu_);
    MutexLock lock(&registry_mu_);
    auto it = variables_.find(name);
    if (it == variables_.end()) {
      return absl::NotFoundError(absl::StrCat("no variable named ", name));
    }
    victim = std::move(it->second);
    variables_.erase(it);
  }
  victim->consistency().Shutdown();  // wake its waiters
  return absl::OkStatus();
}

absl::Status EngineImpl::DeleteTable(absl::string_view name) {
  std::shared_ptr<SparseTable> victim;
  {
    ReaderMutexLock barrier(&cut_mu_);
    MutexLock lock(&registry_mu_);
    auto it = tables_.find(name);
    if (it == tables_.end()) {
      return absl::NotFoundError(absl::StrCat("no table named ", name));
    }
    victim = std::move(it->second);
    tables_.erase(it);
  }
  victim->StopLoading();
  victim->consistency().Shutdown();
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<DenseVariable>> EngineImpl::FindVariable(
    absl::string_view name) const {
  ReaderMutexLock lock(&registry_mu_);
  auto it = variables_.find(name);
  if (it == variables_.end()) {
    return absl::NotFoundError(absl::StrCat("no variable named '", name, "'"));
  }
  return it->second;
}

absl::StatusOr<std::shared_ptr<SparseTable>> EngineImpl::FindTable(
    absl::string_view name) const {
  ReaderMutexLock lock(&registry_mu_);
  auto it = tables_.find(name);
  if (it == tables_.end()) {
    return absl::NotFoundError(absl::StrCat("no table named '", name, "'"));
  }
  return it->second;
}

void EngineImpl::NoteStep(uint64_t step) {
  uint64_t cur = newest_step_.load(std::memory_order_relaxed);
  while (step > cur && !newest_step_.compare_exchange_weak(
                           cur, step, std::memory_order_relaxed)) {
  }
}

absl::StatusOr<PushResult> EngineImpl::Push(
    const PushOptions& options, absl::Span<const DenseGradient> dense,
    absl::Span<const SparseGradient> sparse) {
  auto result = PushImpl(options, dense, sparse);
  if (!result.ok()) rejected_pushes_.fetch_add(1, std::memory_order_relaxed);
  return result;
}

absl::StatusOr<PushResult> EngineImpl::PushImpl(
    const PushOptions& options, absl::Span<const DenseGradient> dense,
    absl::Span<const SparseGradient> sparse) {
  if (options.num_chunks > 1 && options.chunk_index >= options.num_chunks) {
    return absl::InvalidArgumentError(
        absl::StrCat("chunk_index ", options.chunk_index, " >= num_chunks ",
                     options.num_chunks));
  }
  // 1. Resolve and validate every item; nothing changes until all pass.
  std::vector<std::shared_ptr<DenseVariable>> vars;
  std::vector<std::shared_ptr<SparseTable>> tables;
  std::vector<GradPiece> dense_pieces, sparse_pieces;
  bool non_finite = false;
  auto fail_non_finite = [&](absl::Status s) {
    if (non_finite)
      non_finite_rejected_.fetch_add(1, std::memory_order_relaxed);
    return s;
  };
  for (const DenseGradient& g : dense) {
    PLEXUS_ASSIGN_OR_RETURN(auto var, FindVariable(g.variable));
    auto piece = var->Prepare(g, &non_finite);
    if (!piece.ok()) return fail_non_finite(piece.status());
    if (var->consistency().is_sync()) {
      PLEXUS_RETURN_IF_ERROR(var->consistency().CheckSyncPush(options.step_id),
                             absl::StrCat("variable ", g.variable));
    }
    vars.push_back(std::move(var));
    dense_pieces.push_back(*std::move(piece));
  }
  for (const SparseGradient& g : sparse) {
    PLEXUS_ASSIGN_OR_RETURN(auto table, FindTable(g.table));
    auto piece = table->Prepare(g, &non_finite);
    if (!piece.ok()) return fail_non_finite(piece.status());
    if (table->consistency().is_sync()) {
      PLEXUS_RETURN_IF_ERROR(
          table->consistency().CheckSyncPush(options.step_id),
          absl::StrCat("table ", g.table));
    }
    tables.push_back(std::move(table));
    sparse_pieces.push_back(*std::move(piece));
  }
  // 2. Fencing and exactly-once. From here on the push changes state: it
  // holds the cut barrier (shared) so that a cut sees all of it or none.
  ReaderMutexLock barrier(&cut_mu_);
  PLEXUS_RETURN_IF_ERROR(
      keys_.CheckIncarnation(options.worker_id, options.worker_incarnation));
  PushResult result;
  std::optional<UpdateKey> key;
  const bool keyed = options.closure_id != 0 ||
                     (options.worker_id != 0 && options.step_id != 0);
  if (options.exactly_once && keyed) {
    key.emplace();
    key->job_id = options.job_id;
    key->by_closure = options.closure_id != 0;
    key->owner = key->by_closure ? options.closure_id : options.worker_id;
    key->step_id = key->by_closure ? 0 : options.step_id;
    key->push_seq = options.push_seq;
    key->chunk_index = options.chunk_index;
    if (!keys_.Insert(*key, options.step_id)) {
      duplicate_pushes_.fetch_add(1, std::memory_order_relaxed);
      result.outcome = PushOutcome::kDuplicate;
      return result;
    }
  }
  // A sync step can complete between the check above and the aggregation
  // below only if more closures than num_workers push it; that late piece is
  // refused and its key forgotten (earlier items of the request stay).
  auto refuse = [&](absl::Status s) {
    if (key.has_value()) keys_.Erase(*key);
    return s;
  };
  NoteStep(options.step_id);
  // 3. Apply (or aggregate).
  const uint64_t step = options.step_id;
  const uint64_t closure =
      options.closure_id != 0 ? options.closure_id : options.worker_id;
  for (size_t i = 0; i < vars.size(); ++i) {
    DenseVariable& var = *vars[i];
    GradPiece& piece = dense_pieces[i];
    result.skipped_non_finite += piece.skipped_non_finite;
    result.rows_applied += piece.rows.size();
    ConsistencyState& cs = var.consistency();
    if (cs.is_sync()) {
      result.outcome = PushOutcome::kAggregated;
      auto done = cs.AddSyncContribution(step, closure, options.push_seq,
                                         options.chunk_index,
                                         options.num_chunks, std::move(piece));
      if (!done.ok()) return refuse(done.status());
      if (done->has_value()) {
        std::vector<bool> mask;
        GradPiece sum = SumDense(**done, var.width(),
                                 1.0f / cs.config().num_workers, &mask);
        var.Apply(sum, &mask);
        cs.MarkApplied(step);
      }
      continue;
    }
    var.Apply(piece, nullptr);
    if (cs.config().mode == ConsistencyMode::kBoundedStaleness) {
      cs.RecordProgress(options.worker_id, step);
    }
    cs.MarkApplied(step);
  }
  for (size_t i = 0; i < tables.size(); ++i) {
    SparseTable& table = *tables[i];
    GradPiece& piece = sparse_pieces[i];
    result.skipped_non_finite += piece.skipped_non_finite;
    ConsistencyState& cs = table.consistency();
    if (cs.is_sync()) {
      result.outcome = PushOutcome::kAggregated;
      result.rows_applied += piece.num_rows();
      auto done = cs.AddSyncContribution(step, closure, options.push_seq,
                                         options.chunk_index,
                                         options.num_chunks, std::move(piece));
      if (!done.ok()) return refuse(done.status());
      if (done->has_value()) {
        GradPiece sum = SumSparse(**done, table.config().dim,
                                  1.0f / cs.config().num_workers);
        table.Apply(sum, step);
        cs.MarkApplied(step);
      }
    } else {
      auto stats = table.Apply(piece, step);
      result.rows_applied += stats.applied;
      result.rows_not_admitted += stats.not_admitted;
      if (cs.config().mode == ConsistencyMode::kBoundedStaleness) {
        cs.RecordProgress(options.worker_id, step);
      }
      cs.MarkApplied(step);
    }
    const TableConfig& c = table.config();
    if (c.ttl_steps > 0 || c.capacity_rows > 0) {
      table.Evict(newest_step_.load(std::memory_order_relaxed));
    }
  }
  if (result.skipped_non_finite > 0) {
    non_finite_skipped_.fetch_add(result.skipped_non_finite,
                                  std::memory_order_relaxed);
  }
  return result;
}

absl::StatusOr<PullResult> EngineImpl::Pull(
    const PullOptions& options, absl::Span<const DenseRead> dense,
    absl::Span<const SparseRead> sparse) {
  if (options.value_dtype != DType::kUnspecified &&
      !IsTransferDType(options.value_dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("value dtype ", DTypeName(options.value_dtype),
                     " is not float32, float16 or bfloat16"));
  }
  std::vector<std::shared_ptr<DenseVariable>> vars;
  std::vector<RowRange> ranges;
  std::vector<std::shared_ptr<SparseTable>> tables;
  for (const DenseRead& r : dense) {
    PLEXUS_ASSIGN_OR_RETURN(auto var, FindVariable(r.variable));
    PLEXUS_ASSIGN_OR_RETURN(RowRange range, var->Resolve(r.rows));
    ranges.push_back(range);
    vars.push_back(std::move(var));
  }
  for (const SparseRead& r : sparse) {
    PLEXUS_ASSIGN_OR_RETURN(auto table, FindTable(r.table));
    tables.push_back(std::move(table));
  }
  NoteStep(options.step_id);
  for (auto& v : vars) {
    PLEXUS_RETURN_IF_ERROR(
        v->consistency().WaitForPull(options.step_id, options.deadline),
        absl::StrCat("variable ", v->config().name));
  }
  for (auto& t : tables) {
    PLEXUS_RETURN_IF_ERROR(
        t->consistency().WaitForPull(options.step_id, options.deadline),
        absl::StrCat("table ", t->config().name));
  }
  // Reads update hit counts and may create rows: inside the cut barrier.
  ReaderMutexLock barrier(&cut_mu_);
  PullResult result;
  result.dense.resize(vars.size());
  for (size_t i = 0; i < vars.size(); ++i) {
    const DType dtype = options.value_dtype == DType::kUnspecified
                            ? vars[i]->config().storage_dtype
                            : options.value_dtype;
    vars[i]->Read(ranges[i], dtype, &result.dense[i]);
  }
  result.sparse.resize(tables.size());
  for (size_t i = 0; i < tables.size(); ++i) {
    const DType dtype = options.value_dtype == DType::kUnspecified
                            ? tables[i]->config().storage_dtype
                            : options.value_dtype;
    tables[i]->Read(sparse[i].ids, sparse[i].create_missing, options.step_id,
                    dtype, &result.sparse[i]);
  }
  return result;
}

absl::StatusOr<PushPullResult> EngineImpl::PushPull(
    const PushOptions& push_options, absl::Span<const DenseGradient> push_dense,
    absl::Span<const SparseGradient> push_sparse,
    const PullOptions& pull_options, absl::Span<const DenseRead> pull_dense,
    absl::Span<const SparseRead> pull_sparse) {
  PushPullResult result;
  PLEXUS_ASSIGN_OR_RETURN(result.push,
                          Push(push_options, push_dense, push_sparse));
  PLEXUS_ASSIGN_OR_RETURN(result.pull,
                          Pull(pull_options, pull_dense, pull_sparse));
  return result;
}

void EngineImpl::TrimAppliedKeys(uint64_t step_id) { keys_.TrimUpTo(step_id); }

int64_t EngineImpl::RunEviction() {
  std::vector<std::shared_ptr<SparseTable>> tables;
  {
    ReaderMutexLock lock(&registry_mu_);
    for (const auto& [name, t] : tables_) tables.push_back(t);
  }
  ReaderMutexLock barrier(&cut_mu_);
  int64_t n = 0;
  for (auto& t : tables) n += t->Evict(newest_step_.load());
  return n;
}

void EngineImpl::Shutdown() {
  MutexLock lock(&registry_mu_);
  shutdown_ = true;
  for (auto& [name, v] : variables_) v->consistency().Shutdown();
  for (auto& [name, t] : tables_) t->consistency().Shutdown();
}

absl::StatusOr<VariableInfo> EngineImpl::DescribeVariable(
    absl::string_view name) const {
  PLEXUS_ASSIGN_OR_RETURN(auto v, FindVariable(name));
  return v->Info();
}

absl::StatusOr<TableInfo> EngineImpl::DescribeTable(
    absl::string_view name) const {
  PLEXUS_ASSIGN_OR_RETURN(auto t, FindTable(name));
  return t->Info();
}

std::vector<VariableInfo> EngineImpl::ListVariables() const {
  std::vector<std::shared_ptr<DenseVariable>> vars;
  {
    ReaderMutexLock lock(&registry_mu_);
    for (const auto& [name, v] : variables_) vars.push_back(v);
  }
  std::vector<VariableInfo> out;
  for (auto& v : vars) out.push_back(v->Info());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.config.name < b.config.name;
  });
  return out;
}

std::vector<TableInfo> EngineImpl::ListTables() const {
  std::vector<std::shared_ptr<SparseTable>> tables;
  {
    ReaderMutexLock lock(&registry_mu_);
    for (const auto& [name, t] : tables_) tables.push_back(t);
  }
  std::vector<TableInfo> out;
  for (auto& t : tables) out.push_back(t->Info());
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.config.name < b.config.name;
  });
  return out;
}

EngineCounters EngineImpl::counters() const {
  EngineCounters c;
  c.duplicate_pushes = duplicate_pushes_.load();
  c.rejected_pushes = rejected_pushes_.load();
  c.non_finite_rejected = non_finite_rejected_.load();
  c.non_finite_skipped = non_finite_skipped_.load();
  c.applied_keys = keys_.size();
  return c;
}

absl::StatusOr<RowSnapshot> EngineImpl::ReadRow(absl::string_view table,
                                                uint64_t id) const {
  PLEXUS_ASSIGN_OR_RETURN(auto t, FindTable(table));
  return t->ReadRow(id);
}

absl::Status EngineImpl::ForEachRow(
    absl::string_view table,
    const std::function<void(uint64_t, const RowSnapshot&)>& fn) const {
  PLEXUS_ASSIGN_OR_RETURN(auto t, FindTable(table));
  t->ForEachRow(fn);
  return absl::OkStatus();
}

absl::StatusOr<DenseSnapshot> EngineImpl::ReadVariable(
    absl::string_view variable) const {
  PLEXUS_ASSIGN_OR_RETURN(auto v, FindVariable(variable));
  return v->Snapshot();
}

absl::StatusOr<std::unique_ptr<ShardCut>> EngineImpl::TakeCut(
    const CutOptions& options) {
  if (options.checkpoint_id == 0) {
    return absl::InvalidArgumentError("cut: checkpoint id must not be 0");
  }
  const int threads =
      options.copy_threads > 0 ? options.copy_threads : UsableCpus();
  auto cut = std::make_unique<ShardCut>();
  // Outside the barrier: size the row buffers (and fault their pages in) so
  // that the barrier only copies.
  absl::flat_hash_map<const SparseTable*, TableCut> prepared;
  {
    bool incremental;
    absl::flat_hash_map<std::string, uint64_t> serials;
    {
      ReaderMutexLock lock(&cut_mu_);
      incremental = options.base_checkpoint_id != 0 &&
                    options.base_checkpoint_id == cut_base_id_;
      serials = cut_table_serials_;
    }
    std::vector<std::shared_ptr<SparseTable>> tables;
    {
      ReaderMutexLock lock(&registry_mu_);
      for (const auto& [name, t] : tables_) tables.push_back(t);
    }
    for (const auto& t : tables) {
      auto it = serials.find(t->config().name);
      const bool complete =
          !incremental || it == serials.end() || it->second != t->serial();
      t->PrepareCut(complete, &prepared[t.get()]);
    }
  }
  const absl::Time start = absl::Now();
  MutexLock barrier(&cut_mu_);
  std::vector<std::shared_ptr<SparseTable>> tables;
  std::vector<std::shared_ptr<DenseVariable>> vars;
  {
    ReaderMutexLock lock(&registry_mu_);
    for (const auto& [name, t] : tables_) tables.push_back(t);
    for (const auto& [name, v] : variables_) vars.push_back(v);
  }
  std::sort(tables.begin(), tables.end(), [](const auto& a, const auto& b) {
    return a->config().name < b->config().name;
  });
  std::sort(vars.begin(), vars.end(), [](const auto& a, const auto& b) {
    return a->config().name < b->config().name;
  });
  if (options.step_id != 0) {
    for (const auto& t : tables) {
      if (t->consistency().last_applied_step() > options.step_id) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cut at step ", options.step_id, ": table ", t->config().name,
            " has applied step ", t->consistency().last_applied_step()));
      }
    }
    for (const auto& v : vars) {
      if (v->consistency().last_applied_step() > options.step_id) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cut at step ", options.step_id, ": variable ", v->config().name,
            " has applied step ", v->consistency().last_applied_step()));
      }
    }
  }
  const bool incremental = options.base_checkpoint_id != 0 &&
                           options.base_checkpoint_id == cut_base_id_;
  absl::flat_hash_map<std::string, uint64_t> serials;
  cut->tables.resize(tables.size());
  for (size_t i = 0; i < tables.size(); ++i) {
    const SparseTable& t = *tables[i];
    auto it = cut_table_serials_.find(t.config().name);
    const bool complete = !incremental || it == cut_table_serials_.end() ||
                          it->second != t.serial();
    auto pre = prepared.find(&t);
    if (pre != prepared.end()) cut->tables[i] = std::move(pre->second);
    t.Cut(complete, threads, options.defer_copy, &cut->tables[i]);
    cut->tables[i].copy_stripes = [table = tables[i]](int first, int last) {
      table->CopyStripes(first, last);
    };
    serials[t.config().name] = t.serial();
  }
  cut->variables.resize(vars.size());
  for (size_t i = 0; i < vars.size(); ++i) {
    vars[i]->Cut(incremental, &cut->variables[i]);
  }
  keys_.Export(&cut->applied_keys, &cut->incarnations);
  cut->step_id = options.step_id;
  cut->newest_step = newest_step_.load(std::memory_order_relaxed);
  cut->checkpoint_id = options.checkpoint_id;
  cut->base_checkpoint_id = incremental ? options.base_checkpoint_id : 0;
  cut_base_id_ = options.checkpoint_id;
  cut_table_serials_ = std::move(serials);
  cut->pause = absl::Now() - start;
  if (options.defer_copy) {
    cut->finish_ = [tables, threads] {
      for (const auto& t : tables) t->FinishCut(threads);
    };
  }
  return cut;
}

void EngineImpl::InvalidateCutBase(uint64_t checkpoint_id) {
  MutexLock barrier(&cut_mu_);
  if (cut_base_id_ == checkpoint_id) cut_base_id_ = 0;
}

absl::Status EngineImpl::ReplaceState(const ShardCut& state) {
  // Build everything first; the engine changes only if all of it loads.
  absl::flat_hash_map<std::string, std::shared_ptr<SparseTable>> tables;
  absl::flat_hash_map<std::string, std::shared_ptr<DenseVariable>> vars;
  absl::flat_hash_map<std::string, uint64_t> serials;
  for (const TableCut& tc : state.tables) {
    if (!tc.complete) {
      return absl::InvalidArgumentError(absl::StrCat(
          "restore: table ", tc.config.name, " is not a complete cut"));
    }
    PLEXUS_RETURN_IF_ERROR(ValidateTableConfig(tc.config), "restore");
    PLEXUS_ASSIGN_OR_RETURN(auto optimizer,
                            CreateOptimizer(tc.config.optimizer),
                            absl::StrCat("restore: table ", tc.config.name));
    auto t = std::make_shared<SparseTable>(tc.config, std::move(optimizer),
                                           options_.table_stripes,
                                           state.step_id, pool_.get());
    if (tc.source != nullptr) t->AttachSource(tc.source, tc.total_rows);
    PLEXUS_RETURN_IF_ERROR(t->Load(tc), "restore");
    serials[tc.config.name] = t->serial();
    if (!tables.emplace(tc.config.name, std::move(t)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("restore: table ", tc.config.name, " twice"));
    }
  }
  for (const VariableCut& vc : state.variables) {
    CreateVariableOptions o;
    o.config = vc.config;
    o.rows = vc.rows;
    o.applied_step = state.step_id;
    PLEXUS_ASSIGN_OR_RETURN(
        auto v,
        DenseVariable::Create(o, options_.variable_stripes, pool_.get()),
        "restore");
    PLEXUS_RETURN_IF_ERROR(v->Load(vc), "restore");
    if (tables.contains(vc.config.name) ||
        !vars.emplace(vc.config.name, std::move(v)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("restore: name ", vc.config.name, " twice"));
    }
  }
  absl::flat_hash_map<std::string, std::shared_ptr<DenseVariable>> old_vars;
  absl::flat_hash_map<std::string, std::shared_ptr<SparseTable>> old_tables;
  {
    MutexLock barrier(&cut_mu_);
    {
      MutexLock lock(&registry_mu_);
      if (shutdown_) {
        for (auto& [n, v] : vars) v->consistency().Shutdown();
        for (auto& [n, t] : tables) t->consistency().Shutdown();
      }
      old_vars.swap(variables_);
      old_tables.swap(tables_);
      variables_ = std::move(vars);
      tables_ = std::move(tables);
    }
    keys_.Replace(state.applied_keys, state.incarnations);
    newest_step_.store(state.newest_step, std::memory_order_relaxed);
    cut_base_id_ = state.checkpoint_id;
    cut_table_serials_ = std::move(serials);
  }
  for (auto& [n, v] : old_vars) v->consistency().Shutdown();
  for (auto& [n, t] : old_tables) {
    t->StopLoading();
    t->consistency().Shutdown();
  }
  // Lazily restored tables load the rest of their rows in the background.
  std::vector<std::shared_ptr<SparseTable>> lazy;
  for (const TableCut& tc : state.tables) {
    if (tc.source == nullptr) continue;
    ReaderMutexLock lock(&registry_mu_);
    auto it = tables_.find(tc.config.name);
    if (it != tables_.end()) lazy.push_back(it->second);
  }
  if (!lazy.empty()) {
    MutexLock lock(&loader_mu_);
    loading_.insert(loading_.end(), lazy.begin(), lazy.end());
    loaders_.emplace_back([lazy] {
      for (const auto& t : lazy) t->LoadFromSource();
    });
  }
  return absl::OkStatus();
}

}  // namespace plexus::ps
