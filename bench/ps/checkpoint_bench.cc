// checkpoint_bench: one shard's checkpoints (ps/storage/checkpoint.h) on a
// real disk, next to a plain sequential write of the same bytes to the same
// folder in the same run.
//
//   checkpoint_bench [--rows 1000000] [--large_rows 0] [--dim 64]
//                    [--optimizer sgd|adagrad|adam] [--dir DIR]
//                    [--samples 3] [--full_only] [--json FILE]
//
// For each table size (rows, then large_rows if > 0):
//  * prepare: Prepare's latency (the cut's buffers are allocated and
//    faulted in, then the cut is taken);
//  * pause: how long the cut held pushes back (ShardCut::pause), and the
//    latency of a concurrent pusher's pushes from Prepare until the write
//    was done (p50, p99, slowest: a push into a stripe being copied waits
//    for that stripe's copy, and saves pre-images of rows not copied yet);
//  * full checkpoint: bytes, write time and GB/s (Commit), against the
//    sequential write (write(2) in 4 MiB blocks, fsync of the file and its
//    folder; buffered and O_DIRECT) of as many bytes to the same folder:
//    `samples` of each, alternating (the disk's speed drifts), medians and
//    the ratio of the medians, and where the write time of the checkpoint
//    nearest the median went (CheckpointWritePhases); once with the shard
//    doing nothing else ("alone", the checkpoint writer against the disk)
//    and once while a trainer pushes without a break (one thread; on two
//    cores it takes half the machine from the writer);
//  * incremental checkpoints after 1 K / 10 K / 100 K changed rows: time,
//    rows written, new bytes;
//  * restore of the newest checkpoint into a fresh engine (a restarted
//    shard), with the time to the first served pull (restore + one pull):
//    lazy (rows fault in) with full verification (every file read and
//    checksummed: the cold figure), lazy with the default verification
//    (files this shard checksummed when it wrote them and unchanged since
//    are not read again) and eager. The page cache is not dropped.
// --full_only stops after the full checkpoints.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "ps/storage/checkpoint.h"
#include "ps/storage/engine.h"

namespace plexus::ps {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double Ms(absl::Duration d) { return absl::ToDoubleMilliseconds(d); }
double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct Flags {
  int64_t rows = 1000000;
  int64_t large_rows = 0;
  int64_t dim = 64;
  std::string optimizer = "sgd";
  std::string dir;
  std::string json;
  int samples = 3;
  bool full_only = false;
};

struct Incremental {
  int64_t changed = 0;
  double ms = 0;
  double pause_ms = 0;
  int64_t rows_written = 0;
  int64_t new_bytes = 0;
};

// Full checkpoints against sequential writes of as many bytes, `samples` of
// each, alternating: GB/s per sample, medians, and where the write time of
// the checkpoint nearest the median went.
struct Throughput {
  std::vector<double> ckpt_samples, seq_samples, direct_samples, write_s;
  std::vector<CheckpointWritePhases> phase_samples;
  double ckpt = 0, seq = 0, direct = 0;  // medians
  double median_write_s = 0;
  CheckpointWritePhases phases;

  void Summarise();
};

struct Result {
  int64_t rows = 0;
  double fill_s = 0;
  double pause_ms = 0;
  // Prepare's latency (sizing the cut's buffers, then the cut), median.
  double prepare_ms = 0;
  double max_push_ms_during_cut = 0;
  // The concurrent pushes' latency percentiles over the same windows.
  double push_p50_ms = 0, push_p99_ms = 0;
  int64_t bytes = 0;
  // Full checkpoints alone and while a trainer pushes.
  Throughput alone, loaded;
  std::vector<Incremental> incremental;
  double full_restore_ms = 0;
  double full_verify_ms = 0;
  int64_t full_verified_bytes = 0;
  double full_first_pull_ms = 0;
  double restore_ms = 0;
  double verify_ms = 0;
  int64_t verified_bytes = 0;
  int64_t trusted_files = 0;
  double first_pull_ms = 0;
  double eager_restore_ms = 0;
  double eager_first_pull_ms = 0;
};

OptimizerConfig MakeOptimizer(const std::string& name) {
  using K = OptimizerConfig::Kind;
  if (name == "adagrad") {
    return {.kind = K::kAdagrad,
            .learning_rate = 0.01,
            .initial_accumulator_value = 0.1,
            .epsilon = 1e-7};
  }
  if (name == "adam") {
    return {.kind = K::kAdam,
            .learning_rate = 0.001,
            .epsilon = 1e-8,
            .beta1 = 0.9,
            .beta2 = 0.999};
  }
  return {.kind = K::kSgd, .learning_rate = 0.01};
}

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "%s: %s\n", what, s.ToString().c_str());
    std::exit(1);
  }
}

