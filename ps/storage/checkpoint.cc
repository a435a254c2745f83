#include "ps/storage/checkpoint.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "common/failpoint.h"
#include "common/status.h"
#include "common/thread_pool.h"
#include "common/tsan.h"
#include "glog/logging.h"
#include "ps/storage/crc32c.h"
#include "ps/storage/cut.h"
#include "ps/storage/optimizer.h"
#include "rocksdb/db.h"
#include "rocksdb/env.h"
#include "rocksdb/file_checksum.h"
#include "rocksdb/metadata.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_writer.h"
#include "rocksdb/table.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"

namespace plexus::ps {
namespace {

namespace fs = std::filesystem;

constexpr char kManifestName[] = "PLEXUS_SHARD_MANIFEST";
constexpr char kPublishedName[] = "PUBLISHED";
constexpr char kStagingDir[] = ".staging";
constexpr char kMetaCf[] = "meta";
// Meta record: each table's row key stripes (RowKey); absent in checkpoints
// written before the stripe led the key (all 0).
constexpr char kKeyStripesRecord[] = "row_key_stripes";
constexpr char kManifestMagic[] = "plexus-shard-checkpoint 1";
// Tables with at least this many changed rows are written as one SST file
// and ingested; fewer go through write batches (and the WAL).
constexpr size_t kSstMinRows = 4096;

// ---- error translation (the one place rocksdb::Status and errno become
// absl::Status) ----

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNoSpace() || s.subcode() == rocksdb::Status::kNoSpace) {
    return absl::ResourceExhaustedError(msg);
  }
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  return absl::InternalError(msg);
}

absl::Status FromErrno(int err, absl::string_view what) {
  const std::string msg = absl::StrCat(what, ": ", std::strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(msg);
  if (err == ENOENT) return absl::NotFoundError(msg);
  return absl::InternalError(msg);
}

absl::Status FromEc(const std::error_code& ec, absl::string_view what) {
  if (!ec) return absl::OkStatus();
  return FromErrno(ec.value(), what);
}

// CPU time the calling thread has used.
absl::Duration ThreadCpuTime() {
  struct timespec ts;
  if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) {
    return absl::ZeroDuration();
  }
  return absl::DurationFromTimespec(ts);
}

// ---- small file-system helpers ----

void RemoveAllQuietly(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

absl::Status FsyncPath(const fs::path& p, bool directory) {
  const int fd = ::open(
      p.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) return FromErrno(errno, absl::StrCat("open ", p.string()));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return FromErrno(err, absl::StrCat("fsync ", p.string()));
  return absl::OkStatus();
}

absl::Status WriteFileDurably(const fs::path& path, absl::string_view data) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd =
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FromErrno(errno, absl::StrCat("create ", tmp.string()));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t w = ::write(fd, data.data() + done, data.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return FromErrno(err, absl::StrCat("write ", tmp.string()));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    ::close(fd);
    return FromErrno(err, absl::StrCat("fsync ", tmp.string()));
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return FromErrno(errno, absl::StrCat("rename ", tmp.string()));
  }
  return FsyncPath(path.parent_path(), /*directory=*/true);
}

// A single path component or "a/b" of them: no "", ".", "..", not absolute.
bool IsSafeRelative(absl::string_view rel, int max_components) {
  if (rel.empty() || rel.front() == '/') return false;
  std::vector<absl::string_view> parts = absl::StrSplit(rel, '/');
  if (static_cast<int>(parts.size()) > max_components) return false;
  for (absl::string_view p : parts) {
    if (p.empty() || p == "." || p == "..") return false;
  }
  return true;
}

// ---- encoding ----

class Enc {
 public:
  void U64(uint64_t v) { Raw(&v, 8); }
  void I64(int64_t v) { Raw(&v, 8); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void F64(double v) { U64(std::bit_cast<uint64_t>(v)); }
  void Bool(bool v) { U32(v ? 1 : 0); }
  void Str(absl::string_view s) {
    U64(s.size());
    out_.append(s.data(), s.size());
  }
  void Raw(const void* p, size_t n) {
    out_.append(static_cast<const char*>(p), n);
  }
  std::string& out() { return out_; }

 private:
  std::string out_;
};

class Dec {
 public:
  explicit Dec(absl::string_view in) : in_(in) {}
  uint64_t U64() {
    uint64_t v = 0;
    Raw(&v, 8);
    return v;
  }
  int64_t I64() {
    int64_t v = 0;
    Raw(&v, 8);
    return v;
  }
  uint32_t U32() {
    uint32_t v = 0;
    Raw(&v, 4);
    return v;
  }
  double F64() { return std::bit_cast<double>(U64()); }
  bool Bool() { return U32() != 0; }
  std::string Str() {
    const uint64_t n = U64();
    if (!ok_ || n > in_.size()) {
      ok_ = false;
      return "";
    }
    std::string s(in_.substr(0, n));
    in_.remove_prefix(n);
    return s;
  }
  void Raw(void* p, size_t n) {
    if (!ok_ || n > in_.size()) {
      ok_ = false;
      std::memset(p, 0, n);
      return;
    }
    std::memcpy(p, in_.data(), n);
    in_.remove_prefix(n);
  }
  bool ok() const { return ok_; }

