#include "ps/storage/dense_variable.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/status.h"
#include "common/tsan.h"
#include "ps/storage/initializer.h"

namespace plexus::ps {

absl::StatusOr<std::unique_ptr<DenseVariable>> DenseVariable::Create(
    const CreateVariableOptions& options, int stripes, ThreadPool* pool) {
  const VariableConfig& c = options.config;
  PLEXUS_RETURN_IF_ERROR(ValidateVariableConfig(c));
  const std::string ctx = absl::StrCat("variable ", c.name);
  RowRange rows = options.rows;
  if (rows.empty() && rows.begin == 0) rows = {0, c.shape[0]};
  if (rows.begin < 0 || rows.end < rows.begin || rows.end > c.shape[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ": rows [", rows.begin, ", ", rows.end,
                     ") not inside [0, ", c.shape[0], ")"));
  }
  PLEXUS_ASSIGN_OR_RETURN(int64_t width,
                          ElementCount(absl::MakeConstSpan(c.shape).subspan(1)),
                          ctx);
  PLEXUS_ASSIGN_OR_RETURN(auto optimizer, CreateOptimizer(c.optimizer), ctx);
  if (options.initial_value.dtype != DType::kUnspecified) {
    std::vector<int64_t> shape = c.shape;
    shape[0] = rows.size();
    PLEXUS_RETURN_IF_ERROR(
        CheckTensor(options.initial_value, shape, "initial value"), ctx);
  }
  // Refuse sizes that cannot be allocated rather than die (1 TiB bound).
  const int64_t per_elem = 4 * (1 + optimizer->num_slots());
  if (width > 0 && rows.size() > (int64_t{1} << 40) / per_elem / width) {
    return absl::InvalidArgumentError(
        absl::StrCat(ctx, ": slice too large to hold in memory"));
  }
  auto v = std::unique_ptr<DenseVariable>(new DenseVariable(
      options, rows, width, std::move(optimizer), stripes, pool));
  return v;
}

DenseVariable::DenseVariable(const CreateVariableOptions& options,
                             RowRange rows, int64_t width,
                             std::unique_ptr<Optimizer> optimizer, int stripes,
                             ThreadPool* pool)
    : config_(options.config),
      rows_(rows),
      width_(width),
      optimizer_(std::move(optimizer)),
      num_slots_(optimizer_->num_slots()),
      rows_per_stripe_(std::max<int64_t>(
          1, (rows.size() + std::max(1, stripes) - 1) / std::max(1, stripes))),
      pool_(pool),
      consistency_(options.config.consistency, options.applied_step),
      stripe_mu_(new absl::Mutex[static_cast<size_t>(std::max<int64_t>(
          1, (rows.size() + rows_per_stripe_ - 1) / rows_per_stripe_))]) {
  const int64_t n = rows.size() * width;
  std::vector<float> init(static_cast<size_t>(n));
  if (options.initial_value.dtype != DType::kUnspecified) {
    ToFloat(options.initial_value.dtype, options.initial_value.data.data(), n,
            init.data());
  } else {
    const uint64_t name_hash = HashName(config_.name);
    for (int64_t r = 0; r < rows.size(); ++r) {
      InitializeRow(config_.initializer, name_hash,
                    static_cast<uint64_t>(rows.begin + r),
                    init.data() + r * width, width);
    }
  }
  if (config_.storage_dtype == DType::kFloat32) {
    values32_ = std::move(init);
  } else {
    values16_.resize(static_cast<size_t>(n));
    FromFloat(config_.storage_dtype, init.data(), n, values16_.data());
  }
  for (int k = 0; k < num_slots_; ++k) {
    slots_.emplace_back(static_cast<size_t>(n),
                        optimizer_->slot_initial_value(k));
  }
  update_count_.assign(static_cast<size_t>(rows.size()), 0);
}

absl::StatusOr<RowRange> DenseVariable::Resolve(RowRange r) const {
  if (r.begin == 0 && r.end == 0) return rows_;
  if (r.begin < rows_.begin || r.end > rows_.end || r.end < r.begin) {
    return absl::InvalidArgumentError(
        absl::StrCat("variable ", config_.name, ": rows [", r.begin, ", ",
                     r.end, ") not inside this shard's slice [", rows_.begin,
                     ", ", rows_.end, ")"));
  }
  return r;
}

