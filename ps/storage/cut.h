// A consistent cut of one shard's engine state: what Engine::TakeCut copies
// out under its write barrier and what Engine::ReplaceState installs on
// restore. Plain data, no locks: a cut is built by one thread and then owned
// by whoever holds it (the checkpoint writer), so it needs no synchronisation.
//
// Rows are kept in their storage form (the value in the storage dtype, fp16
// and bf16 packed two per float, then the fp32 optimizer slots), so a cut
// written and read back is bit-exact.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "common/hash.h"
#include "ps/storage/applied_keys.h"
#include "ps/storage/config.h"
#include "ps/storage/huge_pages.h"
#include "ps/storage/tensor.h"

namespace plexus::ps {

// Per-row bookkeeping, as SparseTable keeps it.
struct RowMeta {
  uint64_t hit_count = 0;
  uint64_t last_step = 0;
  uint64_t version = 0;
  int64_t update_count = 0;
};

// A row record: its RowMeta (the four fields, 8 host-order bytes each) then
// its floats. The layout of a cut's rows and of a checkpoint's RocksDB
// values alike, so the writer hands a cut's records to RocksDB as they are.
inline constexpr size_t kRowMetaBytes = 32;
static_assert(sizeof(RowMeta) == kRowMetaBytes &&
              std::is_trivially_copyable_v<RowMeta>);
inline size_t RowRecordBytes(int64_t row_floats) {
  return kRowMetaBytes + static_cast<size_t>(row_floats) * sizeof(float);
}
inline void EncodeRowRecord(const RowMeta& meta, const float* data,
                            int64_t row_floats, char* out) {
  std::memcpy(out, &meta, kRowMetaBytes);
  std::memcpy(out + kRowMetaBytes, data,
              static_cast<size_t>(row_floats) * sizeof(float));
}
inline void DecodeRowRecord(const char* in, int64_t row_floats, RowMeta* meta,
                            float* data) {
  std::memcpy(meta, in, kRowMetaBytes);
  std::memcpy(data, in + kRowMetaBytes,
              static_cast<size_t>(row_floats) * sizeof(float));
}

// Where a lazily restored table finds the rows it has not loaded yet: a
// read-only view of a verified checkpoint. Implementations are thread-safe.
// An I/O error while reading is fatal (the files were verified when the
// restore began; the process dies rather than invent a row).
class RowSource {
 public:
  virtual ~RowSource() = default;
  // Copies row `id` (meta + row_floats floats) out; false if absent.
  virtual bool Fetch(uint64_t id, RowMeta* meta, float* data) = 0;
  // Calls fn for every row, in the checkpoint's key order, until it returns
  // false.
  virtual void ForEach(
      const std::function<bool(uint64_t id, const RowMeta& meta,
                               const float* data)>& fn) = 0;
};

// The stripe of row `id` in a table of `stripes` stripes (SparseTable's
// lock striping, and the leading part of a checkpoint's row key).
inline uint32_t RowStripe(uint64_t id, int stripes) {
  return static_cast<uint32_t>(Mix64(id ^ 0x5bd1e9955bd1e995ULL) %
                               static_cast<uint64_t>(stripes));
}

// The rows of one sparse table in a cut.
struct TableCut {
  TableConfig config;
  // Engine-local identity of this table object (a table deleted and created
  // again under the same name gets a new serial). Not persisted.
  uint64_t serial = 0;
  // True: `ids` holds every row of the table (the checkpoint must drop
  // whatever the base held for this table). False: only the rows changed
  // since the previous cut, applied on top of the base.
  bool complete = false;
  // Floats per row: the packed value then num_slots * dim slots.
  int64_t row_floats = 0;
  // Rows present at the cut: ids[i]'s row is record i of `records`
  // (record_bytes() each, see EncodeRowRecord). A cut the engine takes
  // holds them in (RowStripe(id, stripes), id) order, the order of a
  // checkpoint's row keys, with `stripes` > 0; one read back from a
  // checkpoint in no particular order, with `stripes` = 0.
  int stripes = 0;
  // Engine cuts: stripe s's rows are at [stripe_begin[s],
  // stripe_begin[s + 1]), and copy_stripes(first, last) copies stripes
  // [first, last] of a deferred cut now where nobody has (ShardCut::Finish
  // copies them all), so a writer can stream the cut stripe by stripe.
  std::vector<size_t> stripe_begin;
  std::function<void(int first, int last)> copy_stripes;
  HugePageVector<uint64_t> ids;
  HugePageVector<char> records;
  size_t record_bytes() const { return RowRecordBytes(row_floats); }
  const char* record(size_t i) const {
    return records.data() + i * record_bytes();
  }
  char* record(size_t i) { return records.data() + i * record_bytes(); }
  // Sizes ids and records for n rows.
  void Resize(size_t n) {
    ids.resize(n);
    records.resize(n * record_bytes());
  }
  RowMeta meta(size_t i) const {
    RowMeta m;
    std::memcpy(&m, record(i), kRowMetaBytes);
    return m;
  }
  std::vector<float> row(size_t i) const {
    std::vector<float> v(static_cast<size_t>(row_floats));
    std::memcpy(v.data(), record(i) + kRowMetaBytes, v.size() * sizeof(float));
    return v;
  }
  // Rows removed (evicted) since the previous cut; absent at the cut.
  std::vector<uint64_t> deleted;
  // Rows evicted since creation (restored as is).
  int64_t rows_evicted = 0;
  // Rows the table held at the cut (all of them, not only `ids`).
  int64_t total_rows = 0;
  // Restore only: when set, `ids` is empty and the table's total_rows rows
  // are faulted in from here on first access (and loaded in the
  // background, see SparseTable::AttachSource).
  std::shared_ptr<RowSource> source;
};

// One dense variable slice in a cut (always whole).
struct VariableCut {
  VariableConfig config;
  RowRange rows;
  int64_t width = 0;
  // Whether it changed since the previous cut (false: the base's copy is
  // current and need not be written again).
  bool changed = true;
  // Values in the storage dtype: fp32 in values32, fp16/bf16 in values16.
  std::vector<float> values32;
  std::vector<uint16_t> values16;
  std::vector<std::vector<float>> slots;  // num_slots x (rows x width)
  std::vector<int64_t> update_count;      // per row
};

struct ShardCut {
  ShardCut() = default;
  ShardCut(const ShardCut&) = delete;
  ShardCut& operator=(const ShardCut&) = delete;
  ~ShardCut() { Finish(); }