 private:
  absl::string_view in_;
  bool ok_ = true;
};

void EncodeInit(Enc& e, const InitializerConfig& c) {
  e.U32(static_cast<uint32_t>(c.kind));
  e.F64(c.value);
  e.F64(c.min);
  e.F64(c.max);
  e.F64(c.mean);
  e.F64(c.stddev);
  e.Bool(c.truncated);
  e.U64(c.seed);
}
InitializerConfig DecodeInit(Dec& d) {
  InitializerConfig c;
  c.kind = static_cast<InitializerConfig::Kind>(d.U32());
  c.value = d.F64();
  c.min = d.F64();
  c.max = d.F64();
  c.mean = d.F64();
  c.stddev = d.F64();
  c.truncated = d.Bool();
  c.seed = d.U64();
  return c;
}
void EncodeOpt(Enc& e, const OptimizerConfig& c) {
  e.U32(static_cast<uint32_t>(c.kind));
  for (double v :
       {c.learning_rate, c.momentum, c.initial_accumulator_value, c.epsilon,
        c.beta1, c.beta2, c.weight_decay, c.learning_rate_power, c.l1, c.l2,
        c.l2_shrinkage, c.beta, c.rho}) {
    e.F64(v);
  }
  e.Bool(c.nesterov);
  e.Bool(c.centered);
}
OptimizerConfig DecodeOpt(Dec& d) {
  OptimizerConfig c;
  c.kind = static_cast<OptimizerConfig::Kind>(d.U32());
  for (double* v :
       {&c.learning_rate, &c.momentum, &c.initial_accumulator_value, &c.epsilon,
        &c.beta1, &c.beta2, &c.weight_decay, &c.learning_rate_power, &c.l1,
        &c.l2, &c.l2_shrinkage, &c.beta, &c.rho}) {
    *v = d.F64();
  }
  c.nesterov = d.Bool();
  c.centered = d.Bool();
  return c;
}
void EncodeCons(Enc& e, const ConsistencyConfig& c) {
  e.U32(static_cast<uint32_t>(c.mode));
  e.U32(c.num_workers);
  e.U32(c.staleness_bound);
}
ConsistencyConfig DecodeCons(Dec& d) {
  ConsistencyConfig c;
  c.mode = static_cast<ConsistencyMode>(d.U32());
  c.num_workers = d.U32();
  c.staleness_bound = d.U32();
  return c;
}

void EncodeTable(Enc& e, const TableCut& t, int64_t total_rows) {
  const TableConfig& c = t.config;
  e.Str(c.name);
  e.I64(c.dim);
  e.U32(static_cast<uint32_t>(c.storage_dtype));
  EncodeInit(e, c.initializer);
  EncodeOpt(e, c.optimizer);
  EncodeCons(e, c.consistency);
  e.U32(c.admission_min_hit_count);
  e.U64(c.ttl_steps);
  e.I64(c.capacity_rows);
  e.U32(static_cast<uint32_t>(c.eviction_policy));
  e.U32(static_cast<uint32_t>(c.non_finite_policy));
  e.I64(t.row_floats);
  e.I64(t.rows_evicted);
  e.I64(total_rows);
}
void DecodeTable(Dec& d, TableCut* t, int64_t* total_rows) {
  TableConfig& c = t->config;
  c.name = d.Str();
  c.dim = d.I64();
  c.storage_dtype = static_cast<DType>(d.U32());
  c.initializer = DecodeInit(d);
  c.optimizer = DecodeOpt(d);
  c.consistency = DecodeCons(d);
  c.admission_min_hit_count = d.U32();
  c.ttl_steps = d.U64();
  c.capacity_rows = d.I64();
  c.eviction_policy = static_cast<EvictionPolicy>(d.U32());
  c.non_finite_policy = static_cast<NonFinitePolicy>(d.U32());
  t->row_floats = d.I64();
  t->rows_evicted = d.I64();
  *total_rows = d.I64();
}
void EncodeVariable(Enc& e, const VariableCut& v) {
  const VariableConfig& c = v.config;
  e.Str(c.name);
  e.U64(c.shape.size());
  for (int64_t s : c.shape) e.I64(s);
  e.U32(static_cast<uint32_t>(c.storage_dtype));
  EncodeInit(e, c.initializer);
  EncodeOpt(e, c.optimizer);
  EncodeCons(e, c.consistency);
  e.U32(static_cast<uint32_t>(c.non_finite_policy));
  e.I64(v.rows.begin);
  e.I64(v.rows.end);
  e.I64(v.width);
}
void DecodeVariable(Dec& d, VariableCut* v) {
  VariableConfig& c = v->config;
  c.name = d.Str();
  const uint64_t rank = d.U64();
  for (uint64_t i = 0; i < rank && d.ok() && i < 64; ++i) {
    c.shape.push_back(d.I64());
  }
  c.storage_dtype = static_cast<DType>(d.U32());
  c.initializer = DecodeInit(d);
  c.optimizer = DecodeOpt(d);
  c.consistency = DecodeCons(d);
  c.non_finite_policy = static_cast<NonFinitePolicy>(d.U32());
  v->rows.begin = d.I64();
  v->rows.end = d.I64();
  v->width = d.I64();
}

// Keys sort by number: big-endian. A dense variable's rows are keyed by
// their first row (8 bytes).
void PutBigEndian(uint64_t v, int bytes, char* k) {
  for (int i = 0; i < bytes; ++i) {
    k[i] = static_cast<char>(v >> (8 * (bytes - 1 - i)));
  }
}
std::string IdKey(uint64_t id) {
  std::string k(8, '\0');
  PutBigEndian(id, 8, k.data());
  return k;
}
// The last 8 bytes of a key, big-endian.
uint64_t KeyId(absl::string_view k) {
  uint64_t id = 0;
  for (size_t i = k.size() < 8 ? 0 : k.size() - 8; i < k.size(); ++i) {
    id = (id << 8) | static_cast<uint8_t>(k[i]);
  }
  return id;
}

// A sparse row's key in a table written with `stripes` > 0: its stripe
// (RowStripe, 4 bytes) then its id (8 bytes), the order the engine's cut
// holds rows in (TableCut), so a complete table is streamed to RocksDB as
// the cut holds it. With `stripes` = 0 (checkpoints written before the
// stripe led the key, and tests): the id alone.
struct RowKey {
  uint32_t stripe = 0;
  uint64_t id = 0;
  RowKey(int stripes, uint64_t row_id)
      : stripe(stripes > 0 ? RowStripe(row_id, stripes) : 0), id(row_id) {}
  // The key of row `row_id` of stripe `s`, the stripe known already.
  static RowKey At(uint32_t s, uint64_t row_id) {
    RowKey k(0, row_id);
    k.stripe = s;
    return k;
  }
  friend bool operator<(const RowKey& a, const RowKey& b) {
    return a.stripe != b.stripe ? a.stripe < b.stripe : a.id < b.id;
  }
};
constexpr size_t kMaxRowKeyBytes = 12;
size_t RowKeyBytes(int stripes) { return stripes > 0 ? 12 : 8; }
// Writes the key into k (kMaxRowKeyBytes); its length.
size_t PutRowKey(int stripes, const RowKey& key, char* k) {
  if (stripes == 0) {
    PutBigEndian(key.id, 8, k);
    return 8;
  }
  PutBigEndian(key.stripe, 4, k);
  PutBigEndian(key.id, 8, k + 4);
  return 12;
}
std::string RowKeyString(int stripes, uint64_t id) {
  char k[kMaxRowKeyBytes];
  return std::string(k, PutRowKey(stripes, RowKey(stripes, id), k));
}

// The row key stripes of the tables in a checkpoint's meta column family
// (`meta` may be null: none); tables it does not list have 0.
absl::StatusOr<absl::flat_hash_map<std::string, int>> ReadKeyStripes(
    rocksdb::DB* db, rocksdb::ColumnFamilyHandle* meta) {
  absl::flat_hash_map<std::string, int> stripes;
  if (meta == nullptr) return stripes;
  std::string v;
  const rocksdb::Status s =
      db->Get(rocksdb::ReadOptions(), meta, kKeyStripesRecord, &v);
  if (s.IsNotFound()) return stripes;
  PLEXUS_RETURN_IF_ERROR(FromRocks(s, "read row key stripes"));
  Dec d(v);
  const uint64_t n = d.U64();
  for (uint64_t i = 0; i < n && d.ok(); ++i) {
    std::string name = d.Str();
    const uint32_t k = d.U32();
    if (k > static_cast<uint32_t>(std::numeric_limits<int>::max())) break;
    stripes[std::move(name)] = static_cast<int>(k);
  }
  if (!d.ok() || stripes.size() != n) {
    return absl::DataLossError("bad row key stripes record");
  }
  return stripes;
}

absl::string_view Sv(const rocksdb::Slice& s) {
  return absl::string_view(s.data(), s.size());
}

std::string TableCf(absl::string_view name) { return absl::StrCat("t/", name); }
std::string VariableCf(absl::string_view name) {
  return absl::StrCat("v/", name);
}

// Rows of a dense variable per RocksDB value (about 1 MiB).
int64_t DenseChunkRows(const VariableCut& v) {
  const int64_t per_row =
      v.width * (4 + 4 * static_cast<int64_t>(v.slots.size())) + 8;
  return std::max<int64_t>(1,
                           (int64_t{1} << 20) / std::max<int64_t>(1, per_row));
}

class NullLogger : public rocksdb::Logger {
 public:
  using rocksdb::Logger::Logv;
  void Logv(const char* /*format*/, va_list /*ap*/) override {}
};

// Each SST file's crc32c, computed by RocksDB as it writes the file, with
// crc32c.h (RocksDB's own crc32c in Debian's build is the table version,
// several times slower than the SSE4.2 instruction).
constexpr char kFileCrcName[] = "PlexusCrc32c";

class FileCrcGenerator final : public rocksdb::FileChecksumGenerator {
 public:
  void Update(const char* data, size_t n) override {
    crc_ = Crc32cExtend(crc_, data, n);
  }
  void Finalize() override {}
  // 4 bytes, big endian.
  std::string GetChecksum() const override {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[i] = static_cast<char>(crc_ >> (24 - 8 * i));
    return s;
  }
  const char* Name() const override { return kFileCrcName; }

 private:
  uint32_t crc_ = 0;
};

class FileCrcFactory final : public rocksdb::FileChecksumGenFactory {
 public:
  std::unique_ptr<rocksdb::FileChecksumGenerator> CreateFileChecksumGenerator(
      const rocksdb::FileChecksumGenContext& /*context*/) override {
    return std::make_unique<FileCrcGenerator>();
  }
  const char* Name() const override { return "PlexusCrc32cFactory"; }
};

// The crc32c FileCrcGenerator recorded for a file; false if the file has
// none (written before it was used) or another function's.
bool WrittenCrc32c(const std::string& checksum, const std::string& func,
                   uint32_t* crc) {
  if (func != kFileCrcName || checksum.size() != 4) return false;
  *crc = 0;
  for (char c : checksum) *crc = (*crc << 8) | static_cast<uint8_t>(c);
  return true;
}

rocksdb::Options DbOptions() {
  rocksdb::Options o;
  o.create_if_missing = true;
  o.create_missing_column_families = true;
  o.wal_recovery_mode = rocksdb::WALRecoveryMode::kPointInTimeRecovery;
  o.compression = rocksdb::kNoCompression;  // embeddings do not compress
  o.write_buffer_size = 64 << 20;
  o.max_write_buffer_number = 4;
  o.max_background_jobs = 2;
  // Start write-back every MiB instead of leaving it all to the final
  // fsync, so the disk writes while the next rows are encoded.
  o.bytes_per_sync = 1 << 20;
  // SST files' crc32c computed while they are written: a checkpoint's new
  // files need not be read back (Write).
  static const auto* const kFactory =
      new std::shared_ptr<rocksdb::FileChecksumGenFactory>(
          std::make_shared<FileCrcFactory>());
  o.file_checksum_gen_factory = *kFactory;
  // Blocks are checksummed with XXH3 (RocksDB's crc32c is the slow table
  // version here); every block read is still verified.
  rocksdb::BlockBasedTableOptions table;
  table.checksum = rocksdb::kXXH3;
  // 16 KiB blocks (about 55 rows of dim 64 with SGD): a quarter of the
  // per-block work of the default 4 KiB when a checkpoint is written
  // (~20% less CPU per byte), at the price of reading 16 KiB to fault in
  // one row during a lazy restore.
  table.block_size = 16 << 10;
  // A two-level index in the block cache: opening a checkpoint reads only
  // each file's top-level index and the first lookup one 4 KiB partition,
  // so a lazy restore serves its first pull in a time that hardly grows
  // with the table (a flat index is ~3 MB per GB of rows, read at open).
  table.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
  table.cache_index_and_filter_blocks = true;
  o.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return o;
}

// A read-only checkpoint database and its column families.
struct ReadOnlyDb {
  ReadOnlyDb(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> cfs)
      : db(db), handles(std::move(cfs)) {}
  ~ReadOnlyDb() {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
    delete db;
  }
  ReadOnlyDb(const ReadOnlyDb&) = delete;
  ReadOnlyDb& operator=(const ReadOnlyDb&) = delete;
  rocksdb::DB* const db;
  const std::vector<rocksdb::ColumnFamilyHandle*> handles;
};

// The rows of one table in a verified checkpoint (lazy restore). Reads are
// thread-safe (rocksdb::DB is). A read error or a malformed row is fatal:
// the bytes were verified by crc32c when the restore began.
class RocksRowSource final : public RowSource {
 public:
  RocksRowSource(std::shared_ptr<ReadOnlyDb> db,
                 rocksdb::ColumnFamilyHandle* cf, int64_t row_floats,
                 int key_stripes)
      : db_(std::move(db)),
        cf_(cf),
        key_stripes_(key_stripes),
        row_floats_(row_floats),
        record_bytes_(RowRecordBytes(row_floats)) {}

  bool Fetch(uint64_t id, RowMeta* meta, float* data) override {
    rocksdb::PinnableSlice v;
    const rocksdb::Status s = db_->db->Get(rocksdb::ReadOptions(), cf_,
                                           RowKeyString(key_stripes_, id), &v);
    if (s.IsNotFound()) return false;
    CHECK(s.ok()) << "checkpoint read of row " << id << ": " << s.ToString();
    CHECK_EQ(v.size(), record_bytes_) << "checkpoint row " << id;
    DecodeRowRecord(v.data(), row_floats_, meta, data);
    return true;
  }