absl::StatusOr<GradPiece> DenseVariable::Prepare(const DenseGradient& g,
                                                 bool* non_finite) const {
  const std::string ctx = absl::StrCat("variable ", config_.name);
  PLEXUS_ASSIGN_OR_RETURN(RowRange r, Resolve(g.rows));
  std::vector<int64_t> shape = config_.shape;
  shape[0] = r.size();
  PLEXUS_RETURN_IF_ERROR(CheckTensor(g.grad, shape, "gradient"), ctx);
  GradPiece piece;
  piece.rows = r;
  const int64_t n = r.size() * width_;
  // Sync pieces are kept for aggregation after the request is gone, so
  // only async ones borrow (fp32, aligned for float reads).
  const char* bytes = g.grad.data.data();
  if (g.grad.dtype == DType::kFloat32 && !consistency_.is_sync() &&
      reinterpret_cast<uintptr_t>(bytes) % alignof(float) == 0) {
    piece.borrowed = reinterpret_cast<const float*>(bytes);
  } else {
    ToFloat(g.grad.dtype, bytes, n, &piece.grads);
  }
  if (n > 0 && !AllFinite(piece.data(), n)) {
    *non_finite = true;
    if (config_.non_finite_policy == NonFinitePolicy::kReject) {
      return absl::InvalidArgumentError(
          absl::StrCat(ctx, ": gradient holds NaN or Inf"));
    }
    piece.rows = {r.begin, r.begin};
    piece.grads.clear();
    piece.borrowed = nullptr;
    piece.skipped_non_finite = 1;
  }
  return piece;
}

void DenseVariable::ApplySegment(int64_t a, int64_t b, const float* g) {
  // Rows with equal update counts (the usual case) go in one call.
  std::vector<float*> slot_ptr(static_cast<size_t>(std::max(1, num_slots_)));
  const bool fp32 = config_.storage_dtype == DType::kFloat32;
  std::vector<float> tmp;
  int64_t r = a;
  while (r < b) {
    int64_t e = r + 1;
    while (e < b && update_count_[e] == update_count_[r]) ++e;
    const int64_t t = update_count_[r] + 1;
    for (int64_t i = r; i < e; ++i) update_count_[i] = t;
    const int64_t off = r * width_;
    const int64_t n = (e - r) * width_;
    for (int k = 0; k < num_slots_; ++k) slot_ptr[k] = slots_[k].data() + off;
    const float* gr = g + (r - a) * width_;
    if (fp32) {
      optimizer_->Apply(values32_.data() + off, slot_ptr.data(), gr, n, t);
    } else {
      tmp.resize(static_cast<size_t>(n));
      ToFloat(config_.storage_dtype, values16_.data() + off, n, tmp.data());
      optimizer_->Apply(tmp.data(), slot_ptr.data(), gr, n, t);
      FromFloat(config_.storage_dtype, tmp.data(), n, values16_.data() + off);
    }
    r = e;
  }
}

void DenseVariable::Apply(const GradPiece& piece,
                          const std::vector<bool>* mask) {
  dirty_.store(true, std::memory_order_relaxed);
  const int64_t base = piece.rows.begin - rows_.begin;  // local index
  const int64_t end = piece.rows.end - rows_.begin;
  if (end <= base) return;
  // Large pieces are cut into runs of whole stripes applied in parallel:
  // one part per 256 K elements (a megabyte: 60 us of SGD, 200 of Adam;
  // smaller SGD parts ran slower than one thread, engine_bench), at most
  // one per pool thread plus this one.
  constexpr int64_t kElemsPerPart = int64_t{1} << 18;
  const int64_t first = base / rows_per_stripe_;
  const int64_t stripes = (end - 1) / rows_per_stripe_ + 1 - first;
  const int parts = static_cast<int>(std::min<int64_t>(
      stripes, PartsFor(pool_, (end - base) * width_, kElemsPerPart)));
  ParallelFor(pool_, parts, [&](int p) {
    const int64_t from = (first + stripes * p / parts) * rows_per_stripe_;
    const int64_t to = (first + stripes * (p + 1) / parts) * rows_per_stripe_;
    ApplyRows(std::max(base, from), std::min(end, to), base, piece, mask);
  });
}

void DenseVariable::ApplyRows(int64_t r, int64_t end, int64_t base,
                              const GradPiece& piece,
                              const std::vector<bool>* mask) {
  while (r < end) {
    const int64_t stripe = r / rows_per_stripe_;
    const int64_t stop = std::min(end, (stripe + 1) * rows_per_stripe_);
    MutexLock lock(&stripe_mu_[stripe]);
    if (mask == nullptr) {
      ApplySegment(r, stop, piece.data() + (r - base) * width_);
    } else {
      for (int64_t i = r; i < stop;) {
        if (!(*mask)[i - base]) {
          ++i;
          continue;
        }
        int64_t j = i + 1;
        while (j < stop && (*mask)[j - base]) ++j;
        ApplySegment(i, j, piece.data() + (i - base) * width_);
        i = j;
      }
    }
    r = stop;
  }
}