// Pushes `ids` (grads 0.001) in batches of 65536.
void PushIds(Engine& e, const std::vector<uint64_t>& ids, int64_t dim) {
  constexpr size_t kBatch = 65536;
  std::vector<float> g(kBatch * static_cast<size_t>(dim), 0.001f);
  for (size_t i = 0; i < ids.size(); i += kBatch) {
    const size_t n = std::min(kBatch, ids.size() - i);
    const int64_t shape[2] = {static_cast<int64_t>(n), dim};
    TensorView view{DType::kFloat32, shape,
                    absl::string_view(reinterpret_cast<const char*>(g.data()),
                                      n * dim * 4)};
    SparseGradient sg{"emb", absl::MakeConstSpan(ids).subspan(i, n), view};
    Check(e.Push({.exactly_once = false}, {}, {&sg, 1}).status(), "push");
  }
}

// Writes `bytes` to a new file in 4 MiB write(2)s, then fsyncs it and its
// folder (as a checkpoint fsyncs its files, its folder and the manifest's);
// GB/s. `direct`: with O_DIRECT (as the checkpoint writes its SST files;
// on this kind of virtual disk often faster than the page cache's
// write-back), rounded up to whole 4 KiB blocks. The file is removed
// afterwards (not timed); 0 if it cannot be written.
double SequentialWriteGbps(const fs::path& path, int64_t bytes, bool direct) {
  constexpr size_t kBlock = size_t{4} << 20;
  if (direct) bytes = (bytes + 4095) / 4096 * 4096;
  std::unique_ptr<char, decltype(&std::free)> block(
      static_cast<char*>(std::aligned_alloc(4096, kBlock)), &std::free);
  std::memset(block.get(), 'x', kBlock);
  const auto start = Clock::now();
  const int fd =
      ::open(path.c_str(),
             O_WRONLY | O_CREAT | O_TRUNC | (direct ? O_DIRECT : 0), 0644);
  if (fd < 0) return 0;
  int64_t left = bytes;
  while (left > 0) {
    const size_t n = static_cast<size_t>(std::min<int64_t>(left, kBlock));
    if (::write(fd, block.get(), n) != static_cast<ssize_t>(n)) {
      ::close(fd);
      fs::remove(path);
      return 0;
    }
    left -= static_cast<int64_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  const int dir = ::open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  const double s = SecondsSince(start);
  fs::remove(path);
  return static_cast<double>(bytes) / s / 1e9;
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void Throughput::Summarise() {
  ckpt = Median(ckpt_samples);
  seq = Median(seq_samples);
  direct = Median(direct_samples);
  median_write_s = Median(write_s);
  size_t nearest = 0;
  for (size_t i = 1; i < write_s.size(); ++i) {
    if (std::abs(write_s[i] - median_write_s) <
        std::abs(write_s[nearest] - median_write_s)) {
      nearest = i;
    }
  }
  if (!phase_samples.empty()) phases = phase_samples[nearest];
}

Result RunSize(const Flags& f, int64_t rows, const fs::path& root) {
  Result r;
  r.rows = rows;
  fs::remove_all(root);
  auto engine = *CreateEngine();
  TableConfig c;
  c.name = "emb";
  c.dim = f.dim;
  c.optimizer = MakeOptimizer(f.optimizer);
  c.consistency = {.mode = ConsistencyMode::kAsync};
  Check(engine->CreateTable({c}).status(), "create table");
  std::vector<uint64_t> ids(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) ids[i] = static_cast<uint64_t>(i);
  auto t0 = Clock::now();
  PushIds(*engine, ids, f.dim);
  r.fill_s = SecondsSince(t0);

  auto store = *CheckpointStore::Open(engine.get(), {.root = root.string()});
  // Each sample: a full checkpoint alone, then the sequential writes (same
  // disk, same fsync discipline); then the same while a trainer pushes
  // without a break (one thread: a core of its own where there are many,
  // half the machine on two cores). The disk's speed drifts, so samples
  // alternate and each figure is a median. Under load the pause is
  // measured too: the slowest push from Prepare until the write is done
  // (with deferred copies a push that changes a stripe not yet copied
  // copies it first).
  uint64_t id = 0;
  std::vector<double> pause_ms, prepare_ms;
  std::atomic<int64_t> max_push_us{0};
  std::vector<double> push_ms;  // every push measured (pusher thread, joined)
  auto checkpoint = [&](Throughput* t, bool measure_pause) {
    ++id;
    const absl::Time prepare_start = absl::Now();
    auto p = store->Prepare({.checkpoint_id = id});
    Check(p.status(), "prepare");
    if (measure_pause) {
      prepare_ms.push_back(Ms(absl::Now() - prepare_start));
      pause_ms.push_back(Ms(p->cut_pause));
    }
    auto commit = store->Commit(id, absl::InfiniteDuration());
    Check(commit.status(), "commit");
    // Keep only this one: the disk holds one checkpoint at a time.
    Check(store->Finalize(id, true, 1).status(), "finalize");
    r.bytes = commit->info.total_bytes;
    t->write_s.push_back(absl::ToDoubleSeconds(commit->write_time));
    t->ckpt_samples.push_back(static_cast<double>(r.bytes) / t->write_s.back() /
                              1e9);
    t->phase_samples.push_back(commit->phases);
    t->seq_samples.push_back(
        SequentialWriteGbps(root / "sequential.bin", r.bytes, false));
    t->direct_samples.push_back(
        SequentialWriteGbps(root / "sequential.bin", r.bytes, true));
  };
  for (int sample = 0; sample < f.samples; ++sample) {
    checkpoint(&r.alone, false);
    std::atomic<bool> stop{false}, measuring{false};
    std::thread pusher([&] {
      std::mt19937_64 rng(1 + sample);
      std::vector<uint64_t> batch(256);
      std::vector<float> g(256 * static_cast<size_t>(f.dim), 0.001f);
      const int64_t shape[2] = {256, f.dim};
      TensorView view{DType::kFloat32, shape,
                      absl::string_view(reinterpret_cast<const char*>(g.data()),
                                        g.size() * 4)};
      while (!stop.load()) {
        for (auto& i : batch) i = rng() % static_cast<uint64_t>(rows);
        std::sort(batch.begin(), batch.end());
        batch.erase(std::unique(batch.begin(), batch.end()), batch.end());
        batch.resize(256, batch.back());
        SparseGradient sg{"emb", batch, view};
        const auto s = Clock::now();
        (void)engine->Push({.exactly_once = false}, {}, {&sg, 1});
        const int64_t us =
            std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() -
                                                                  s)
                .count();
        if (measuring.load()) {
          push_ms.push_back(static_cast<double>(us) / 1000.0);
          int64_t cur = max_push_us.load();
          while (us > cur && !max_push_us.compare_exchange_weak(cur, us)) {
          }
        }
      }
    });
    measuring = true;
    checkpoint(&r.loaded, true);
    measuring = false;
    stop = true;
    pusher.join();
  }
  r.alone.Summarise();
  r.loaded.Summarise();
  r.pause_ms = Median(pause_ms);
  r.prepare_ms = Median(prepare_ms);
  r.max_push_ms_during_cut = static_cast<double>(max_push_us.load()) / 1000.0;
  if (!push_ms.empty()) {
    std::sort(push_ms.begin(), push_ms.end());
    r.push_p50_ms = push_ms[push_ms.size() / 2];
    r.push_p99_ms = push_ms[push_ms.size() * 99 / 100];
  }
  if (f.full_only) {
    fs::remove_all(root);
    return r;
  }
  // Absorb the rows the pusher changed during the writes (not reported).
  Check(store->Prepare({.checkpoint_id = id + 1, .base_checkpoint_id = id})
            .status(),
        "prepare");
  Check(store->Commit(id + 1, absl::InfiniteDuration()).status(), "commit");
  Check(store->Finalize(id + 1, true, 0).status(), "finalize");
  ++id;

  std::mt19937_64 rng(2);
  for (int64_t changed : {int64_t{1000}, int64_t{10000}, int64_t{100000}}) {
    if (changed > rows) break;
    std::vector<uint64_t> dirty(ids);
    std::shuffle(dirty.begin(), dirty.end(), rng);
    dirty.resize(static_cast<size_t>(changed));
    PushIds(*engine, dirty, f.dim);
    Incremental inc;
    inc.changed = changed;
    const auto s = Clock::now();
    auto ip =
        store->Prepare({.checkpoint_id = id + 1, .base_checkpoint_id = id});
    Check(ip.status(), "prepare incremental");
    auto ic = store->Commit(id + 1, absl::InfiniteDuration());
    Check(ic.status(), "commit incremental");
    inc.ms = SecondsSince(s) * 1000;
    inc.pause_ms = Ms(ip->cut_pause);
    inc.rows_written = store->TEST_rows_written();
    inc.new_bytes = ic->info.new_bytes;
    Check(store->Finalize(id + 1, true, 0).status(), "finalize incremental");
    ++id;
    r.incremental.push_back(inc);
  }
  store.reset();
  engine.reset();

  // Restore the newest (incremental) checkpoint into a fresh engine, as a
  // restarted shard does: lazily (rows fault in) reading and checksumming
  // every file (full verification), lazily trusting the files this shard
  // checksummed when it wrote them and that are unchanged since (the
  // default), and eagerly (default verification); the first pull is of one
  // row.
  enum Mode { kLazyFull, kLazy, kEager };
  for (Mode mode : {kLazyFull, kLazy, kEager}) {
    auto fresh = *CreateEngine();
    auto s2 = *CheckpointStore::Open(fresh.get(), {.root = root.string()});
    const auto rs = Clock::now();
    auto restored = s2->Restore({.checkpoint_id = id,
                                 .full_verification = mode == kLazyFull,
                                 .lazy = mode != kEager});
    Check(restored.status(), "restore");
    const double restore_ms = SecondsSince(rs) * 1000;
    const uint64_t probe = 12345 % static_cast<uint64_t>(rows);
    SparseRead read{"emb", {&probe, 1}, false};
    auto pulled = fresh->Pull({}, {}, {&read, 1});
    Check(pulled.status(), "pull");
    if (!pulled->sparse[0].missing_positions.empty()) {
      std::fprintf(stderr, "restored row %llu is missing\n",
                   static_cast<unsigned long long>(probe));
      std::exit(1);
    }
    const double first_pull_ms = SecondsSince(rs) * 1000;
    if (mode == kLazyFull) {
      r.full_restore_ms = restore_ms;
      r.full_verify_ms = Ms(restored->verify_time);
      r.full_verified_bytes = restored->bytes_verified;
      r.full_first_pull_ms = first_pull_ms;
    } else if (mode == kLazy) {
      r.restore_ms = restore_ms;
      r.verify_ms = Ms(restored->verify_time);
      r.verified_bytes = restored->bytes_verified;
      r.trusted_files = restored->files_trusted;
      r.first_pull_ms = first_pull_ms;
    } else {
      r.eager_restore_ms = restore_ms;
      r.eager_first_pull_ms = first_pull_ms;
    }
  }
  fs::remove_all(root);
  return r;
}

std::string Samples(const std::vector<double>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    absl::StrAppendFormat(&out, "%s%.3f", i ? " " : "", v[i]);
  }
  return out;
}

