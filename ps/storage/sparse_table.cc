#include "ps/storage/sparse_table.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/container/inlined_vector.h"

#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/id_index.h"
#include "common/status.h"
#include "common/tsan.h"
#include "glog/logging.h"
#include "ps/storage/initializer.h"

namespace plexus::ps {
namespace {

uint64_t NextSerial() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

SparseTable::SparseTable(const TableConfig& config,
                         std::unique_ptr<Optimizer> optimizer, int stripes,
                         uint64_t applied_step, ThreadPool* pool)
    : config_(config),
      optimizer_(std::move(optimizer)),
      name_hash_(HashName(config.name)),
      num_slots_(optimizer_->num_slots()),
      value_floats_(config.storage_dtype == DType::kFloat32
                        ? config.dim
                        : (config.dim + 1) / 2),
      index_by_step_(config.ttl_steps > 0 ||
                     (config.capacity_rows > 0 &&
                      config.eviction_policy == EvictionPolicy::kLru)),
      index_by_hits_(config.capacity_rows > 0 &&
                     config.eviction_policy == EvictionPolicy::kLfu),
      stripes_(new Stripe[std::max(1, stripes)]),
      num_stripes_(std::max(1, stripes)),
      pool_(pool),
      serial_(NextSerial()),
      consistency_(config.consistency, applied_step) {}

namespace {

// A row of a stripe by id: where the cut's copy finds it.
struct IdRow {
  uint64_t id;
  uint32_t row;
};

// Sorts rows[0, n) by id: a least significant digit radix sort, a byte a
// pass, several times faster than std::sort on the many thousand rows of a
// stripe. Passes over a byte every id shares (the high bytes of small ids)
// are skipped.
void SortById(IdRow* rows, size_t n) {
  if (n < 1024) {
    std::sort(rows, rows + n,
              [](const IdRow& a, const IdRow& b) { return a.id < b.id; });
    return;
  }
  std::vector<std::array<size_t, 256>> count(8);
  for (auto& c : count) c.fill(0);
  for (size_t i = 0; i < n; ++i) {
    for (int b = 0; b < 8; ++b) ++count[b][(rows[i].id >> (8 * b)) & 0xff];
  }
  std::unique_ptr<IdRow[]> tmp(new IdRow[n]);
  IdRow* src = rows;
  IdRow* dst = tmp.get();
  for (int b = 0; b < 8; ++b) {
    std::array<size_t, 256>& at = count[b];
    if (at[(src[0].id >> (8 * b)) & 0xff] == n) continue;
    for (size_t d = 0, sum = 0; d < 256; ++d) {
      const size_t c = at[d];
      at[d] = sum;
      sum += c;
    }
    for (size_t i = 0; i < n; ++i) {
      dst[at[(src[i].id >> (8 * b)) & 0xff]++] = src[i];
    }
    std::swap(src, dst);
  }
  if (src != rows) std::copy(src, src + n, rows);
}

}  // namespace

int SparseTable::StripeOf(uint64_t id) const {
  return static_cast<int>(RowStripe(id, num_stripes_));
}

void SparseTable::GroupByStripe(absl::Span<const uint64_t> ids,
                                std::vector<int>* begin,
                                std::vector<int32_t>* order) const {
  std::vector<int> stripe(ids.size());
  begin->assign(num_stripes_ + 1, 0);
  for (size_t i = 0; i < ids.size(); ++i) {
    stripe[i] = StripeOf(ids[i]);
    ++(*begin)[stripe[i] + 1];
  }
  for (int s = 0; s < num_stripes_; ++s) (*begin)[s + 1] += (*begin)[s];
  std::vector<int> next(begin->begin(), begin->end() - 1);
  order->resize(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    (*order)[next[stripe[i]]++] = static_cast<int32_t>(i);
  }
}

int64_t SparseTable::BytesPerRow() const {
  int64_t b = static_cast<int64_t>(sizeof(Row)) + 8 + 1 +  // map slot
              4 * (value_floats_ + num_slots_ * config_.dim);
  if (index_by_step_) b += 48;
  if (index_by_hits_) b += 48;
  return b;
}

absl::StatusOr<GradPiece> SparseTable::Prepare(const SparseGradient& g,
                                               bool* non_finite) const {
  const int64_t n = static_cast<int64_t>(g.ids.size());
  const int64_t dim = config_.dim;
  const int64_t shape[2] = {n, dim};
  PLEXUS_RETURN_IF_ERROR(CheckTensor(g.grads, shape, "grads"),
                         absl::StrCat("table ", config_.name));
  std::vector<float> raw;
  ToFloat(g.grads.dtype, g.grads.data.data(), n * dim, &raw);
  GradPiece piece;
  IdIndex index(static_cast<size_t>(n));  // id -> its row in piece
  piece.ids.reserve(static_cast<size_t>(n));
  piece.grads.reserve(static_cast<size_t>(n * dim));
  for (int64_t i = 0; i < n; ++i) {
    const float* row = raw.data() + i * dim;
    if (!AllFinite(row, dim)) {
      *non_finite = true;
      if (config_.non_finite_policy == NonFinitePolicy::kReject) {
        return absl::InvalidArgumentError(
            absl::StrCat("table ", config_.name, ": gradient of id ", g.ids[i],
                         " holds NaN or Inf"));
      }
      ++piece.skipped_non_finite;
      continue;
    }
    auto [at, inserted] =
        index.Insert(g.ids[i], static_cast<uint32_t>(piece.ids.size()));
    if (inserted) {
      piece.ids.push_back(g.ids[i]);
      piece.grads.insert(piece.grads.end(), row, row + dim);
    } else {
      float* dst = piece.grads.data() + int64_t{at} * dim;
      for (int64_t j = 0; j < dim; ++j) dst[j] += row[j];
    }
  }
  return piece;
}

SparseTable::Row SparseTable::NewRow(uint64_t id) const {
  const int64_t dim = config_.dim;
  Row row;
  row.data.reset(new float[value_floats_ + num_slots_ * dim]);
  float* slots = row.data.get() + value_floats_;
  for (int k = 0; k < num_slots_; ++k) {
    const float v = optimizer_->slot_initial_value(k);
    for (int64_t j = 0; j < dim; ++j) slots[k * dim + j] = v;
  }
  if (config_.storage_dtype == DType::kFloat32) {
    InitializeRow(config_.initializer, name_hash_, id, row.data.get(), dim);
  } else {
    std::vector<float> tmp(static_cast<size_t>(dim));
    InitializeRow(config_.initializer, name_hash_, id, tmp.data(), dim);
    ValueFromFloat(tmp.data(), row);
  }
  return row;
}

void SparseTable::ValueToFloat(const Row& row, float* out) const {
  ToFloat(config_.storage_dtype, row.data.get(), config_.dim, out);
}

void SparseTable::ValueFromFloat(const float* in, Row& row) const {
  FromFloat(config_.storage_dtype, in, config_.dim, row.data.get());
}

void SparseTable::Touch(Stripe& s, uint64_t id, Row& row, uint64_t step) {
  if (index_by_step_ && step > row.last_step) {
    s.by_step.erase({row.last_step, id});
    s.by_step.insert({step, id});
  }
  if (index_by_hits_) {
    s.by_hits.erase({row.hit_count, id});
    s.by_hits.insert({row.hit_count + 1, id});
  }
  ++row.hit_count;
  row.last_step = std::max(row.last_step, step);
  MarkDirty(s, id, row);
}

SparseTable::Row* SparseTable::Lookup(Stripe& s, uint64_t id) const {
  auto it = s.rows.find(id);
  if (it != s.rows.end()) return &it->second;
  if (!s.sourced || !s.resolved.insert(id).second) return nullptr;
  thread_local std::vector<float> buf;
  buf.resize(static_cast<size_t>(row_floats()));
  RowMeta meta;
  if (!source_->Fetch(id, &meta, buf.data())) return nullptr;
  return InsertSourced(s, id, meta, buf.data());
}

SparseTable::Row* SparseTable::InsertSourced(Stripe& s, uint64_t id,
                                             const RowMeta& meta,
                                             const float* data) const {
  const int64_t rf = row_floats();
  Row row;
  row.hit_count = meta.hit_count;
  row.last_step = meta.last_step;
  row.version = meta.version;
  row.update_count = meta.update_count;
  row.data.reset(new float[rf]);
  std::memcpy(row.data.get(), data, static_cast<size_t>(rf) * sizeof(float));
  BeforeChange(s, id, nullptr);
  auto [it, inserted] = s.rows.emplace(id, std::move(row));
  if (index_by_step_) s.by_step.insert({it->second.last_step, id});
  if (index_by_hits_) s.by_hits.insert({it->second.hit_count, id});
  num_rows_.fetch_add(1, std::memory_order_relaxed);
  source_rows_.fetch_sub(1, std::memory_order_relaxed);
  return &it->second;
}

void SparseTable::AttachSource(std::shared_ptr<RowSource> source,
                               int64_t rows) {
  source_ = std::move(source);
  source_rows_.store(rows, std::memory_order_relaxed);
  loaded_.store(false);
  for (int i = 0; i < num_stripes_; ++i) {
    MutexLock lock(&stripes_[i].mu);
    stripes_[i].sourced = true;
  }
}

void SparseTable::LoadFromSource() const {
  if (loaded_.load()) return;
  MutexLock load(&load_mu_);
  if (loaded_.load()) return;
  bool stopped = false;
  source_->ForEach([&](uint64_t id, const RowMeta& meta, const float* data) {
    if (stop_loading_.load(std::memory_order_relaxed)) {
      stopped = true;
      return false;
    }
    Stripe& s = stripes_[StripeOf(id)];
    MutexLock lock(&s.mu);
    if (s.sourced && !s.rows.contains(id) && s.resolved.insert(id).second) {
      InsertSourced(s, id, meta, data);
    }
    return true;
  });
  if (stopped) return;
  for (int i = 0; i < num_stripes_; ++i) {
    Stripe& s = stripes_[i];
    MutexLock lock(&s.mu);
    s.sourced = false;
    s.resolved = {};
  }
  source_rows_.store(0, std::memory_order_relaxed);
  loaded_.store(true);
}

SparseTable::Row* SparseTable::FindOrAdmit(Stripe& s, uint64_t id) {
  if (Row* row = Lookup(s, id)) return row;
  if (config_.admission_min_hit_count > 1) {
    if (s.pending_hits.size() >= kMaxPendingPerStripe &&
        !s.pending_hits.contains(id)) {
      s.pending_hits.clear();  // bound the memory: counting starts over
    }
    uint32_t& hits = s.pending_hits[id];
    if (++hits < config_.admission_min_hit_count) return nullptr;
    s.pending_hits.erase(id);
  }
  BeforeChange(s, id, nullptr);
  auto [pos, inserted] = s.rows.emplace(id, NewRow(id));
  if (index_by_step_) s.by_step.insert({0, id});
  if (index_by_hits_) s.by_hits.insert({0, id});
  num_rows_.fetch_add(1, std::memory_order_relaxed);
  MarkDirty(s, id, pos->second);
  return &pos->second;
}

void SparseTable::EraseRow(Stripe& s, uint64_t id) {
  auto it = s.rows.find(id);
  if (it == s.rows.end()) return;
  BeforeChange(s, id, &it->second);
  if (index_by_step_) s.by_step.erase({it->second.last_step, id});
  if (index_by_hits_) s.by_hits.erase({it->second.hit_count, id});
  s.rows.erase(it);
  if (s.sourced) s.resolved.insert(id);  // never back from the source
  s.dirty_ids.push_back(id);             // removed since the previous cut
  dirty_entries_.fetch_add(1, std::memory_order_relaxed);
  num_rows_.fetch_sub(1, std::memory_order_relaxed);
  rows_evicted_.fetch_add(1, std::memory_order_relaxed);
}

int SparseTable::PartsFor(size_t n) const {
  // A part's ids take tens of microseconds: worth a hand-off to a thread.
  constexpr int64_t kIdsPerPart = 1024;
  return plexus::PartsFor(pool_, static_cast<int64_t>(n), kIdsPerPart);
}

template <typename Fn>
void SparseTable::VisitStripes(const std::vector<int>& begin, int parts,
                               Fn&& fn) {
  // Part p visits stripes [cut[p], cut[p + 1]): the first stripe whose ids
  // start at or after its share of them.
  const int n = begin[num_stripes_];
  absl::InlinedVector<int, 9> cut(static_cast<size_t>(parts) + 1, num_stripes_);
  cut[0] = 0;
  for (int p = 1; p < parts; ++p) {
    const int64_t share = int64_t{n} * p / parts;
    cut[p] = std::max(
        cut[p - 1], static_cast<int>(std::lower_bound(begin.begin(),
                                                      begin.end() - 1, share) -
                                     begin.begin()));
  }
  ParallelFor(pool_, parts, [&](int p) {
    // Start at a per-thread rotating stripe and skip busy stripes on the
    // first pass, so concurrent batches do not walk the stripes in lockstep
    // (each waiting for the other, paying a wake-up per stripe).
    const int first = cut[p], count = cut[p + 1] - cut[p];
    if (count == 0) return;
    thread_local uint32_t rotation = 0;
    const int start = static_cast<int>(rotation++ % count);
    absl::InlinedVector<int, 64> todo;  // stripes with ids, in visit order
    for (int i = 0; i < count; ++i) {
      const int s = first + (start + i) % count;
      if (begin[s] != begin[s + 1]) todo.push_back(s);
    }
    // Visits the free stripes of `todo` and keeps the busy ones. A holder
    // keeps a stripe for microseconds, while sleeping on its lock costs a
    // wake-up (tens of microseconds on a VM): the busy ones are tried again
    // for up to PoolSpin() before the visit waits for them.
    auto visit_free = [&] {
      size_t kept = 0;
      for (int s : todo) {
        Stripe& stripe = stripes_[s];
        if (!TryLock(&stripe.mu)) {
          todo[kept++] = s;
          continue;
        }
        fn(p, stripe, begin[s], begin[s + 1]);
        Unlock(&stripe.mu);
      }
      todo.resize(kept);
      return todo.empty();
    };
    if (SpinUntil(PoolSpin(), visit_free)) return;
    for (int s : todo) {
      Stripe& stripe = stripes_[s];
      MutexLock lock(&stripe.mu);
      fn(p, stripe, begin[s], begin[s + 1]);
    }
  });
}

void SparseTable::PrefetchAhead(const Stripe& s, absl::Span<const uint64_t> ids,
                                absl::Span<const int32_t> order, int k, int to,
                                size_t bytes) const {
  constexpr int kAhead = 4;
  if (k + 2 * kAhead < to) s.rows.prefetch(ids[order[k + 2 * kAhead]]);
  if (k + kAhead < to) {
    auto it = s.rows.find(ids[order[k + kAhead]]);
    if (it == s.rows.end()) return;
    const char* row = reinterpret_cast<const char*>(it->second.data.get());
    for (size_t b = 0; b < bytes; b += 64) __builtin_prefetch(row + b);
  }
}

SparseTable::ApplyStats SparseTable::Apply(const GradPiece& piece,
                                           uint64_t step) {
  ApplyStats stats;
  const int64_t dim = config_.dim;
  std::vector<int> begin;
  std::vector<int32_t> order;
  GroupByStripe(piece.ids, &begin, &order);
  const bool fp32 = config_.storage_dtype == DType::kFloat32;
  const size_t row_bytes = static_cast<size_t>(row_floats()) * 4;
  // Per part (run in parallel): its counts and scratch.
  struct Part {
    ApplyStats stats;
    std::vector<float> tmp;
    std::vector<float*> slots;
  };
  std::vector<Part> parts(static_cast<size_t>(PartsFor(piece.ids.size())));
  for (Part& part : parts) {
    part.tmp.resize(fp32 ? 0 : static_cast<size_t>(dim));
    part.slots.resize(static_cast<size_t>(std::max(1, num_slots_)));
  }
  auto apply_rows = [&](int p, Stripe& stripe, int from, int to) {
    stripe.mu.AssertHeld();  // VisitStripes holds it (for the analysis)
    ApplyStats& stats = parts[p].stats;
    std::vector<float>& tmp = parts[p].tmp;
    std::vector<float*>& slots = parts[p].slots;
    for (int k = from; k < to; ++k) {
      PrefetchAhead(stripe, piece.ids, order, k, to, row_bytes);
      const int32_t pos = order[k];
      const uint64_t id = piece.ids[pos];
      Row* row = FindOrAdmit(stripe, id);
      if (row == nullptr) {
        ++stats.not_admitted;
        continue;
      }
      float* base = row->data.get();
      for (int j = 0; j < num_slots_; ++j) {
        slots[j] = base + value_floats_ + j * dim;
      }
      BeforeChange(stripe, id, row);
      const float* g = piece.grads.data() + int64_t{pos} * dim;
      ++row->update_count;
      if (fp32) {
        optimizer_->Apply(base, slots.data(), g, dim, row->update_count);
      } else {
        ValueToFloat(*row, tmp.data());
        optimizer_->Apply(tmp.data(), slots.data(), g, dim, row->update_count);
        ValueFromFloat(tmp.data(), *row);
      }
      ++row->version;
      Touch(stripe, id, *row, step);
      ++stats.applied;
    }
  };
  VisitStripes(begin, static_cast<int>(parts.size()), apply_rows);
  for (const Part& part : parts) {
    stats.applied += part.stats.applied;
    stats.not_admitted += part.stats.not_admitted;
  }
  rows_not_admitted_.fetch_add(stats.not_admitted, std::memory_order_relaxed);
  return stats;
}

void SparseTable::Read(absl::Span<const uint64_t> ids, bool create_missing,
                       uint64_t step, DType dtype, SparseValues* out) {
  const int64_t dim = config_.dim;
  const int64_t n = static_cast<int64_t>(ids.size());
  const int esize = DTypeSize(dtype);
  out->dtype = dtype;
  out->shape = {n, dim};
  out->data.resize(static_cast<size_t>(n * dim * esize));
  out->missing_positions.clear();
  std::vector<int> begin;
  std::vector<int32_t> order;
  GroupByStripe(ids, &begin, &order);
  char* dst = out->data.data();
  const size_t value_bytes = static_cast<size_t>(value_floats_) * 4;
  // Per part (run in parallel): the missing positions it found, scratch.
  struct Part {
    std::vector<uint32_t> missing;
    std::vector<float> tmp;
  };
  std::vector<Part> parts(static_cast<size_t>(PartsFor(ids.size())));
  for (Part& part : parts) part.tmp.resize(static_cast<size_t>(dim));
  auto read_rows = [&](int p, Stripe& stripe, int from, int to) {
    stripe.mu.AssertHeld();  // VisitStripes holds it (for the analysis)
    std::vector<float>& tmp = parts[p].tmp;
    for (int k = from; k < to; ++k) {
      PrefetchAhead(stripe, ids, order, k, to, value_bytes);
      const int32_t pos = order[k];
      const uint64_t id = ids[pos];
      Row* row = nullptr;
      if (create_missing) {
        row = FindOrAdmit(stripe, id);
      } else {
        row = Lookup(stripe, id);
      }
      char* at = dst + int64_t{pos} * dim * esize;
      if (row == nullptr) {
        // The value the row would have once created (rounded to storage).
        InitializeRow(config_.initializer, name_hash_, id, tmp.data(), dim);
        if (config_.storage_dtype != DType::kFloat32) {
          Row probe;
          probe.data.reset(new float[value_floats_]);
          ValueFromFloat(tmp.data(), probe);
          ValueToFloat(probe, tmp.data());
        }
        FromFloat(dtype, tmp.data(), dim, at);
        parts[p].missing.push_back(static_cast<uint32_t>(pos));
        continue;
      }
      BeforeChange(stripe, id, row);
      Touch(stripe, id, *row, step);
      if (dtype == config_.storage_dtype) {
        std::memcpy(at, row->data.get(), static_cast<size_t>(dim * esize));
      } else {
        ValueToFloat(*row, tmp.data());
        FromFloat(dtype, tmp.data(), dim, at);
      }
    }
  };
  VisitStripes(begin, static_cast<int>(parts.size()), read_rows);
  for (const Part& part : parts) {
    out->missing_positions.insert(out->missing_positions.end(),
                                  part.missing.begin(), part.missing.end());
  }
  std::sort(out->missing_positions.begin(), out->missing_positions.end());
}

int64_t SparseTable::Evict(uint64_t newest_step) {
  // Rows still only in a restore's source are eviction candidates too: a
  // table that evicts finishes loading them first.
  if ((config_.ttl_steps > 0 || config_.capacity_rows > 0) && !loaded_.load()) {
    LoadFromSource();
  }
  int64_t evicted = 0;
  uint64_t swept = ttl_swept_step_.load(std::memory_order_relaxed);
  if (config_.ttl_steps > 0 && newest_step > config_.ttl_steps &&
      newest_step > swept &&
      ttl_swept_step_.compare_exchange_strong(swept, newest_step,
                                              std::memory_order_relaxed)) {
    const uint64_t threshold = newest_step - config_.ttl_steps;
    for (int s = 0; s < num_stripes_; ++s) {
      Stripe& stripe = stripes_[s];
      MutexLock lock(&stripe.mu);
      while (!stripe.by_step.empty() &&
             stripe.by_step.begin()->first < threshold) {
        EraseRow(stripe, stripe.by_step.begin()->second);
        ++evicted;
      }
    }
  }
  const int64_t cap = config_.capacity_rows;
  // Rows touched between choosing and erasing are spared; a few rounds then
  // give up until the next call rather than chase a hot table.
  for (int round = 0;
       round < 4 && cap > 0 && num_rows_.load(std::memory_order_relaxed) > cap;
       ++round) {
    // Candidates: the `excess` oldest (or least hit) of each stripe; the
    // globally smallest `excess` of them are the victims.
    const int64_t excess = num_rows_.load(std::memory_order_relaxed) - cap;
    struct Candidate {
      uint64_t key;
      uint64_t id;
      int stripe;
    };
    std::vector<Candidate> cands;
    for (int s = 0; s < num_stripes_; ++s) {
      Stripe& stripe = stripes_[s];
      MutexLock lock(&stripe.mu);
      const auto& index = index_by_hits_ ? stripe.by_hits : stripe.by_step;
      int64_t taken = 0;
      for (auto it = index.begin(); it != index.end() && taken < excess;
           ++it, ++taken) {
        cands.push_back({it->first, it->second, s});
      }
    }
    if (cands.empty()) break;
    const size_t k = std::min<size_t>(cands.size(), excess);
    std::partial_sort(cands.begin(), cands.begin() + k, cands.end(),
                      [](const Candidate& a, const Candidate& b) {
                        return std::tie(a.key, a.id) < std::tie(b.key, b.id);
                      });
    for (size_t i = 0; i < k; ++i) {
      Stripe& stripe = stripes_[cands[i].stripe];
      MutexLock lock(&stripe.mu);
      auto it = stripe.rows.find(cands[i].id);
      if (it == stripe.rows.end()) continue;
      const uint64_t key =
          index_by_hits_ ? it->second.hit_count : it->second.last_step;
      if (key != cands[i].key) continue;  // touched meanwhile: spared
      EraseRow(stripe, cands[i].id);
      ++evicted;
    }
  }
  return evicted;
}

void SparseTable::PrepareCut(bool complete, TableCut* out) const {
  const int64_t rows = complete
                           ? num_rows_.load(std::memory_order_relaxed)
                           : dirty_entries_.load(std::memory_order_relaxed);
  // A little slack for rows created before the barrier closes.
  const int64_t estimate = rows + rows / 32 + 64;
  out->row_floats = row_floats();
  // resize (not reserve): the pages are faulted in here, not in Cut().
  out->Resize(static_cast<size_t>(estimate));
}

void SparseTable::BeforeChange(Stripe& s, uint64_t id, const Row* row) const {
  if (s.pending == nullptr) return;
  if (row == nullptr) {
    if (s.pending->complete) s.born_after.insert(id);
    return;
  }
  if (s.preserved.contains(id)) return;
  if (s.pending->complete) {
    if (s.born_after.contains(id)) return;
  } else if (!std::binary_search(s.cut_ids.begin(), s.cut_ids.end(), id)) {
    return;
  }
  const int64_t rf = row_floats();
  Row copy;
  copy.hit_count = row->hit_count;
  copy.last_step = row->last_step;
  copy.version = row->version;
  copy.update_count = row->update_count;
  copy.data.reset(new float[rf]);
  std::memcpy(copy.data.get(), row->data.get(),
              static_cast<size_t>(rf) * sizeof(float));
  s.preserved.emplace(id, std::move(copy));
}

void SparseTable::EnsureCopied(Stripe& s) const {
  if (s.pending == nullptr) return;
  const PendingCopy& pc = *s.pending;
  TableCut* out = pc.out;
  const int64_t rf = row_floats();
  const size_t idx = static_cast<size_t>(&s - &stripes_[0]);
  size_t at = pc.begin[idx];
  auto copy_row = [&](uint64_t id, const Row& row) {
    out->ids[at] = id;
    EncodeRowRecord(
        {row.hit_count, row.last_step, row.version, row.update_count},
        row.data.get(), rf, out->record(at));
    ++at;
  };
  // The state at the cut: pre-images where a row changed since, never a
  // row created since.
  if (pc.complete) {
    // The rows at the cut, sorted by id (the cut's order, see TableCut).
    std::vector<const Row*> row_of;
    std::vector<IdRow> order;
    const size_t n = pc.begin[idx + 1] - pc.begin[idx];
    row_of.reserve(n);
    order.reserve(n);
    auto take = [&](uint64_t id, const Row& row) {
      order.push_back({id, static_cast<uint32_t>(row_of.size())});
      row_of.push_back(&row);
    };
    // (Mostly nothing changed since the cut: the sets are not probed then.)
    const bool any_born = !s.born_after.empty();
    const bool any_preserved = !s.preserved.empty();
    for (const auto& [id, row] : s.rows) {
      if (any_born && s.born_after.contains(id)) continue;
      auto p = any_preserved ? s.preserved.find(id) : s.preserved.end();
      take(id, p != s.preserved.end() ? p->second : row);
    }
    for (const auto& [id, row] : s.preserved) {
      if (!s.rows.contains(id) || s.born_after.contains(id)) take(id, row);
    }
    SortById(order.data(), order.size());
    // In id order the rows are anywhere in memory, their floats an
    // allocation of their own: each row's bookkeeping is fetched 2 * kAhead
    // rows ahead of its copy and its floats' first lines kAhead rows ahead
    // (the hardware prefetcher follows a long row), or every row would wait
    // for its cache misses in turn.
    constexpr size_t kAhead = 8;
    const size_t prefetch_bytes =
        std::min<size_t>(static_cast<size_t>(rf) * sizeof(float), 512);
    for (size_t i = 0; i < order.size(); ++i) {
      if (i + 2 * kAhead < order.size()) {
        __builtin_prefetch(row_of[order[i + 2 * kAhead].row]);
      }
      if (i + kAhead < order.size()) {
        const char* p = reinterpret_cast<const char*>(
            row_of[order[i + kAhead].row]->data.get());
        for (size_t b = 0; b < prefetch_bytes; b += 64) {
          __builtin_prefetch(p + b);
        }
      }
      copy_row(order[i].id, *row_of[order[i].row]);
    }
  } else {
    for (uint64_t id : s.cut_ids) {  // sorted
      auto p = s.preserved.find(id);
      copy_row(id,
               p != s.preserved.end() ? p->second : s.rows.find(id)->second);
    }
  }
  CHECK_EQ(at, pc.begin[idx + 1])
      << "table " << config_.name << ": cut copy of stripe " << idx;
  s.preserved = {};
  s.born_after = {};
  s.cut_ids = {};
  s.pending = nullptr;
}

void SparseTable::CopyStripes(int first, int last) const {
  for (int i = std::max(first, 0); i <= last && i < num_stripes_; ++i) {
    Stripe& s = stripes_[i];
    MutexLock lock(&s.mu);
    EnsureCopied(s);
  }
}

void SparseTable::FinishCut(int threads) const {
  // Stripes by a shared counter rather than a fixed share per thread: the
  // stripes pushers already copied cost nothing, so fixed shares would be
  // uneven.
  std::atomic<int> next{0};
  auto copy = [&] {
    for (int i = next.fetch_add(1); i < num_stripes_; i = next.fetch_add(1)) {
      CopyStripes(i, i);
    }
  };
  // A small table is copied by the caller alone: starting a thread costs
  // more than copying a few thousand rows.
  constexpr int64_t kRowsPerThread = int64_t{1} << 14;
  threads = std::max(1, std::min(threads, num_stripes_));
  threads = static_cast<int>(std::min<int64_t>(
      threads, 1 + num_rows_.load(std::memory_order_relaxed) / kRowsPerThread));
  RunOnThreads(threads, [&](int) { copy(); });
}

void SparseTable::Cut(bool complete, int threads, bool defer,
                      TableCut* out) const {
  if (complete) LoadFromSource();  // every row must be in memory
  const int64_t rf = row_floats();
  out->config = config_;
  out->serial = serial_;
  out->complete = complete;
  out->row_floats = rf;
  out->stripes = num_stripes_;
  out->rows_evicted = rows_evicted_.load(std::memory_order_relaxed);
  // Pass 1 (serial, cheap): how many rows each stripe contributes, and for
  // incremental cuts which dirty ids are present (kept in dirty_ids) and
  // which were removed.
  auto pc = std::make_shared<PendingCopy>();
  pc->out = out;
  pc->complete = complete;
  pc->begin.assign(static_cast<size_t>(num_stripes_) + 1, 0);
  std::vector<size_t>& begin = pc->begin;
  out->deleted.clear();
  for (int s = 0; s < num_stripes_; ++s) {
    Stripe& stripe = stripes_[s];
    MutexLock lock(&stripe.mu);
    EnsureCopied(stripe);  // a previous deferred cut comes first
    size_t n = stripe.rows.size();
    if (!complete) {
      std::vector<uint64_t>& d = stripe.dirty_ids;
      std::sort(d.begin(), d.end());
      d.erase(std::unique(d.begin(), d.end()), d.end());
      size_t kept = 0;
      for (uint64_t id : d) {
        if (stripe.rows.contains(id)) {
          d[kept++] = id;
        } else {
          out->deleted.push_back(id);
        }
      }
      d.resize(kept);
      n = kept;
      stripe.cut_ids = std::move(d);  // sorted
    }
    stripe.dirty_ids.clear();  // a new epoch starts below
    begin[s + 1] = begin[s] + n;
  }
  const size_t total = begin[num_stripes_];
  // Sized once, here: the deferred copies write into these buffers.
  out->Resize(total);
  out->stripe_begin = begin;
  out->total_rows = num_rows_.load(std::memory_order_relaxed) +
                    source_rows_.load(std::memory_order_relaxed);
  dirty_entries_.store(0, std::memory_order_relaxed);
  epoch_.fetch_add(1, std::memory_order_relaxed);  // every row is clean now
  // Pass 2: mark the stripes; copy now unless deferred.
  for (int s = 0; s < num_stripes_; ++s) {
    Stripe& stripe = stripes_[s];
    MutexLock lock(&stripe.mu);
    stripe.pending = pc.get();
  }
  pending_cut_ = pc;
  if (!defer) FinishCut(threads);
}

absl::Status SparseTable::Load(const TableCut& cut) {
  const int64_t rf = row_floats();
  if (cut.row_floats != rf ||
      cut.records.size() != cut.ids.size() * cut.record_bytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("table ", config_.name, ": checkpoint rows hold ",
                     cut.row_floats, " floats, the table needs ", rf));
  }
  for (size_t i = 0; i < cut.ids.size(); ++i) {
    const uint64_t id = cut.ids[i];
    Stripe& s = stripes_[StripeOf(id)];
    MutexLock lock(&s.mu);
    Row row;
    row.data.reset(new float[rf]);
    RowMeta m;
    DecodeRowRecord(cut.record(i), rf, &m, row.data.get());
    row.hit_count = m.hit_count;
    row.last_step = m.last_step;
    row.version = m.version;
    row.update_count = m.update_count;
    auto [it, inserted] = s.rows.insert_or_assign(id, std::move(row));
    if (!inserted) continue;
    if (index_by_step_) s.by_step.insert({it->second.last_step, id});
    if (index_by_hits_) s.by_hits.insert({it->second.hit_count, id});
    num_rows_.fetch_add(1, std::memory_order_relaxed);
  }
  rows_evicted_.store(cut.rows_evicted, std::memory_order_relaxed);
  return absl::OkStatus();
}

TableInfo SparseTable::Info() const {
  TableInfo info;
  info.config = config_;
  info.rows_in_memory = num_rows_.load(std::memory_order_relaxed);
  info.memory_bytes = info.rows_in_memory * BytesPerRow() +
                      static_cast<int64_t>(sizeof(Stripe)) * num_stripes_;
  info.rows_evicted = rows_evicted_.load(std::memory_order_relaxed);
  info.rows_not_admitted = rows_not_admitted_.load(std::memory_order_relaxed);
  info.last_applied_step_id = consistency_.last_applied_step();
  info.updates_applied = consistency_.updates_applied();
  return info;
}

absl::StatusOr<RowSnapshot> SparseTable::ReadRow(uint64_t id) const {
  Stripe& stripe = stripes_[StripeOf(id)];
  MutexLock lock(&stripe.mu);
  const Row* row = Lookup(stripe, id);
  if (row == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("table ", config_.name, " has no row ", id));
  }
  return SnapshotOf(*row);
}

void SparseTable::ForEachRow(
    const std::function<void(uint64_t, const RowSnapshot&)>& fn) const {
  LoadFromSource();
  for (int s = 0; s < num_stripes_; ++s) {
    Stripe& stripe = stripes_[s];
    MutexLock lock(&stripe.mu);
    for (const auto& [id, row] : stripe.rows) fn(id, SnapshotOf(row));
  }
}

RowSnapshot SparseTable::SnapshotOf(const Row& row) const {
  RowSnapshot snap;
  snap.value.resize(static_cast<size_t>(config_.dim));
  ValueToFloat(row, snap.value.data());
  for (int k = 0; k < num_slots_; ++k) {
    const float* p = row.data.get() + value_floats_ + k * config_.dim;
    snap.slots.emplace_back(p, p + config_.dim);
  }
  snap.hit_count = row.hit_count;
  snap.last_step = row.last_step;
  snap.version = row.version;
  snap.update_count = row.update_count;
  return snap;
}

}  // namespace plexus::ps