  void ForEach(const std::function<bool(uint64_t, const RowMeta&,
                                        const float*)>& fn) override {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->db->NewIterator(rocksdb::ReadOptions(), cf_));
    std::vector<float> buf(static_cast<size_t>(row_floats_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      CHECK_EQ(it->value().size(), record_bytes_) << "checkpoint row";
      RowMeta m;
      DecodeRowRecord(it->value().data(), row_floats_, &m, buf.data());
      if (!fn(KeyId(Sv(it->key())), m, buf.data())) return;
    }
    CHECK(it->status().ok()) << "checkpoint scan: " << it->status().ToString();
  }

 private:
  const std::shared_ptr<ReadOnlyDb> db_;
  rocksdb::ColumnFamilyHandle* const cf_;
  const int key_stripes_;
  const int64_t row_floats_;
  const size_t record_bytes_;
};

// ---- the shard manifest (text, one field per line) ----

std::string FormatManifest(const ShardCheckpointInfo& info) {
  std::string s = absl::StrCat(kManifestMagic, "\n");
  absl::StrAppend(&s, "checkpoint_id ", info.checkpoint_id, "\n");
  absl::StrAppend(&s, "step_id ", info.step_id, "\n");
  absl::StrAppend(&s, "base_checkpoint_id ", info.base_checkpoint_id, "\n");
  absl::StrAppend(&s, "num_rows ", info.num_rows, "\n");
  absl::StrAppend(&s, "new_bytes ", info.new_bytes, "\n");
  for (const auto& f : info.files) {
    absl::StrAppend(&s, "file ", f.crc32c, " ", f.size_bytes, " ", f.path,
                    "\n");
  }
  return s;
}

absl::StatusOr<ShardCheckpointInfo> ReadManifest(const fs::path& dir) {
  const fs::path path = dir / kManifestName;
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("no ", path.string()));
  std::string line;
  std::getline(in, line);
  auto bad = [&]() {
    return absl::DataLossError(
        absl::StrCat(path.string(), ": malformed line '", line, "'"));
  };
  if (line != kManifestMagic) return bad();
  ShardCheckpointInfo info;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(' ', 3));
    if (f.size() == 2) {
      int64_t v;
      if (!absl::SimpleAtoi(f[1], &v)) return bad();
      if (f[0] == "checkpoint_id")
        info.checkpoint_id = v;
      else if (f[0] == "step_id")
        info.step_id = v;
      else if (f[0] == "base_checkpoint_id")
        info.base_checkpoint_id = v;
      else if (f[0] == "num_rows")
        info.num_rows = v;
      else if (f[0] == "new_bytes")
        info.new_bytes = v;
      else
        return bad();
    } else if (f.size() == 4 && f[0] == "file") {
      CheckpointFileInfo file;
      if (!absl::SimpleAtoi(f[1], &file.crc32c) ||
          !absl::SimpleAtoi(f[2], &file.size_bytes) ||
          !IsSafeRelative(f[3], 1)) {
        return bad();
      }
      file.path = f[3];
      info.total_bytes += file.size_bytes;
      info.files.push_back(std::move(file));
    } else {
      return bad();
    }
  }
  info.directory = dir.filename().string();
  return info;
}

// ---- the verified-files record (PLEXUS_VERIFIED) ----
//
// What this shard knows about a checkpoint's files: for each, the crc32c it
// computed (or carried over, see Write) and the file's identity when it did
// (device, inode, size, mtime, ctime). Restore trusts a file whose crc32c is
// the expected one and whose identity is unchanged instead of reading it
// again: any write to the file, a rename over it, a truncation or a
// utimensat() changes one of them (ctime cannot be set from user space).
// A recorded ctime must be strictly older than the record's own mtime: file
// systems stamp ctime with a coarse clock, so a change in the same clock
// tick as the recorded state could leave ctime as it was (git's "racily
// clean" entries); such files are verified again. Our own link()/unlink()
// of a shared inode changes its ctime too; Write and Finalize re-record the
// files they vouched for just before. The record is a cache: missing,
// malformed or stale, the files are read and checksummed as before. It is
// not in the manifest and never shared with other checkpoints.

struct FileStamp {
  uint64_t dev = 0;
  uint64_t ino = 0;
  int64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  friend bool operator==(const FileStamp&, const FileStamp&) = default;
};

FileStamp StampOf(const struct stat& st) {
  FileStamp s;
  s.dev = st.st_dev;
  s.ino = st.st_ino;
  s.size = st.st_size;
  s.mtime_ns = int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec;
  s.ctime_ns = int64_t{st.st_ctim.tv_sec} * 1000000000 + st.st_ctim.tv_nsec;
  return s;
}

absl::StatusOr<FileStamp> Stamp(const fs::path& p) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) {
    return FromErrno(errno, absl::StrCat("stat ", p.string()));
  }
  return StampOf(st);
}

struct VerifiedFile {
  FileStamp stamp;
  uint32_t crc32c = 0;
};
// By path relative to the checkpoint directory.
using VerifiedFiles = std::map<std::string, VerifiedFile>;

constexpr char kVerifiedName[] = "PLEXUS_VERIFIED";
constexpr char kVerifiedMagic[] = "plexus-verified 1";

// The entries of dir's record whose ctime predates the record; empty if
// there is none or it is malformed. The caller compares the stamps with
// the files as they are now.
VerifiedFiles LoadVerified(const fs::path& dir) {
  const fs::path path = dir / kVerifiedName;
  struct stat rec;
  if (::stat(path.c_str(), &rec) != 0) return {};
  const int64_t written = StampOf(rec).mtime_ns;
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  // The last line is "end <crc32c of everything before it>".
  const size_t end = text.rfind("end ");
  uint32_t crc = 0;
  if (!in || end == std::string::npos ||
      !absl::SimpleAtoi(absl::StripSuffix(text.substr(end + 4), "\n"), &crc) ||
      crc != Crc32c(absl::string_view(text).substr(0, end))) {
    return {};
  }
  VerifiedFiles out;
  std::vector<absl::string_view> lines =
      absl::StrSplit(absl::string_view(text).substr(0, end), '\n');
  if (lines.empty() || lines[0] != kVerifiedMagic) return {};
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    std::vector<std::string> f =
        absl::StrSplit(lines[i], absl::MaxSplits(' ', 7));
    VerifiedFile v;
    if (f.size() != 8 || f[0] != "file" || !absl::SimpleAtoi(f[1], &v.crc32c) ||
        !absl::SimpleAtoi(f[2], &v.stamp.size) ||
        !absl::SimpleAtoi(f[3], &v.stamp.dev) ||
        !absl::SimpleAtoi(f[4], &v.stamp.ino) ||
        !absl::SimpleAtoi(f[5], &v.stamp.mtime_ns) ||
        !absl::SimpleAtoi(f[6], &v.stamp.ctime_ns) ||
        !IsSafeRelative(f[7], 1)) {
      return {};
    }
    if (v.stamp.ctime_ns < written) out[f[7]] = v;
  }
  return out;
}

// Replaces dir's record (temporary file + rename; not fsynced: a record
// lost in a crash only costs a full verification).
void SaveVerified(const fs::path& dir, const VerifiedFiles& files) {
  static std::atomic<uint64_t> serial{0};
  std::string text = absl::StrCat(kVerifiedMagic, "\n");
  for (const auto& [path, v] : files) {
    absl::StrAppend(&text, "file ", v.crc32c, " ", v.stamp.size, " ",
                    v.stamp.dev, " ", v.stamp.ino, " ", v.stamp.mtime_ns, " ",
                    v.stamp.ctime_ns, " ", path, "\n");
  }
  absl::StrAppend(&text, "end ", Crc32c(text), "\n");
  const fs::path tmp =
      dir / absl::StrCat(kVerifiedName, ".tmp.", ::getpid(), ".",
                         serial.fetch_add(1, std::memory_order_relaxed));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) {
      out.close();
      RemoveAllQuietly(tmp);
      return;
    }
  }
  std::error_code ec;
  fs::rename(tmp, dir / kVerifiedName, ec);
  if (ec) RemoveAllQuietly(tmp);
}

// The entries of dir's record that still describe the files as they are.
VerifiedFiles CurrentVerified(const fs::path& dir) {
  VerifiedFiles out;
  for (auto& [path, v] : LoadVerified(dir)) {
    auto now = Stamp(dir / path);
    if (now.ok() && *now == v.stamp) out[path] = v;
  }
  return out;
}

// Re-records `files` (vouched for just before our own link/unlink of their
// inodes changed their ctime) with their identity as it is now.
void RestampVerified(const fs::path& dir, VerifiedFiles files) {
  if (files.empty()) return;
  for (auto it = files.begin(); it != files.end();) {
    auto now = Stamp(dir / it->first);
    if (!now.ok() || now->size != it->second.stamp.size ||
        now->ino != it->second.stamp.ino ||
        now->mtime_ns != it->second.stamp.mtime_ns) {
      it = files.erase(it);
      continue;
    }
    it->second.stamp = *now;
    ++it;
  }
  SaveVerified(dir, files);
}

// ---- the store ----

class StoreImpl final : public CheckpointStore {
 public:
  StoreImpl(Engine* engine, const CheckpointStoreOptions& options)
      : engine_(engine), options_(options), root_(options.root) {}

  ~StoreImpl() override {
    if (writer_.joinable()) writer_.join();
  }

  absl::Status Init();

  absl::StatusOr<PrepareResult> Prepare(const PrepareOptions& options) override;
  absl::StatusOr<CommitResult> Commit(uint64_t checkpoint_id,
                                      absl::Duration timeout) override;
  absl::StatusOr<std::vector<uint64_t>> Finalize(uint64_t checkpoint_id,
                                                 bool published,
                                                 uint32_t keep_last) override;
  absl::StatusOr<RestoreResult> Restore(const RestoreOptions& options) override;
  std::vector<CheckpointListing> List() const override;
  int64_t TEST_rows_written() const override {
    return rows_written_.load(std::memory_order_relaxed);
  }