void DenseVariable::Read(RowRange rr, DType dtype, DenseValues* out) const {
  out->rows = rr;
  out->dtype = dtype;
  out->shape = config_.shape;
  out->shape[0] = rr.size();
  const int esize = DTypeSize(dtype);
  const size_t bytes = static_cast<size_t>(rr.size() * width_ * esize);
  // In the storage type the stripes are appended in order, so the bytes are
  // written once (resize would zero-fill them first: a second pass over a
  // pull's bytes on the shard).
  const bool as_stored = dtype == config_.storage_dtype;
  if (as_stored) {
    out->data.clear();
    out->data.reserve(bytes);
  } else {
    out->data.resize(bytes);
  }
  const int64_t base = rr.begin - rows_.begin;
  const int64_t end = rr.end - rows_.begin;
  std::vector<float> tmp;
  for (int64_t r = base; r < end;) {
    const int64_t stripe = r / rows_per_stripe_;
    const int64_t stop = std::min(end, (stripe + 1) * rows_per_stripe_);
    const int64_t off = r * width_;
    const int64_t n = (stop - r) * width_;
    MutexLock lock(&stripe_mu_[stripe]);
    if (as_stored) {
      const void* src = dtype == DType::kFloat32
                            ? static_cast<const void*>(values32_.data() + off)
                            : static_cast<const void*>(values16_.data() + off);
      out->data.append(static_cast<const char*>(src),
                       static_cast<size_t>(n * esize));
      r = stop;
      continue;
    }
    char* dst = out->data.data() + (r - base) * width_ * esize;
    if (config_.storage_dtype == DType::kFloat32) {
      FromFloat(dtype, values32_.data() + off, n, dst);
    } else {
      tmp.resize(static_cast<size_t>(n));
      ToFloat(config_.storage_dtype, values16_.data() + off, n, tmp.data());
      FromFloat(dtype, tmp.data(), n, dst);
    }
    r = stop;
  }
}

DenseSnapshot DenseVariable::Snapshot() const {
  DenseSnapshot snap;
  snap.rows = rows_;
  const int64_t n = rows_.size() * width_;
  snap.values.resize(static_cast<size_t>(n));
  snap.slots.assign(num_slots_, std::vector<float>(static_cast<size_t>(n)));
  snap.update_count.resize(static_cast<size_t>(rows_.size()));
  for (int64_t r = 0; r < rows_.size();) {
    const int64_t stripe = r / rows_per_stripe_;
    const int64_t stop =
        std::min(rows_.size(), (stripe + 1) * rows_per_stripe_);
    const int64_t off = r * width_, len = (stop - r) * width_;
    MutexLock lock(&stripe_mu_[stripe]);
    if (config_.storage_dtype == DType::kFloat32) {
      std::copy_n(values32_.data() + off, len, snap.values.data() + off);
    } else {
      ToFloat(config_.storage_dtype, values16_.data() + off, len,
              snap.values.data() + off);
    }
    for (int k = 0; k < num_slots_; ++k) {
      std::copy_n(slots_[k].data() + off, len, snap.slots[k].data() + off);
    }
    std::copy_n(update_count_.data() + r, stop - r,
                snap.update_count.data() + r);
    r = stop;
  }
  return snap;
}

void DenseVariable::Cut(bool incremental, VariableCut* out) const {
  out->config = config_;
  out->rows = rows_;
  out->width = width_;
  out->changed = !incremental || dirty_.exchange(false);
  dirty_.store(false, std::memory_order_relaxed);
  if (!out->changed) return;
  // The engine's barrier excludes every Apply (and orders this thread after
  // them), so the arrays are read without the stripe locks.
  out->values32 = values32_;
  out->values16 = values16_;
  out->slots = slots_;
  out->update_count = update_count_;
}

absl::Status DenseVariable::Load(const VariableCut& cut) {
  if (!(cut.rows == rows_) || cut.width != width_ ||
      cut.values32.size() != values32_.size() ||
      cut.values16.size() != values16_.size() ||
      cut.slots.size() != slots_.size() ||
      cut.update_count.size() != update_count_.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "variable ", config_.name, ": checkpoint slice does not match"));
  }
  for (size_t k = 0; k < slots_.size(); ++k) {
    if (cut.slots[k].size() != slots_[k].size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "variable ", config_.name, ": checkpoint slot size does not match"));
    }
  }
  values32_ = cut.values32;
  values16_ = cut.values16;
  slots_ = cut.slots;
  update_count_ = cut.update_count;
  dirty_.store(false, std::memory_order_relaxed);
  return absl::OkStatus();
}

VariableInfo DenseVariable::Info() const {
  VariableInfo info;
  info.config = config_;
  info.rows = rows_;
  const int64_t n = rows_.size() * width_;
  info.memory_bytes = n * DTypeSize(config_.storage_dtype) +
                      n * 4 * num_slots_ + rows_.size() * 8;
  info.last_applied_step_id = consistency_.last_applied_step();
  info.updates_applied = consistency_.updates_applied();
  return info;
}

}  // namespace plexus::ps