void PrintThroughput(const char* label, const Throughput& t) {
  std::printf(
      "  %s, GB/s: checkpoint %s | sequential write %s | O_DIRECT %s\n"
      "  %s: checkpoint median %.2f s = %.3f GB/s | sequential write median "
      "%.3f GB/s, ratio %.0f%% | O_DIRECT sequential write median %.3f GB/s, "
      "ratio %.0f%%\n"
      "    write phases: copy %.2f s, sort %.2f s, SST write %.2f s (CPU "
      "%.2f s), ingest %.2f s, batches+link %.2f s, fsync+manifest %.2f s\n",
      label, Samples(t.ckpt_samples).c_str(), Samples(t.seq_samples).c_str(),
      Samples(t.direct_samples).c_str(), label, t.median_write_s, t.ckpt, t.seq,
      100.0 * t.ckpt / t.seq, t.direct, 100.0 * t.ckpt / t.direct,
      absl::ToDoubleSeconds(t.phases.copy),
      absl::ToDoubleSeconds(t.phases.sort),
      absl::ToDoubleSeconds(t.phases.sst_write),
      absl::ToDoubleSeconds(t.phases.sst_write_cpu),
      absl::ToDoubleSeconds(t.phases.ingest),
      absl::ToDoubleSeconds(t.phases.batches_and_link),
      absl::ToDoubleSeconds(t.phases.sync));
}