 private:
  struct Entry {
    uint64_t id = 0;
    uint64_t step = 0;
    std::string directory;  // relative to the root
    std::string staging;    // relative to the root
    CheckpointState state = CheckpointState::kStaging;
    ShardCheckpointInfo info;
    // Sticky error of the write (state kAborted).
    absl::Status error;
    absl::Duration write_time;
    CheckpointWritePhases phases;
  };
  // What the background write needs, copied out of the entries at Prepare.
  struct WriteJob {
    std::unique_ptr<ShardCut> cut;
    fs::path staging;
    fs::path final_dir;
    std::string directory;
    fs::path base_dir;  // empty: complete
    std::vector<CheckpointFileInfo> base_files;
  };

  void RunWrite(WriteJob job);
  absl::StatusOr<ShardCheckpointInfo> Write(const WriteJob& job,
                                            CheckpointWritePhases* phases);
  absl::Status WriteDb(const WriteJob& job, rocksdb::DB* db,
                       std::map<std::string, rocksdb::ColumnFamilyHandle*>& cfs,
                       int64_t* rows_written, CheckpointWritePhases* phases);
  absl::StatusOr<std::unique_ptr<ShardCut>> ReadCut(const fs::path& dir,
                                                    bool lazy,
                                                    int64_t* num_rows);
  // Waits until checkpoint `id` is not being written; false at `deadline`.
  // The waits carry common/tsan.h's edges by hand (Debian's abseil is not
  // built for TSan).
  bool WaitForWrite(uint64_t id, absl::Time deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (writing_ == id) {
      TsanRelease(&mu_);
      const bool timed_out = write_done_.WaitWithDeadline(&mu_, deadline);
      TsanAcquire(&mu_);
      if (timed_out && writing_ == id) return false;
    }
    return true;
  }
  // Deletes an entry's directories (not the entry).
  void RemoveDirs(const Entry& e) {
    RemoveAllQuietly(root_ / e.staging);
    RemoveAllQuietly(root_ / e.directory);
    RemoveAllQuietly(root_ / (e.directory + ".tmp"));
  }

  // Constant after construction.
  Engine* const engine_;
  const CheckpointStoreOptions options_;
  const fs::path root_;

  mutable absl::Mutex mu_;
  std::map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
  // Id being written, 0 when none; write_done_ is signalled when it ends.
  uint64_t writing_ ABSL_GUARDED_BY(mu_) = 0;
  absl::CondVar write_done_;
  // A restore is running (no Prepare meanwhile).
  bool restoring_ ABSL_GUARDED_BY(mu_) = false;
  // The background writer; started and joined under mu_ only.
  std::thread writer_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> rows_written_{0};
};

absl::Status StoreImpl::Init() {
  std::error_code ec;
  fs::create_directories(root_, ec);
  PLEXUS_RETURN_IF_ERROR(FromEc(ec, absl::StrCat("create ", root_.string())));
  // Leftovers of a crash: the staging area, rocksdb::Checkpoint's temporary
  // directories and directories that never got their manifest.
  RemoveAllQuietly(root_ / kStagingDir);
  fs::create_directories(root_ / kStagingDir, ec);
  PLEXUS_RETURN_IF_ERROR(FromEc(ec, "create staging directory"));
  std::vector<fs::path> remove;
  MutexLock lock(&mu_);
  for (const auto& de : fs::directory_iterator(root_, ec)) {
    const std::string name = de.path().filename().string();
    if (name == kStagingDir || !de.is_directory()) continue;
    auto info = ReadManifest(de.path());
    if (!info.ok() || absl::EndsWith(name, ".tmp")) {
      remove.push_back(de.path());
      continue;
    }
    Entry e;
    e.id = info->checkpoint_id;
    e.step = info->step_id;
    e.directory = name;
    e.staging = absl::StrCat(kStagingDir, "/", name);
    e.state = fs::exists(de.path() / kPublishedName)
                  ? CheckpointState::kPublished
                  : CheckpointState::kCommitted;
    e.info = *std::move(info);
    entries_[e.id] = std::move(e);
  }
  PLEXUS_RETURN_IF_ERROR(FromEc(ec, absl::StrCat("list ", root_.string())));
  for (const auto& p : remove) RemoveAllQuietly(p);
  return absl::OkStatus();
}

absl::StatusOr<PrepareResult> StoreImpl::Prepare(const PrepareOptions& o) {
  if (o.checkpoint_id == 0) {
    return absl::InvalidArgumentError("checkpoint id must not be 0");
  }
  const std::string directory =
      o.directory.empty() ? absl::StrCat(o.checkpoint_id) : o.directory;
  const std::string staging =
      o.staging_directory.empty()
          ? absl::StrCat(kStagingDir, "/", o.checkpoint_id)
          : o.staging_directory;
  if (!IsSafeRelative(directory, 1) || directory == kStagingDir ||
      absl::EndsWith(directory, ".tmp")) {
    return absl::InvalidArgumentError(absl::StrCat(
        "checkpoint directory '", directory,
        "' must be one plain path component inside the checkpoint root"));
  }
  if (!IsSafeRelative(staging, 2) ||
      !absl::StartsWith(staging, absl::StrCat(kStagingDir, "/"))) {
    return absl::InvalidArgumentError(
        absl::StrCat("staging directory '", staging, "' must be ", kStagingDir,
                     "/<name> inside the checkpoint root"));
  }
  MutexLock lock(&mu_);
  if (writing_ != 0 || restoring_) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", writing_,
                     " is still being written (or a restore runs)"));
  }
  if (entries_.contains(o.checkpoint_id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("checkpoint ", o.checkpoint_id, " already exists"));
  }
  for (const auto& [id, e] : entries_) {
    if (e.directory == directory && e.state != CheckpointState::kAborted) {
      return absl::AlreadyExistsError(absl::StrCat(
          "directory ", directory, " is taken by checkpoint ", id));
    }
  }
  if (fs::exists(root_ / directory)) {
    return absl::AlreadyExistsError(
        absl::StrCat("directory ", directory, " exists"));
  }
  WriteJob job;
  uint64_t base = 0;
  if (o.base_checkpoint_id != 0) {
    auto it = entries_.find(o.base_checkpoint_id);
    if (it != entries_.end() &&
        (it->second.state == CheckpointState::kCommitted ||
         it->second.state == CheckpointState::kPublished)) {
      base = o.base_checkpoint_id;
      job.base_dir = root_ / it->second.directory;
      job.base_files = it->second.info.files;
    }
  }
  CutOptions cut_options;
  cut_options.step_id = o.step_id;
  cut_options.checkpoint_id = o.checkpoint_id;
  cut_options.base_checkpoint_id = base;
  cut_options.copy_threads = options_.cut_threads;
  PLEXUS_ASSIGN_OR_RETURN(job.cut, engine_->TakeCut(cut_options),
                          absl::StrCat("checkpoint ", o.checkpoint_id));
  if (job.cut->base_checkpoint_id == 0) {
    job.base_dir.clear();
    job.base_files.clear();
  }
  PrepareResult result;
  result.cut_pause = job.cut->pause;
  result.dirty_rows = job.cut->dirty_rows();
  result.incremental = job.cut->base_checkpoint_id != 0;
  job.staging = root_ / staging;
  job.final_dir = root_ / directory;
  job.directory = directory;
  Entry e;
  e.id = o.checkpoint_id;
  e.step = o.step_id;
  e.directory = directory;
  e.staging = staging;
  e.info.checkpoint_id = o.checkpoint_id;
  e.info.step_id = o.step_id;
  e.info.base_checkpoint_id = job.cut->base_checkpoint_id;
  e.info.directory = directory;
  entries_[o.checkpoint_id] = std::move(e);
  writing_ = o.checkpoint_id;
  if (writer_.joinable()) writer_.join();  // finished: writing_ was 0
  writer_ = std::thread(&StoreImpl::RunWrite, this, std::move(job));
  return result;
}

void StoreImpl::RunWrite(WriteJob job) {
  const absl::Time start = absl::Now();
  const uint64_t id = job.cut->checkpoint_id;
  CheckpointWritePhases phases;
  // The stripes nobody changed since the cut are copied out by WriteDb,
  // table by table (streamed tables stripe by stripe as they are written);
  // ShardCut::Finish (the destructor) copies any still pending.
  auto info = Write(job, &phases);
  if (!info.ok()) {
    RemoveAllQuietly(job.staging);
    RemoveAllQuietly(job.final_dir);
    RemoveAllQuietly(job.final_dir.string() + ".tmp");
    engine_->InvalidateCutBase(id);
  }
  job.cut.reset();  // free the rows before waking anyone
  MutexLock lock(&mu_);
  Entry& e = entries_[id];
  e.write_time = absl::Now() - start;
  e.phases = phases;
  if (info.ok()) {
    e.info = *std::move(info);
    e.state = CheckpointState::kCommitted;
  } else {
    e.error = info.status();
    e.state = CheckpointState::kAborted;
  }
  writing_ = 0;
  write_done_.SignalAll();
}