  // A cut taken with deferred copies (CutOptions::defer_copy) holds its
  // sparse rows only after Finish() (or the writer's copy_stripes): until
  // then a change to a row of the cut first saves the row's pre-image.
  // Finish copies the stripes still pending with CutOptions::copy_threads
  // threads. Idempotent; the destructor calls it. Call it from one thread.
  void Finish() {
    if (finish_) {
      auto f = std::move(finish_);
      finish_ = nullptr;
      f();
    }
  }
  std::function<void()> finish_;

  // The step C of the cut: no update of a step > C is in it.
  uint64_t step_id = 0;
  // Newest step the engine had seen (TTL eviction counts from it).
  uint64_t newest_step = 0;
  // Checkpoint this cut is for, and the checkpoint its changed rows apply
  // to (0: complete cut, every table complete).
  uint64_t checkpoint_id = 0;
  uint64_t base_checkpoint_id = 0;
  std::vector<TableCut> tables;        // sorted by name
  std::vector<VariableCut> variables;  // sorted by name
  // The exactly-once record: keys with their step, and the newest
  // incarnation per worker.
  std::vector<std::pair<UpdateKey, uint64_t>> applied_keys;
  std::vector<std::pair<uint64_t, uint64_t>> incarnations;
  // How long pushes were held back while the cut was taken.
  absl::Duration pause;

  // Sparse rows written (present + deleted) plus dense rows of changed
  // variables.
  int64_t dirty_rows() const {
    int64_t n = 0;
    for (const auto& t : tables) {
      n += static_cast<int64_t>(t.ids.size() + t.deleted.size());
    }
    for (const auto& v : variables) {
      if (v.changed) n += v.rows.size();
    }
    return n;
  }
};

}  // namespace plexus::ps