// The JSON object of a Throughput.
std::string ThroughputJson(const Throughput& t) {
  const CheckpointWritePhases& p = t.phases;
  return absl::StrCat(
      "{\"write_s\":", t.median_write_s, ",\"checkpoint_gbps\":", t.ckpt,
      ",\"sequential_write_gbps\":", t.seq, ",\"ratio\":", t.ckpt / t.seq,
      ",\"direct_sequential_write_gbps\":", t.direct,
      ",\"direct_ratio\":", t.ckpt / t.direct, ",\"checkpoint_gbps_samples\":[",
      absl::StrJoin(t.ckpt_samples, ","),
      "],\"sequential_write_gbps_samples\":[",
      absl::StrJoin(t.seq_samples, ","),
      "],\"direct_sequential_write_gbps_samples\":[",
      absl::StrJoin(t.direct_samples, ","),
      "],\"phases_s\":{\"copy\":", absl::ToDoubleSeconds(p.copy),
      ",\"sort\":", absl::ToDoubleSeconds(p.sort),
      ",\"sst_write\":", absl::ToDoubleSeconds(p.sst_write),
      ",\"sst_write_cpu\":", absl::ToDoubleSeconds(p.sst_write_cpu),
      ",\"ingest\":", absl::ToDoubleSeconds(p.ingest),
      ",\"batches_and_link\":", absl::ToDoubleSeconds(p.batches_and_link),
      ",\"sync\":", absl::ToDoubleSeconds(p.sync), "}}");
}