absl::StatusOr<ShardCheckpointInfo> StoreImpl::Write(
    const WriteJob& job, CheckpointWritePhases* phases) {
  const absl::Time start = absl::Now();
  const ShardCut& cut = *job.cut;
  const fs::path db_dir = job.staging / "db";
  RemoveAllQuietly(job.staging);
  std::error_code ec;
  fs::create_directories(db_dir, ec);
  PLEXUS_RETURN_IF_ERROR(FromEc(ec, absl::StrCat("create ", db_dir.string())));
  // The base files this shard verified and nobody changed since, by inode
  // (checked before our links change their ctime).
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, uint32_t> vouched;
  if (!job.base_dir.empty()) {
    for (const auto& [path, v] : CurrentVerified(job.base_dir)) {
      vouched[{v.stamp.dev, v.stamp.ino}] = v.crc32c;
    }
  }
  // 1. Start from the base: SST files are immutable (hard links); the rest
  // (MANIFEST, CURRENT, OPTIONS, WAL) is small and copied.
  for (const auto& f : job.base_files) {
    const fs::path src = job.base_dir / f.path, dst = db_dir / f.path;
    if (absl::EndsWith(f.path, ".sst")) {
      fs::create_hard_link(src, dst, ec);
    } else {
      fs::copy_file(src, dst, ec);
    }
    PLEXUS_RETURN_IF_ERROR(
        FromEc(ec, absl::StrCat("copy base file ", src.string())));
  }
  // 2. Open it with every column family it has.
  rocksdb::Options options = DbOptions();
  std::vector<std::string> names = {rocksdb::kDefaultColumnFamilyName};
  if (!job.base_files.empty()) {
    PLEXUS_RETURN_IF_ERROR(FromRocks(
        rocksdb::DB::ListColumnFamilies(options, db_dir.string(), &names),
        "list column families of the base"));
  }
  if (std::find(names.begin(), names.end(), kMetaCf) == names.end()) {
    names.push_back(kMetaCf);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) {
    descs.emplace_back(n, rocksdb::ColumnFamilyOptions(options));
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  PLEXUS_RETURN_IF_ERROR(FromRocks(
      rocksdb::DB::Open(options, db_dir.string(), descs, &handles, &raw_db),
      absl::StrCat("open ", db_dir.string())));
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs;
  for (size_t i = 0; i < names.size(); ++i) cfs[names[i]] = handles[i];
  int64_t rows_written = 0;
  absl::Status status = WriteDb(job, raw_db, cfs, &rows_written, phases);
  // 3. Hard-link it into place (flushing the memtables first).
  if (status.ok()) status = PLEXUS_FAILPOINT("ps.checkpoint.before_link");
  if (status.ok()) {
    rocksdb::Checkpoint* cp = nullptr;
    status = FromRocks(rocksdb::Checkpoint::Create(raw_db, &cp),
                       "create rocksdb checkpoint object");
    if (status.ok()) {
      status =
          FromRocks(cp->CreateCheckpoint(job.final_dir.string(),
                                         /*log_size_for_flush=*/0),
                    absl::StrCat("checkpoint into ", job.final_dir.string()));
      delete cp;
    }
  }
  // The crc32c of each live SST file, computed by RocksDB as it wrote it.
  absl::flat_hash_map<std::string, uint32_t> written_crcs;
  if (status.ok()) {
    std::vector<rocksdb::LiveFileMetaData> live;
    raw_db->GetLiveFilesMetaData(&live);
    for (const auto& m : live) {
      uint32_t crc = 0;
      if (WrittenCrc32c(m.file_checksum, m.file_checksum_func_name, &crc)) {
        written_crcs[m.relative_filename] = crc;
      }
    }
  }
  for (auto& [name, h] : cfs) {
    if (h != nullptr) raw_db->DestroyColumnFamilyHandle(h);
  }
  const absl::Status close =
      FromRocks(raw_db->Close(), absl::StrCat("close ", db_dir.string()));
  delete raw_db;
  PLEXUS_RETURN_IF_ERROR(status);
  PLEXUS_RETURN_IF_ERROR(close);
  RemoveAllQuietly(job.staging);
  const absl::Time linked = absl::Now();
  phases->batches_and_link =
      linked - start - phases->sort - phases->sst_write - phases->ingest;
  PLEXUS_RETURN_IF_ERROR(
      PLEXUS_FAILPOINT("ps.checkpoint.after_link_before_manifest"));
  // 4. List, checksum and fsync every file, then the manifest, last.
  // Files hard-linked from the base keep the base's size and crc32c (the
  // same inode: same bytes, already durable); only new files are read.
  absl::flat_hash_map<std::pair<uint64_t, uint64_t>, FileChecksum> base_inodes;
  for (const auto& f : job.base_files) {
    struct stat st;
    if (::stat((job.base_dir / f.path).c_str(), &st) == 0) {
      base_inodes[{st.st_dev, st.st_ino}] = {f.size_bytes, f.crc32c};
    }
  }
  ShardCheckpointInfo info;
  info.checkpoint_id = cut.checkpoint_id;
  info.step_id = cut.step_id;
  info.base_checkpoint_id = cut.base_checkpoint_id;
  info.directory = job.directory;
  VerifiedFiles verified;
  for (const auto& de : fs::directory_iterator(job.final_dir, ec)) {
    if (!de.is_regular_file()) continue;
    const std::string name = de.path().filename().string();
    struct stat st;
    if (::stat(de.path().c_str(), &st) != 0) {
      return FromErrno(errno, absl::StrCat("stat ", de.path().string()));
    }
    auto base = base_inodes.find({st.st_dev, st.st_ino});
    FileChecksum sum;
    if (base != base_inodes.end()) {
      sum = base->second;
      auto v = vouched.find({st.st_dev, st.st_ino});
      if (v != vouched.end() && v->second == sum.crc32c) {
        verified[name] = {StampOf(st), sum.crc32c};
      }
    } else {
      auto written = written_crcs.find(name);
      if (written != written_crcs.end()) {
        sum = {st.st_size, written->second};
      } else {
        PLEXUS_ASSIGN_OR_RETURN(sum, ChecksumFile(de.path().string()));
      }
      PLEXUS_RETURN_IF_ERROR(FsyncPath(de.path(), /*directory=*/false));
      info.new_bytes += sum.size_bytes;
      verified[name] = {StampOf(st), sum.crc32c};
    }
    info.total_bytes += sum.size_bytes;
    info.files.push_back({name, sum.size_bytes, sum.crc32c});
  }
  PLEXUS_RETURN_IF_ERROR(
      FromEc(ec, absl::StrCat("list ", job.final_dir.string())));
  std::sort(info.files.begin(), info.files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  for (const auto& t : cut.tables) info.num_rows += t.total_rows;
  for (const auto& v : cut.variables) info.num_rows += v.rows.size();
  PLEXUS_RETURN_IF_ERROR(FsyncPath(job.final_dir, /*directory=*/true));
  PLEXUS_RETURN_IF_ERROR(
      WriteFileDurably(job.final_dir / kManifestName, FormatManifest(info)));
  PLEXUS_RETURN_IF_ERROR(FsyncPath(root_, /*directory=*/true));
  SaveVerified(job.final_dir, verified);
  rows_written_.store(rows_written, std::memory_order_relaxed);
  phases->sync = absl::Now() - linked;
  return info;
}

absl::Status StoreImpl::WriteDb(
    const WriteJob& job, rocksdb::DB* db,
    std::map<std::string, rocksdb::ColumnFamilyHandle*>& cfs,
    int64_t* rows_written, CheckpointWritePhases* phases) {
  const ShardCut& cut = *job.cut;
  const rocksdb::Options options = DbOptions();
  rocksdb::WriteOptions wo;  // WAL on
  rocksdb::WriteBatch batch;
  auto flush = [&](bool force) -> absl::Status {
    if (batch.Count() == 0 ||
        (!force && static_cast<int64_t>(batch.GetDataSize()) <
                       options_.write_batch_bytes)) {
      return absl::OkStatus();
    }
    PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT("ps.checkpoint.write"));
    PLEXUS_RETURN_IF_ERROR(FromRocks(db->Write(wo, &batch), "write batch"));
    batch.Clear();
    return absl::OkStatus();
  };
  auto drop = [&](const std::string& name) -> absl::Status {
    auto it = cfs.find(name);
    if (it == cfs.end()) return absl::OkStatus();
    PLEXUS_RETURN_IF_ERROR(FromRocks(db->DropColumnFamily(it->second),
                                     absl::StrCat("drop ", name)));
    db->DestroyColumnFamilyHandle(it->second);
    cfs.erase(it);
    return absl::OkStatus();
  };
  auto get = [&](const std::string& name)
      -> absl::StatusOr<rocksdb::ColumnFamilyHandle*> {
    auto it = cfs.find(name);
    if (it != cfs.end()) return it->second;
    rocksdb::ColumnFamilyHandle* h = nullptr;
    PLEXUS_RETURN_IF_ERROR(
        FromRocks(db->CreateColumnFamily(
                      rocksdb::ColumnFamilyOptions(DbOptions()), name, &h),
                  absl::StrCat("create column family ", name)));
    cfs[name] = h;
    return h;
  };
  // Column families of targets that no longer exist.
  absl::flat_hash_set<std::string> wanted = {rocksdb::kDefaultColumnFamilyName,
                                             kMetaCf};
  for (const auto& t : cut.tables) wanted.insert(TableCf(t.config.name));
  for (const auto& v : cut.variables) wanted.insert(VariableCf(v.config.name));
  std::vector<std::string> stale;
  for (const auto& [name, h] : cfs) {
    if (!wanted.contains(name)) stale.push_back(name);
  }
  for (const auto& name : stale) PLEXUS_RETURN_IF_ERROR(drop(name));
  // Each table's row keys (RowKey): a complete table is written with its
  // cut's stripes, so the cut streams out in key order; changes on top of
  // a base keep the base's keys.
  PLEXUS_ASSIGN_OR_RETURN(
      auto base_key_stripes,
      ReadKeyStripes(db, cfs.contains(kMetaCf) ? cfs[kMetaCf] : nullptr));
  Enc tables_meta, key_stripes_meta;
  tables_meta.U64(cut.tables.size());
  key_stripes_meta.U64(cut.tables.size());
  for (size_t ti = 0; ti < cut.tables.size(); ++ti) {
    const TableCut& t = cut.tables[ti];
    const std::string name = TableCf(t.config.name);
    if (t.complete) PLEXUS_RETURN_IF_ERROR(drop(name));
    PLEXUS_ASSIGN_OR_RETURN(rocksdb::ColumnFamilyHandle * cf, get(name));
    int key_stripes = 0;
    if (t.complete) {
      key_stripes = options_.TEST_id_only_row_keys ? 0 : t.stripes;
    } else if (auto it = base_key_stripes.find(t.config.name);
               it != base_key_stripes.end()) {
      key_stripes = it->second;
    }
    key_stripes_meta.Str(t.config.name);
    key_stripes_meta.U32(static_cast<uint32_t>(key_stripes));
    // Row i of the cut as a RocksDB value: its record as it is.
    const size_t record_bytes = t.record_bytes();
    auto value = [&](size_t i) {
      return rocksdb::Slice(t.record(i), record_bytes);
    };
    const size_t n = t.ids.size() + t.deleted.size();
    *rows_written += static_cast<int64_t>(n);
    EncodeTable(tables_meta, t, t.total_rows);
    // A bulk write in the cut's own order copies each stripe out of the
    // engine just before writing it (cache-warm, and the copy overlaps the
    // other parts' writes); anything else needs every row first.
    const bool stream =
        n >= kSstMinRows && key_stripes > 0 && key_stripes == t.stripes &&
        t.copy_stripes != nullptr &&
        t.stripe_begin.size() == static_cast<size_t>(t.stripes) + 1;
    if (!stream && t.copy_stripes != nullptr) {
      const absl::Time copy_start = absl::Now();
      t.copy_stripes(0, t.stripes - 1);
      phases->copy += absl::Now() - copy_start;
    }
    if (n < kSstMinRows) {
      // Small changes: write batches through the WAL.
      for (size_t i = 0; i < t.ids.size(); ++i) {
        batch.Put(cf, RowKeyString(key_stripes, t.ids[i]), value(i));
        PLEXUS_RETURN_IF_ERROR(flush(false));
      }
      for (uint64_t id : t.deleted) {
        batch.Delete(cf, RowKeyString(key_stripes, id));
        PLEXUS_RETURN_IF_ERROR(flush(false));
      }
      continue;
    }
    // Bulk: sorted SST files, ingested (moved) into the column family: the
    // bytes are written once, with no WAL, memtable or compaction pass.
    // The rows in key order are cut into parts (runs of whole stripes when
    // streamed, else equal slices), each written by its own thread into one
    // file (disjoint key ranges, ingested together).
    // Two threads per core: each O_DIRECT write blocks its thread until the
    // disk has the bytes, and the other thread keeps the core busy
    // meanwhile. A cut taken with the keys' stripes is in key order
    // already; otherwise (changes on top of a base written with other
    // stripes) `order` sorts it.
    absl::Time phase_start = absl::Now();
    const int64_t cores =
        options_.cut_threads > 0 ? options_.cut_threads : int64_t{UsableCpus()};
    const size_t num_rows = t.ids.size();
    size_t parts = static_cast<size_t>(std::clamp<int64_t>(
        static_cast<int64_t>(num_rows / kSstMinRows), 1, 2 * cores));
    if (stream) parts = std::min(parts, static_cast<size_t>(t.stripes));
    std::vector<uint32_t> order;
    if (!(key_stripes > 0 && key_stripes == t.stripes)) {
      std::vector<RowKey> keys;
      keys.reserve(num_rows);
      for (uint64_t id : t.ids) keys.emplace_back(key_stripes, id);
      order.resize(num_rows);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(),
                [&](uint32_t a, uint32_t b) { return keys[a] < keys[b]; });
    }
    // Position r in key order -> row of the cut.
    auto row_at = [&](size_t r) { return order.empty() ? r : order[r]; };
    // Part p writes positions [part_begin(p), part_begin(p + 1)): a run of
    // whole stripes, [first_stripe(p), first_stripe(p + 1)), when streamed
    // (their rows are not copied yet), else an equal slice.
    auto first_stripe = [&](size_t p) {
      return static_cast<int>(p * static_cast<size_t>(t.stripes) / parts);
    };
    auto part_begin = [&](size_t p) {
      return stream ? t.stripe_begin[static_cast<size_t>(first_stripe(p))]
                    : p * num_rows / parts;
    };
    std::vector<RowKey> del;
    del.reserve(t.deleted.size());
    for (uint64_t id : t.deleted) del.emplace_back(key_stripes, id);
    std::sort(del.begin(), del.end());
    // Part p deletes del[del_at[p], del_at[p + 1]): the keys below its
    // first key and at or above the previous part's.
    std::vector<size_t> del_at(parts + 1, del.size());
    del_at[0] = 0;
    for (size_t p = 1; p < parts; ++p) {
      const RowKey first =
          stream ? RowKey::At(static_cast<uint32_t>(first_stripe(p)), 0)
                 : RowKey(key_stripes, t.ids[row_at(part_begin(p))]);
      del_at[p] = static_cast<size_t>(
          std::lower_bound(del.begin(), del.end(), first) - del.begin());
    }
    phases->sort += absl::Now() - phase_start;
    phase_start = absl::Now();
    struct Part {
      fs::path path;
      rocksdb::ExternalSstFileInfo info;
      absl::Status status;
      bool empty = true;
      absl::Duration cpu;
    };
    std::vector<Part> out(parts);
    // Bytes of a record worth prefetching ahead of its copy (the first
    // lines; the hardware prefetcher follows a long row by itself).
    const size_t prefetch_bytes = std::min<size_t>(record_bytes, 512);
    auto write_part = [&](size_t p) -> absl::Status {
      Part& part = out[p];
      part.path = job.staging / absl::StrCat("ingest-", ti, "-", p, ".sst");
      size_t r = part_begin(p);
      const size_t r_end = part_begin(p + 1);
      size_t d = del_at[p];
      const size_t d_end = del_at[p + 1];
      if (r == r_end && d == d_end) return absl::OkStatus();
      part.empty = false;
      const absl::Duration cpu_start = ThreadCpuTime();
      // Direct I/O: the rows go from our buffer to the disk without a
      // copy into the page cache (buffered where the file system has no
      // O_DIRECT, e.g. tmpfs).
      rocksdb::EnvOptions env_options(options);
      env_options.use_direct_writes = true;
      auto writer = std::make_unique<rocksdb::SstFileWriter>(
          env_options, options, cf, /*invalidate_page_cache=*/false);
      if (!writer->Open(part.path.string()).ok()) {
        RemoveAllQuietly(part.path);
        env_options.use_direct_writes = false;
        writer = std::make_unique<rocksdb::SstFileWriter>(
            env_options, options, cf, /*invalidate_page_cache=*/false);
        PLEXUS_RETURN_IF_ERROR(
            FromRocks(writer->Open(part.path.string()),
                      absl::StrCat("create ", part.path.string())));
      }
      PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT("ps.checkpoint.write"));
      // Records out of key order are scattered over the cut, every one a
      // cache miss: their lines are prefetched a few rows ahead.
      constexpr size_t kAhead = 16;
      char key[kMaxRowKeyBytes];
      int64_t since_check = 0;
      // Streamed: rows before `copied` are out of the engine; `stripe` is
      // the next one to copy.
      int stripe = stream ? first_stripe(p) : 0;
      size_t copied = stream ? r : r_end;
      while (r < r_end || d < d_end) {
        rocksdb::Status st;
        while (r < r_end && r >= copied) {
          t.copy_stripes(stripe, stripe);
          copied = t.stripe_begin[static_cast<size_t>(++stripe)];
        }
        // Streamed, row r is in the stripe just copied (no need to hash it).
        const RowKey next =
            r >= r_end ? RowKey(0, 0)
            : stream   ? RowKey::At(static_cast<uint32_t>(stripe - 1), t.ids[r])
                       : RowKey(key_stripes, t.ids[row_at(r)]);
        if (d >= d_end || (r < r_end && next < del[d])) {
          if (!order.empty() && r + kAhead < r_end) {
            const char* line = t.record(row_at(r + kAhead));
            for (size_t b = 0; b < prefetch_bytes; b += 64) {
              __builtin_prefetch(line + b);
            }
          }
          const size_t len = PutRowKey(key_stripes, next, key);
          st = writer->Put(rocksdb::Slice(key, len), value(row_at(r)));
          since_check += static_cast<int64_t>(record_bytes);
          ++r;
        } else {
          const size_t len = PutRowKey(key_stripes, del[d++], key);
          st = writer->Delete(rocksdb::Slice(key, len));
        }
        // The message is built only on failure: this runs once per row.
        if (!st.ok()) {
          return FromRocks(st, absl::StrCat("write ", part.path.string()));
        }
        if (since_check >= options_.write_batch_bytes) {
          PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT("ps.checkpoint.write"));
          since_check = 0;
        }
      }
      absl::Status finished =
          FromRocks(writer->Finish(&part.info),
                    absl::StrCat("finish ", part.path.string()));
      part.cpu = ThreadCpuTime() - cpu_start;
      return finished;
    };
    RunOnThreads(static_cast<int>(parts),
                 [&](size_t p) { out[p].status = write_part(p); });
    for (const Part& part : out) phases->sst_write_cpu += part.cpu;
    phases->sst_write += absl::Now() - phase_start;
    phase_start = absl::Now();
    // Moved (hard-linked) in and never rewritten (the global sequence
    // number is kept in the MANIFEST only), so the crc32c computed while
    // writing stays each file's and ingestion need not read them again.
    rocksdb::IngestExternalFileArg arg;
    arg.column_family = cf;
    arg.options.move_files = true;
    arg.options.write_global_seqno = false;
    arg.options.verify_file_checksum = false;
    for (const Part& part : out) {
      PLEXUS_RETURN_IF_ERROR(part.status);
      if (part.empty) continue;
      arg.external_files.push_back(part.path.string());
      arg.files_checksums.push_back(part.info.file_checksum);
      arg.files_checksum_func_names.push_back(
          part.info.file_checksum_func_name);
    }
    PLEXUS_RETURN_IF_ERROR(FromRocks(db->IngestExternalFiles({arg}),
                                     absl::StrCat("ingest into ", name)));
    phases->ingest += absl::Now() - phase_start;
  }
  Enc vars_meta;
  vars_meta.U64(cut.variables.size());
  for (const VariableCut& v : cut.variables) {
    const std::string name = VariableCf(v.config.name);
    EncodeVariable(vars_meta, v);
    if (!v.changed) {
      if (!cfs.contains(name)) {
        return absl::InternalError(absl::StrCat(
            "base checkpoint lacks unchanged variable ", v.config.name));
      }
      continue;
    }
    PLEXUS_RETURN_IF_ERROR(drop(name));
    PLEXUS_ASSIGN_OR_RETURN(rocksdb::ColumnFamilyHandle * cf, get(name));
    const int64_t chunk = DenseChunkRows(v);
    const int64_t n = v.rows.size();
    for (int64_t r = 0; r < n; r += chunk) {
      const int64_t e = std::min(n, r + chunk);
      const size_t a = static_cast<size_t>(r * v.width);
      const size_t len = static_cast<size_t>((e - r) * v.width);
      Enc value;
      if (!v.values32.empty()) value.Raw(v.values32.data() + a, len * 4);
      if (!v.values16.empty()) value.Raw(v.values16.data() + a, len * 2);
      for (const auto& s : v.slots) value.Raw(s.data() + a, len * 4);
      value.Raw(v.update_count.data() + r, static_cast<size_t>(e - r) * 8);
      batch.Put(cf, IdKey(static_cast<uint64_t>(r)), value.out());
      PLEXUS_RETURN_IF_ERROR(flush(false));
    }
    *rows_written += n;
  }
  PLEXUS_ASSIGN_OR_RETURN(rocksdb::ColumnFamilyHandle * meta, get(kMetaCf));
  Enc shard;
  shard.U64(cut.step_id);
  shard.U64(cut.newest_step);
  shard.U64(cut.checkpoint_id);
  shard.U64(cut.base_checkpoint_id);
  Enc keys;
  keys.U64(cut.applied_keys.size());
  for (const auto& [k, step] : cut.applied_keys) {
    keys.Str(k.job_id);
    keys.U64(k.owner);
    keys.Bool(k.by_closure);
    keys.U64(k.step_id);
    keys.U32(k.push_seq);
    keys.U32(k.chunk_index);
    keys.U64(step);
  }
  keys.U64(cut.incarnations.size());
  for (const auto& [w, inc] : cut.incarnations) {
    keys.U64(w);
    keys.U64(inc);
  }
  batch.Put(meta, "shard", shard.out());
  batch.Put(meta, "tables", tables_meta.out());
  batch.Put(meta, kKeyStripesRecord, key_stripes_meta.out());
  batch.Put(meta, "variables", vars_meta.out());
  batch.Put(meta, "applied_keys", keys.out());
  return flush(true);
}

absl::StatusOr<CommitResult> StoreImpl::Commit(uint64_t checkpoint_id,
                                               absl::Duration timeout) {
  MutexLock lock(&mu_);
  auto it = entries_.find(checkpoint_id);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint ", checkpoint_id, " was not prepared"));
  }
  if (!WaitForWrite(checkpoint_id, absl::Now() + timeout)) {
    return absl::DeadlineExceededError(
        absl::StrCat("checkpoint ", checkpoint_id, " is still being written"));
  }
  const Entry& e = it->second;
  if (!e.error.ok()) return e.error;
  if (e.state == CheckpointState::kAborted) {
    return absl::FailedPreconditionError(
        absl::StrCat("checkpoint ", checkpoint_id, " was abandoned"));
  }
  CommitResult r;
  r.info = e.info;
  r.write_time = e.write_time;
  r.phases = e.phases;
  return r;
}

absl::StatusOr<std::vector<uint64_t>> StoreImpl::Finalize(
    uint64_t checkpoint_id, bool published, uint32_t keep_last) {
  std::vector<uint64_t> deleted;
  std::vector<Entry> doomed;
  uint64_t trim_step = 0;
  bool trim = false;
  fs::path kept_dir;
  {
    MutexLock lock(&mu_);
    auto it = entries_.find(checkpoint_id);
    if (it == entries_.end()) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint ", checkpoint_id, " is not known"));
    }
    WaitForWrite(checkpoint_id, absl::InfiniteFuture());
    Entry& e = it->second;
    if (!published) {
      if (e.state != CheckpointState::kAborted) {
        e.state = CheckpointState::kAborted;
        e.info.files.clear();
        doomed.push_back(e);
        deleted.push_back(e.id);
      }
    } else {
      if (e.state == CheckpointState::kAborted) {
        return absl::FailedPreconditionError(
            absl::StrCat("checkpoint ", checkpoint_id,
                         " failed or was abandoned: ", e.error.ToString()));
      }
      if (e.state != CheckpointState::kPublished) {
        PLEXUS_RETURN_IF_ERROR(WriteFileDurably(
            root_ / e.directory / kPublishedName, "published\n"));
        e.state = CheckpointState::kPublished;
      }
      trim = true;
      trim_step = e.step;
      kept_dir = root_ / e.directory;
      if (keep_last > 0) {
        // Keep the newest keep_last published; delete everything older
        // than the oldest kept (leftovers included), never the one being
        // written.
        std::vector<uint64_t> pub;
        for (const auto& [id, x] : entries_) {
          if (x.state == CheckpointState::kPublished) pub.push_back(id);
        }
        if (pub.size() > keep_last) {
          const uint64_t oldest_kept = pub[pub.size() - keep_last];
          for (auto& [id, x] : entries_) {
            if (id >= oldest_kept || id == writing_) continue;
            if (x.state == CheckpointState::kAborted && x.info.files.empty() &&
                !fs::exists(root_ / x.directory)) {
              continue;
            }
            x.state = CheckpointState::kAborted;
            x.info.files.clear();
            doomed.push_back(x);
            deleted.push_back(id);
          }
        }
      }
    }
  }
  // Deleting older checkpoints unlinks inodes this one shares, which
  // changes their ctime: re-record what was verified just before.
  VerifiedFiles kept;
  if (!doomed.empty() && published) kept = CurrentVerified(kept_dir);
  for (const Entry& e : doomed) {
    engine_->InvalidateCutBase(e.id);
    RemoveDirs(e);
  }
  if (!doomed.empty() && published) RestampVerified(kept_dir, std::move(kept));
  if (trim) engine_->TrimAppliedKeys(trim_step);
  return deleted;
}