int Main(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--rows") {
      f.rows = std::atoll(next().c_str());
    } else if (a == "--large_rows") {
      f.large_rows = std::atoll(next().c_str());
    } else if (a == "--dim") {
      f.dim = std::atoll(next().c_str());
    } else if (a == "--optimizer") {
      f.optimizer = next();
    } else if (a == "--dir") {
      f.dir = next();
    } else if (a == "--json") {
      f.json = next();
    } else if (a == "--samples") {
      f.samples = std::atoi(next().c_str());
    } else if (a == "--full_only") {
      f.full_only = true;
    } else {
      std::fprintf(stderr,
                   "usage: checkpoint_bench [--rows N] [--large_rows N] "
                   "[--dim D] [--optimizer sgd|adagrad|adam] [--dir DIR] "
                   "[--samples N] [--full_only] [--json FILE]\n");
      return 2;
    }
  }
  if (f.rows < 1 || f.dim < 1 || f.samples < 1) {
    std::fprintf(stderr, "--rows, --dim and --samples must be >= 1\n");
    return 2;
  }
  fs::path base = f.dir.empty()
                      ? fs::temp_directory_path() /
                            absl::StrCat("checkpoint_bench.", ::getpid())
                      : fs::path(f.dir);
  fs::create_directories(base);
  std::vector<Result> results;
  for (int64_t rows : {f.rows, f.large_rows}) {
    if (rows <= 0) continue;
    std::printf("table: %lld rows x dim %lld (%s), folder %s\n",
                static_cast<long long>(rows), static_cast<long long>(f.dim),
                f.optimizer.c_str(), base.c_str());
    Result r = RunSize(f, rows, base / "checkpoints");
    std::printf(
        "  fill %.1f s | prepare %.1f ms, cut pause %.1f ms (concurrent "
        "pushes during the checkpoints: p50 %.2f ms, p99 %.2f ms, slowest "
        "%.1f ms)\n"
        "  full checkpoint %.1f MB, %zu samples, each: alone, then while a "
        "trainer pushes; each followed by sequential writes of as many "
        "bytes\n",
        r.fill_s, r.prepare_ms, r.pause_ms, r.push_p50_ms, r.push_p99_ms,
        r.max_push_ms_during_cut, static_cast<double>(r.bytes) / 1e6,
        r.alone.ckpt_samples.size());
    PrintThroughput("alone", r.alone);
    PrintThroughput("while a trainer pushes", r.loaded);
    for (const auto& inc : r.incremental) {
      std::printf(
          "  incremental, %7lld changed rows: %8.1f ms (pause %.2f ms), "
          "%lld rows written, %.1f MB new\n",
          static_cast<long long>(inc.changed), inc.ms, inc.pause_ms,
          static_cast<long long>(inc.rows_written),
          static_cast<double>(inc.new_bytes) / 1e6);
    }
    if (f.full_only) {
      results.push_back(std::move(r));
      continue;
    }
    std::printf(
        "  lazy restore, full verification (every file read and "
        "checksummed, %.1f MB): %.1f ms (verify %.1f ms) | first pull served "
        "after %.1f ms\n"
        "  lazy restore, default (%lld files unchanged since this shard "
        "checksummed them are trusted, %.1f MB read): %.1f ms (verify %.1f "
        "ms) | first pull served after %.1f ms\n"
        "  eager restore %.1f ms | first pull served after %.1f ms\n",
        static_cast<double>(r.full_verified_bytes) / 1e6, r.full_restore_ms,
        r.full_verify_ms, r.full_first_pull_ms,
        static_cast<long long>(r.trusted_files),
        static_cast<double>(r.verified_bytes) / 1e6, r.restore_ms, r.verify_ms,
        r.first_pull_ms, r.eager_restore_ms, r.eager_first_pull_ms);
    results.push_back(std::move(r));
  }
  fs::remove_all(base / "checkpoints");
  if (f.dir.empty()) fs::remove_all(base);
  if (!f.json.empty()) {
    std::string j = "{\"benchmark\":\"checkpoint_bench\",\"dim\":";
    absl::StrAppend(&j, f.dim, ",\"optimizer\":\"", f.optimizer,
                    "\",\"sizes\":[");
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      absl::StrAppend(
          &j, i ? "," : "", "{\"rows\":", r.rows, ",\"pause_ms\":", r.pause_ms,
          ",\"prepare_ms\":", r.prepare_ms,
          ",\"max_push_ms_during_cut\":", r.max_push_ms_during_cut,
          ",\"push_p50_ms\":", r.push_p50_ms,
          ",\"push_p99_ms\":", r.push_p99_ms, ",\"bytes\":", r.bytes,
          ",\"alone\":", ThroughputJson(r.alone),
          ",\"while_pushing\":", ThroughputJson(r.loaded),
          ",\"incremental\":[");
      for (size_t k = 0; k < r.incremental.size(); ++k) {
        const Incremental& inc = r.incremental[k];
        absl::StrAppend(&j, k ? "," : "", "{\"changed_rows\":", inc.changed,
                        ",\"ms\":", inc.ms, ",\"pause_ms\":", inc.pause_ms,
                        ",\"rows_written\":", inc.rows_written,
                        ",\"new_bytes\":", inc.new_bytes, "}");
      }
      absl::StrAppend(
          &j, "],\"full_verification_restore_ms\":", r.full_restore_ms,
          ",\"full_verification_verify_ms\":", r.full_verify_ms,
          ",\"full_verification_bytes\":", r.full_verified_bytes,
          ",\"full_verification_first_pull_ms\":", r.full_first_pull_ms);
      absl::StrAppend(&j, ",\"restore_ms\":", r.restore_ms,
                      ",\"verify_ms\":", r.verify_ms,
                      ",\"verified_bytes\":", r.verified_bytes,
                      ",\"trusted_files\":", r.trusted_files,
                      ",\"first_pull_ms\":", r.first_pull_ms,
                      ",\"eager_restore_ms\":", r.eager_restore_ms,
                      ",\"eager_first_pull_ms\":", r.eager_first_pull_ms, "}");
    }
    j += "]}\n";
    FILE* out = std::fopen(f.json.c_str(), "w");
    if (out == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", f.json.c_str());
      return 1;
    }
    std::fputs(j.c_str(), out);
    std::fclose(out);
  }
  return 0;
}

}  // namespace
}  // namespace plexus::ps

int main(int argc, char** argv) { return plexus::ps::Main(argc, argv); }