absl::StatusOr<std::unique_ptr<ShardCut>> StoreImpl::ReadCut(
    const fs::path& dir, bool lazy, int64_t* num_rows) {
  rocksdb::Options options = DbOptions();
  options.create_if_missing = false;
  options.info_log = std::make_shared<NullLogger>();  // write nothing there
  std::vector<std::string> names;
  PLEXUS_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::ListColumnFamilies(options, dir.string(), &names),
                absl::StrCat("list column families of ", dir.string())));
  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  for (const auto& n : names) {
    descs.emplace_back(n, rocksdb::ColumnFamilyOptions(options));
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  PLEXUS_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::OpenForReadOnly(options, dir.string(), descs,
                                             &handles, &raw_db),
                absl::StrCat("open ", dir.string())));
  // Shared with the row sources of a lazy restore; closed with the last.
  auto holder = std::make_shared<ReadOnlyDb>(raw_db, handles);
  rocksdb::DB* db = raw_db;
  std::map<std::string, rocksdb::ColumnFamilyHandle*> cfs;
  for (size_t i = 0; i < names.size(); ++i) cfs[names[i]] = handles[i];
  auto result = [&]() -> absl::StatusOr<std::unique_ptr<ShardCut>> {
    auto bad = [&](absl::string_view what) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", dir.string(), ": bad ", what));
    };
    if (!cfs.contains(kMetaCf)) return bad("layout (no meta)");
    rocksdb::ColumnFamilyHandle* meta = cfs[kMetaCf];
    auto get = [&](const char* key) -> absl::StatusOr<std::string> {
      std::string v;
      PLEXUS_RETURN_IF_ERROR(
          FromRocks(db->Get(rocksdb::ReadOptions(), meta, key, &v),
                    absl::StrCat("read ", key, " of ", dir.string())));
      return v;
    };
    auto cut = std::make_unique<ShardCut>();
    PLEXUS_ASSIGN_OR_RETURN(std::string shard, get("shard"));
    Dec ds(shard);
    cut->step_id = ds.U64();
    cut->newest_step = ds.U64();
    cut->checkpoint_id = ds.U64();
    ds.U64();  // its base
    if (!ds.ok()) return bad("shard record");
    PLEXUS_ASSIGN_OR_RETURN(std::string keys, get("applied_keys"));
    Dec dk(keys);
    const uint64_t nkeys = dk.U64();
    for (uint64_t i = 0; i < nkeys && dk.ok(); ++i) {
      UpdateKey k;
      k.job_id = dk.Str();
      k.owner = dk.U64();
      k.by_closure = dk.Bool();
      k.step_id = dk.U64();
      k.push_seq = dk.U32();
      k.chunk_index = dk.U32();
      const uint64_t step = dk.U64();
      cut->applied_keys.emplace_back(std::move(k), step);
    }
    const uint64_t ninc = dk.U64();
    for (uint64_t i = 0; i < ninc && dk.ok(); ++i) {
      const uint64_t w = dk.U64();
      cut->incarnations.emplace_back(w, dk.U64());
    }
    if (!dk.ok()) return bad("applied keys");
    PLEXUS_ASSIGN_OR_RETURN(auto key_stripes, ReadKeyStripes(db, meta));
    PLEXUS_ASSIGN_OR_RETURN(std::string tables, get("tables"));
    Dec dt(tables);
    const uint64_t ntables = dt.U64();
    for (uint64_t i = 0; i < ntables && dt.ok(); ++i) {
      TableCut t;
      int64_t total = 0;
      DecodeTable(dt, &t, &total);
      if (!dt.ok()) break;
      t.complete = true;
      auto cf = cfs.find(TableCf(t.config.name));
      if (cf == cfs.end()) return bad(absl::StrCat("table ", t.config.name));
      const auto ks = key_stripes.find(t.config.name);
      const int stripes = ks == key_stripes.end() ? 0 : ks->second;
      if (lazy) {
        t.total_rows = total;
        t.source = std::make_shared<RocksRowSource>(holder, cf->second,
                                                    t.row_floats, stripes);
        *num_rows += total;
        cut->tables.push_back(std::move(t));
        continue;
      }
      const size_t record_bytes = t.record_bytes();
      t.ids.reserve(static_cast<size_t>(total));
      t.records.reserve(static_cast<size_t>(total) * record_bytes);
      std::unique_ptr<rocksdb::Iterator> iter(
          db->NewIterator(rocksdb::ReadOptions(), cf->second));
      for (iter->SeekToFirst(); iter->Valid(); iter->Next()) {
        const rocksdb::Slice v = iter->value();
        if (iter->key().size() != RowKeyBytes(stripes) ||
            v.size() != record_bytes) {
          return bad(absl::StrCat("row of table ", t.config.name));
        }
        t.ids.push_back(KeyId(Sv(iter->key())));
        t.records.insert(t.records.end(), v.data(), v.data() + v.size());
      }
      PLEXUS_RETURN_IF_ERROR(FromRocks(
          iter->status(), absl::StrCat("read table ", t.config.name)));
      t.total_rows = static_cast<int64_t>(t.ids.size());
      *num_rows += t.total_rows;
      cut->tables.push_back(std::move(t));
    }
    if (!dt.ok()) return bad("tables record");
    PLEXUS_ASSIGN_OR_RETURN(std::string vars, get("variables"));
    Dec dv(vars);
    const uint64_t nvars = dv.U64();
    for (uint64_t i = 0; i < nvars && dv.ok(); ++i) {
      VariableCut v;
      DecodeVariable(dv, &v);
      if (!dv.ok()) break;
      auto cf = cfs.find(VariableCf(v.config.name));
      if (cf == cfs.end() || v.rows.size() < 0 || v.width < 0) {
        return bad(absl::StrCat("variable ", v.config.name));
      }
      PLEXUS_ASSIGN_OR_RETURN(auto optimizer,
                              CreateOptimizer(v.config.optimizer),
                              absl::StrCat("variable ", v.config.name));
      const bool fp32 = v.config.storage_dtype == DType::kFloat32;
      const size_t n = static_cast<size_t>(v.rows.size() * v.width);
      if (fp32) {
        v.values32.resize(n);
      } else {
        v.values16.resize(n);
      }
      v.slots.assign(static_cast<size_t>(optimizer->num_slots()),
                     std::vector<float>(n));
      v.update_count.resize(static_cast<size_t>(v.rows.size()));
      const int64_t chunk = DenseChunkRows(v);
      int64_t expect = 0;
      std::unique_ptr<rocksdb::Iterator> iter(
          db->NewIterator(rocksdb::ReadOptions(), cf->second));
      for (iter->SeekToFirst(); iter->Valid(); iter->Next()) {
        const int64_t r = static_cast<int64_t>(KeyId(Sv(iter->key())));
        const int64_t e = std::min(v.rows.size(), r + chunk);
        if (r != expect || e <= r) {
          return bad(absl::StrCat("chunk of variable ", v.config.name));
        }
        const size_t a = static_cast<size_t>(r * v.width);
        const size_t len = static_cast<size_t>((e - r) * v.width);
        Dec d(Sv(iter->value()));
        if (fp32)
          d.Raw(v.values32.data() + a, len * 4);
        else
          d.Raw(v.values16.data() + a, len * 2);
        for (auto& s : v.slots) d.Raw(s.data() + a, len * 4);
        d.Raw(v.update_count.data() + r, static_cast<size_t>(e - r) * 8);
        if (!d.ok()) return bad(absl::StrCat("variable ", v.config.name));
        expect = e;
      }
      PLEXUS_RETURN_IF_ERROR(FromRocks(
          iter->status(), absl::StrCat("read variable ", v.config.name)));
      if (expect != v.rows.size()) {
        return bad(absl::StrCat("rows of variable ", v.config.name));
      }
      *num_rows += v.rows.size();
      cut->variables.push_back(std::move(v));
    }
    if (!dv.ok()) return bad("variables record");
    return cut;
  }();
  return result;
}

absl::StatusOr<RestoreResult> StoreImpl::Restore(const RestoreOptions& o) {
  const absl::Time start = absl::Now();
  std::string directory = o.directory;
  {
    MutexLock lock(&mu_);
    if (writing_ != 0 || restoring_) {
      return absl::FailedPreconditionError(
          "a checkpoint is being written or restored");
    }
    if (directory.empty()) {
      auto it = entries_.find(o.checkpoint_id);
      if (it == entries_.end() ||
          it->second.state == CheckpointState::kAborted) {
        return absl::NotFoundError(
            absl::StrCat("no checkpoint ", o.checkpoint_id, " on this shard"));
      }
      directory = it->second.directory;
    }
    restoring_ = true;
  }
  auto body = [&]() -> absl::StatusOr<RestoreResult> {
    if (!IsSafeRelative(directory, 1) || directory == kStagingDir) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint directory '", directory, "' is outside the root"));
    }
    const fs::path dir = root_ / directory;
    if (!fs::is_directory(dir)) {
      return absl::NotFoundError(
          absl::StrCat("no checkpoint directory ", dir.string()));
    }
    std::vector<CheckpointFileInfo> files = o.files;
    uint64_t id = o.checkpoint_id;
    if (files.empty()) {
      PLEXUS_ASSIGN_OR_RETURN(ShardCheckpointInfo info, ReadManifest(dir));
      files = std::move(info.files);
      if (id == 0) id = info.checkpoint_id;
    }
    // Verify before touching anything: every file's size, and the crc32c
    // of every file this shard has not verified unchanged before
    // (PLEXUS_VERIFIED).
    RestoreResult r;
    const VerifiedFiles known =
        o.skip_checksum_verification || o.full_verification ? VerifiedFiles()
                                                            : LoadVerified(dir);
    VerifiedFiles verified;
    for (const auto& f : files) {
      if (!IsSafeRelative(f.path, 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("checkpoint file path '", f.path, "' is invalid"));
      }
      const fs::path p = dir / f.path;
      auto stamp = Stamp(p);
      if (!stamp.ok()) {
        return absl::DataLossError(
            absl::StrCat("checkpoint file ", p.string(),
                         " is missing: ", stamp.status().message()));
      }
      if (stamp->size != f.size_bytes) {
        return absl::DataLossError(
            absl::StrCat("checkpoint file ", p.string(), " has ", stamp->size,
                         " bytes, expected ", f.size_bytes));
      }
      if (o.skip_checksum_verification) continue;
      auto k = known.find(f.path);
      if (k != known.end() && k->second.crc32c == f.crc32c &&
          k->second.stamp == *stamp) {
        verified[f.path] = k->second;
        ++r.files_trusted;
        continue;
      }
      auto sum = ChecksumFile(p.string());
      if (!sum.ok()) {
        return absl::DataLossError(absl::StrCat("checkpoint file ", p.string(),
                                                ": ", sum.status().message()));
      }
      if (sum->crc32c != f.crc32c) {
        return absl::DataLossError(absl::StrCat("checkpoint file ", p.string(),
                                                " has crc32c ", sum->crc32c,
                                                ", expected ", f.crc32c));
      }
      r.bytes_verified += sum->size_bytes;
      verified[f.path] = {*stamp, f.crc32c};
    }
    if (r.bytes_verified > 0) SaveVerified(dir, verified);
    r.verify_time = absl::Now() - start;
    const absl::Time load_start = absl::Now();
    PLEXUS_RETURN_IF_ERROR(PLEXUS_FAILPOINT("ps.checkpoint.restore.load"));
    PLEXUS_ASSIGN_OR_RETURN(std::unique_ptr<ShardCut> cut,
                            ReadCut(dir, o.lazy, &r.num_rows));
    if (id != 0 && cut->checkpoint_id != id) {
      return absl::DataLossError(
          absl::StrCat("checkpoint directory ", dir.string(),
                       " holds checkpoint ", cut->checkpoint_id, ", not ", id));
    }
    PLEXUS_RETURN_IF_ERROR(engine_->ReplaceState(*cut),
                           absl::StrCat("restore ", dir.string()));
    r.checkpoint_id = cut->checkpoint_id;
    r.step_id = cut->step_id;
    r.load_time = absl::Now() - load_start;
    return r;
  }();
  MutexLock lock(&mu_);
  restoring_ = false;
  return body;
}

std::vector<CheckpointListing> StoreImpl::List() const {
  MutexLock lock(&mu_);
  std::vector<CheckpointListing> out;
  for (auto it = entries_.rbegin(); it != entries_.rend(); ++it) {
    const Entry& e = it->second;
    CheckpointListing l;
    l.checkpoint_id = e.id;
    l.step_id = e.step;
    l.state = e.state;
    l.info = e.info;
    out.push_back(std::move(l));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::unique_ptr<CheckpointStore>> CheckpointStore::Open(
    Engine* engine, const CheckpointStoreOptions& options) {
  if (engine == nullptr || options.root.empty()) {
    return absl::InvalidArgumentError(
        "checkpoint store: engine and root are required");
  }
  if (options.write_batch_bytes <= 0 || options.cut_threads < 0) {
    return absl::InvalidArgumentError(
        "checkpoint store: write_batch_bytes must be > 0, cut_threads >= 0");
  }
  auto store = std::make_unique<StoreImpl>(engine, options);
  PLEXUS_RETURN_IF_ERROR(store->Init());
  return store;
}

}  // namespace plexus::ps
