// Checkpoints of one shard: consistent cuts, RocksDB staging + hard links,
// incremental writes, verification, restore, retention and the failure
// paths (disk full, crash before the link / before the manifest, a flipped
// byte). Real RocksDB in temporary folders.
#include "ps/storage/checkpoint.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/failpoint.h"
#include "ps/storage/crc32c.h"
#include "ps/storage/cut.h"
#include "ps/storage/engine.h"
#include "ps/storage/huge_pages.h"
#include "tests/ps/storage/test_util.h"
#include "tests/util/test_env.h"

namespace plexus::ps {
namespace {

namespace fs = std::filesystem;
using testing::F32;
using testing::NewEngine;
using testing::PullDense;
using testing::PullRows;
using testing::PushRows;
using testing::SimpleTable;
using testing::SimpleVariable;

constexpr absl::Duration kWait = absl::Seconds(60);

OptimizerConfig Adam() {
  return {.kind = OptimizerConfig::Kind::kAdam,
          .learning_rate = 0.01,
          .epsilon = 1e-8,
          .beta1 = 0.9,
          .beta2 = 0.999};
}

std::unique_ptr<CheckpointStore> OpenStore(Engine* e, const std::string& root) {
  auto s = CheckpointStore::Open(e, {.root = root});
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

// Prepare + Commit + Finalize(published).
ShardCheckpointInfo Checkpoint(CheckpointStore& s, uint64_t id, uint64_t step,
                               uint64_t base = 0,
                               PrepareResult* prepared = nullptr) {
  auto p = s.Prepare(
      {.checkpoint_id = id, .step_id = step, .base_checkpoint_id = base});
  EXPECT_TRUE(p.ok()) << p.status();
  if (!p.ok()) return {};
  if (prepared != nullptr) *prepared = *p;
  auto c = s.Commit(id, kWait);
  EXPECT_TRUE(c.ok()) << c.status();
  if (!c.ok()) return {};
  auto f = s.Finalize(id, /*published=*/true, /*keep_last=*/0);
  EXPECT_TRUE(f.ok()) << f.status();
  return c->info;
}

std::vector<float> Iota(size_t n, float start, float step) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + step * static_cast<float>(i);
  return v;
}

void ExpectRowsEqual(const Engine& a, const Engine& b, const std::string& t,
                     const std::vector<uint64_t>& ids) {
  for (uint64_t id : ids) {
    auto ra = a.ReadRow(t, id);
    auto rb = b.ReadRow(t, id);
    ASSERT_EQ(ra.ok(), rb.ok()) << t << " id " << id;
    if (!ra.ok()) continue;
    EXPECT_EQ(ra->value, rb->value) << t << " id " << id;
    EXPECT_EQ(ra->slots, rb->slots) << t << " id " << id;
    EXPECT_EQ(ra->hit_count, rb->hit_count);
    EXPECT_EQ(ra->last_step, rb->last_step);
    EXPECT_EQ(ra->version, rb->version);
    EXPECT_EQ(ra->update_count, rb->update_count);
  }
}

// An SST file of checkpoint `id` under `root` that is not a hard link shared
// with checkpoint `base`; "" when there is none.
std::string UnsharedSst(const ShardCheckpointInfo& c, const std::string& root,
                        int id, int base) {
  std::string victim;
  for (const auto& f : c.files) {
    struct stat a, b;
    const std::string p = absl::StrCat(root, "/", id, "/", f.path);
    const std::string pb = absl::StrCat(root, "/", base, "/", f.path);
    if (::stat(p.c_str(), &a) != 0) {
      ADD_FAILURE() << "cannot stat " << p;
      continue;
    }
    const bool shared = ::stat(pb.c_str(), &b) == 0 && a.st_ino == b.st_ino;
    if (!shared && absl::EndsWith(f.path, ".sst")) victim = f.path;
  }
  return victim;
}

// Flips one bit of the byte at offset 100 of `path`, through the file system.
void FlipByte(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(100);
  char c = 0;
  f.read(&c, 1);
  c ^= 0x20;
  f.seekp(100);
  f.write(&c, 1);
  ASSERT_TRUE(f.good()) << path;
}

TEST(Crc32c, KnownValuesAndBothImplementationsAgree) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  std::string data(100003, '\0');
  std::mt19937 rng(7);
  for (char& c : data) c = static_cast<char>(rng());
  // Around the hardware version's three interleaved 8 KiB and 1 KiB streams
  // too (a RocksDB block is 16 KiB, its trailer 5 bytes).
  for (size_t n :
       {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{9}, size_t{3071},
        size_t{3072}, size_t{3073}, size_t{4096}, size_t{16384}, size_t{16389},
        size_t{24575}, size_t{24576}, size_t{24577}, size_t{24576 + 3072 + 5},
        size_t{49152 + 13}, data.size()}) {
    EXPECT_EQ(Crc32cExtend(0, data.data(), n),
              Crc32cExtendPortable(0, data.data(), n));
  }
  // Extending in pieces equals one pass.
  const uint32_t whole = Crc32c(data);
  uint32_t pieces = Crc32cExtend(0, data.data(), 1000);
  pieces = Crc32cExtend(pieces, data.data() + 1000, data.size() - 1000);
  EXPECT_EQ(whole, pieces);
}

// A deferred cut (rows copied after the barrier, on first change or by
// Finish) holds exactly the state at the barrier although rows are changed,
// created and evicted before it is finished.
TEST(DeferredCut, HoldsTheStateAtTheCut) {
  for (bool complete : {true, false}) {
    SCOPED_TRACE(complete ? "complete" : "incremental");
    auto e = NewEngine();
    TableConfig ttl = SimpleTable("t", 4);
    ttl.ttl_steps = 5;
    ASSERT_TRUE(e->CreateTable({ttl}).ok());
    std::vector<uint64_t> ids(1000);
    for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
    const PushOptions step1{.step_id = 1, .exactly_once = false};
    ASSERT_TRUE(PushRows(*e, "t", ids, Iota(4000, 0, 0.01f), step1).ok());
    if (!complete) {
      auto base = e->TakeCut({.checkpoint_id = 1});
      ASSERT_TRUE(base.ok());
      (*base)->Finish();
      std::vector<uint64_t> half(ids.begin(), ids.begin() + 500);
      ASSERT_TRUE(PushRows(*e, "t", half, Iota(2000, 1, 0), step1).ok());
    }
    std::map<uint64_t, RowSnapshot> expected;
    ASSERT_TRUE(e->ForEachRow("t", [&](uint64_t id, const RowSnapshot& r) {
                   if (complete || id < 500) expected[id] = r;
                 }).ok());
    auto cut = e->TakeCut(
        {.checkpoint_id = 2, .base_checkpoint_id = complete ? 0u : 1u});
    ASSERT_TRUE(cut.ok()) << cut.status();
    ASSERT_EQ((*cut)->tables[0].complete, complete);
    // After the barrier: change rows, create rows, evict most of the rest.
    std::vector<uint64_t> changed(ids.begin(), ids.begin() + 100);
    ASSERT_TRUE(PushRows(*e, "t", changed, Iota(400, 5, 0), step1).ok());
    std::vector<uint64_t> fresh = {5000, 5001, 5002};
    std::vector<uint64_t> touched(ids.begin() + 100, ids.begin() + 200);
    touched.insert(touched.end(), fresh.begin(), fresh.end());
    ASSERT_TRUE(PushRows(*e, "t", touched, Iota(412, 1, 0),
                         {.step_id = 20, .exactly_once = false})
                    .ok());
    ASSERT_EQ(e->DescribeTable("t")->rows_in_memory, 103);
    (*cut)->Finish();
    const TableCut& t = (*cut)->tables[0];
    ASSERT_EQ(t.ids.size(), expected.size());
    EXPECT_TRUE(t.deleted.empty());
    for (size_t i = 0; i < t.ids.size(); ++i) {
      auto it = expected.find(t.ids[i]);
      ASSERT_NE(it, expected.end()) << t.ids[i];
      EXPECT_EQ(t.meta(i).version, it->second.version) << t.ids[i];
      EXPECT_EQ(t.meta(i).hit_count, it->second.hit_count) << t.ids[i];
      EXPECT_EQ(t.meta(i).last_step, it->second.last_step) << t.ids[i];
      EXPECT_EQ(t.row(i), it->second.value) << t.ids[i];
      expected.erase(it);
    }
    // The next incremental cut holds exactly what changed after this one:
    // rows 100..199 and the 3 created (touched at step 20) and the 900
    // evicted (rows 0..99 changed at step 1 expired too).
    auto next = e->TakeCut({.checkpoint_id = 3, .base_checkpoint_id = 2});
    ASSERT_TRUE(next.ok());
    (*next)->Finish();
    EXPECT_EQ((*next)->tables[0].ids.size(), 103u);
    EXPECT_EQ((*next)->tables[0].deleted.size(), 900u);
  }
}

// The same rows (id, bookkeeping, floats), in any order.
void ExpectSameRows(const TableCut& a, const TableCut& b) {
  ASSERT_EQ(a.ids.size(), b.ids.size());
  ASSERT_EQ(a.row_floats, b.row_floats);
  std::map<uint64_t, size_t> at;
  for (size_t i = 0; i < a.ids.size(); ++i) at[a.ids[i]] = i;
  for (size_t j = 0; j < b.ids.size(); ++j) {
    auto it = at.find(b.ids[j]);
    ASSERT_NE(it, at.end()) << b.ids[j];
    const size_t i = it->second;
    EXPECT_EQ(a.meta(i).hit_count, b.meta(j).hit_count) << b.ids[j];
    EXPECT_EQ(a.meta(i).last_step, b.meta(j).last_step) << b.ids[j];
    EXPECT_EQ(a.meta(i).version, b.meta(j).version) << b.ids[j];
    EXPECT_EQ(a.meta(i).update_count, b.meta(j).update_count) << b.ids[j];
    EXPECT_EQ(a.row(i), b.row(j)) << b.ids[j];
  }
}

// A cut the engine takes holds its rows in (stripe, id) order, the order of
// a checkpoint's row keys.
void ExpectKeyOrder(const TableCut& t) {
  ASSERT_GT(t.stripes, 0);
  for (size_t i = 1; i < t.ids.size(); ++i) {
    const auto before =
        std::make_pair(RowStripe(t.ids[i - 1], t.stripes), t.ids[i - 1]);
    const auto at = std::make_pair(RowStripe(t.ids[i], t.stripes), t.ids[i]);
    ASSERT_LT(before, at) << "row " << i;
  }
}

// Finish() copies the stripes with copy_threads threads: the cut equals one
// copied by a single thread, also while pushes change, create and evict rows
// (and so copy stripes themselves) during the parallel copy.
TEST(DeferredCut, ParallelFinishEqualsSerial) {
  auto e = NewEngine({.table_stripes = 16});
  TableConfig ttl = SimpleTable("t", 4);
  ttl.ttl_steps = 5;
  ASSERT_TRUE(e->CreateTable({ttl}).ok());
  std::vector<uint64_t> ids(20000);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i * 7919;
  const PushOptions step1{.step_id = 1, .exactly_once = false};
  ASSERT_TRUE(
      PushRows(*e, "t", ids, Iota(ids.size() * 4, 0, 0.01f), step1).ok());
  auto serial = e->TakeCut({.checkpoint_id = 1, .copy_threads = 1});
  ASSERT_TRUE(serial.ok()) << serial.status();
  (*serial)->Finish();
  // Nothing changed since: a parallel copy of the same state is identical,
  // row for row.
  auto parallel = e->TakeCut({.checkpoint_id = 2, .copy_threads = 4});
  ASSERT_TRUE(parallel.ok()) << parallel.status();
  (*parallel)->Finish();
  const TableCut& a = (*serial)->tables[0];
  const TableCut& b = (*parallel)->tables[0];
  EXPECT_EQ(a.stripes, 16);
  ExpectKeyOrder(a);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_TRUE(a.records == b.records);
  ExpectSameRows(a, b);
  // Again with pushes racing the parallel copy: rows changed at step 1,
  // rows created and the rest evicted at step 20. The same rows in the same
  // order (rows removed after the cut come from their pre-images).
  auto racing = e->TakeCut({.checkpoint_id = 3, .copy_threads = 4});
  ASSERT_TRUE(racing.ok()) << racing.status();
  std::thread pusher([&] {
    for (size_t i = 0; i < ids.size(); i += 1000) {
      std::vector<uint64_t> some(ids.begin() + i, ids.begin() + i + 100);
      EXPECT_TRUE(PushRows(*e, "t", some, Iota(400, 1, 0), step1).ok());
    }
    std::vector<uint64_t> late = {1, 2, 3, ids[5], ids[6]};
    EXPECT_TRUE(PushRows(*e, "t", late, Iota(20, 1, 0),
                         {.step_id = 20, .exactly_once = false})
                    .ok());
  });
  (*racing)->Finish();
  pusher.join();
  ExpectSameRows(a, (*racing)->tables[0]);
  EXPECT_EQ(a.ids, (*racing)->tables[0].ids);
  EXPECT_EQ(e->DescribeTable("t")->rows_in_memory, 5);
}

TEST(HugePageVector, AlignedLargeBuffersAndPlainSmallOnes) {
  constexpr size_t kHuge = size_t{2} << 20;
  for (size_t n : {size_t{0}, size_t{1}, size_t{1000}, kHuge / 8 - 1, kHuge / 8,
                   kHuge / 8 * 3 + 5}) {
    SCOPED_TRACE(n);
    HugePageVector<uint64_t> v(n);
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(v[i], 0u);
    for (size_t i = 0; i < n; ++i) v[i] = i * 3;
    if (n * 8 >= kHuge) {
      EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % kHuge, 0u);
    }
    // Growing moves the rows into a new buffer (large from small, larger
    // from large); shrinking keeps them.
    v.resize(n + kHuge / 8);
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(v[i], i * 3);
    v.resize(n / 2);
    v.shrink_to_fit();
    for (size_t i = 0; i < n / 2; ++i) ASSERT_EQ(v[i], i * 3);
  }
}

// Parameter: restores are lazy (true) or eager.
class CheckpointTest : public ::testing::TestWithParam<bool> {
 protected:
  RestoreOptions Opt(RestoreOptions o) const {
    o.lazy = GetParam();
    return o;
  }
  void SetUp() override {
    root_ = tmp_.Sub("checkpoints");
    e_ = NewEngine();
    store_ = OpenStore(e_.get(), root_);
    ASSERT_NE(store_, nullptr);
  }
  void TearDown() override { failpoint::ClearAll(); }

  plexus::testing::TempDir tmp_;
  std::string root_;
  std::unique_ptr<Engine> e_;
  std::unique_ptr<CheckpointStore> store_;
};

TEST_P(CheckpointTest, RoundTripIsBitExact) {
  TableConfig adam = SimpleTable("emb", 8);
  adam.optimizer = Adam();
  adam.ttl_steps = 1000;  // exercises the eviction index on load
  TableConfig half = SimpleTable("half", 3);
  half.storage_dtype = DType::kFloat16;
  VariableConfig var = SimpleVariable("w", {6, 4});
  var.optimizer = {.kind = OptimizerConfig::Kind::kMomentum,
                   .learning_rate = 0.1,
                   .momentum = 0.9};
  VariableConfig var16 = SimpleVariable("w16", {3, 2});
  var16.storage_dtype = DType::kBFloat16;
  ASSERT_TRUE(e_->CreateTable({adam}).ok());
  ASSERT_TRUE(e_->CreateTable({half}).ok());
  ASSERT_TRUE(e_->CreateVariable({var, {2, 6}}).ok());
  ASSERT_TRUE(e_->CreateVariable({var16}).ok());
  std::vector<uint64_t> ids = {1, 5, 77, 1u << 31, ~uint64_t{0}};
  for (uint64_t step = 1; step <= 3; ++step) {
    PushOptions o{.job_id = "job",
                  .worker_id = 4,
                  .worker_incarnation = 2,
                  .step_id = step};
    auto g = F32({5, 8}, Iota(40, 0.1f * step, 0.37f));
    auto h = F32({5, 3}, Iota(15, -0.5f, 0.11f));
    auto d = F32({4, 4}, Iota(16, 1.0f, -0.1f));
    auto d16 = F32({3, 2}, Iota(6, 0.3f, 0.2f));
    SparseGradient sg[] = {{"emb", ids, g.view()}, {"half", ids, h.view()}};
    DenseGradient dg[] = {{"w", {}, d.view()}, {"w16", {}, d16.view()}};
    auto r = e_->Push(o, dg, sg);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  PullRows(*e_, "emb", {1, 1, 9999});  // hit counts; 9999 stays absent
  const EngineCounters before = e_->counters();
  ASSERT_EQ(before.applied_keys, 3);

  PrepareResult prepared;
  ShardCheckpointInfo info = Checkpoint(*store_, 1, 3, 0, &prepared);
  EXPECT_FALSE(prepared.incremental);
  EXPECT_EQ(prepared.dirty_rows, 5 + 5 + 4 + 3);
  EXPECT_EQ(info.num_rows, 5 + 5 + 4 + 3);
  EXPECT_EQ(info.directory, "1");
  EXPECT_FALSE(info.files.empty());
  for (const auto& f : info.files) {
    auto sum = ChecksumFile(root_ + "/1/" + f.path);
    ASSERT_TRUE(sum.ok()) << sum.status();
    EXPECT_EQ(sum->size_bytes, f.size_bytes) << f.path;
    EXPECT_EQ(sum->crc32c, f.crc32c) << f.path;
  }

  // A fresh engine (a restarted shard) restores it.
  auto e2 = NewEngine();
  auto s2 = OpenStore(e2.get(), root_);
  ASSERT_EQ(s2->List().size(), 1u);
  EXPECT_EQ(s2->List()[0].state, CheckpointState::kPublished);
  auto r = s2->Restore(Opt({.checkpoint_id = 1}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->step_id, 3u);
  EXPECT_EQ(r->num_rows, 17);
  ExpectRowsEqual(*e_, *e2, "emb", ids);
  ExpectRowsEqual(*e_, *e2, "half", ids);
  EXPECT_FALSE(e2->ReadRow("emb", 9999).ok());
  for (const char* v : {"w", "w16"}) {
    auto a = e_->ReadVariable(v);
    auto b = e2->ReadVariable(v);
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->rows, b->rows);
    EXPECT_EQ(a->values, b->values);
    EXPECT_EQ(a->slots, b->slots);
    EXPECT_EQ(a->update_count, b->update_count);
  }
  EXPECT_EQ(e2->ListTables().size(), 2u);
  EXPECT_EQ(e2->DescribeTable("emb")->config, adam);
  EXPECT_EQ(e2->DescribeVariable("w")->config, var);
  EXPECT_EQ(e2->DescribeVariable("w")->last_applied_step_id, 3u);
  EXPECT_EQ(e2->counters().applied_keys, 3);

  // Exactly-once survives: a re-sent push of step 3 is a duplicate, and an
  // older incarnation is still fenced.
  auto g = F32({1, 8}, Iota(8, 1, 0));
  SparseGradient sg{"emb", absl::MakeConstSpan(ids).subspan(0, 1), g.view()};
  auto dup = e2->Push(
      {.job_id = "job", .worker_id = 4, .worker_incarnation = 2, .step_id = 3},
      {}, {&sg, 1});
  ASSERT_TRUE(dup.ok()) << dup.status();
  EXPECT_EQ(dup->outcome, PushOutcome::kDuplicate);
  auto stale = e2->Push(
      {.job_id = "job", .worker_id = 4, .worker_incarnation = 1, .step_id = 4},
      {}, {&sg, 1});
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kFailedPrecondition);
  // And the restored engine keeps training identically to the original.
  for (Engine* e : {e_.get(), e2.get()}) {
    auto ok = e->Push({.job_id = "job",
                       .worker_id = 4,
                       .worker_incarnation = 2,
                       .step_id = 4},
                      {}, {&sg, 1});
    ASSERT_TRUE(ok.ok());
    EXPECT_EQ(ok->outcome, PushOutcome::kApplied);
  }
  ExpectRowsEqual(*e_, *e2, "emb", ids);

  // Publishing trimmed nothing of steps > 3; a later publish trims.
  ASSERT_TRUE(s2->Finalize(1, true, 0).ok());
  EXPECT_EQ(e2->counters().applied_keys, 1);
}

TEST_P(CheckpointTest, RestoreRollsBackTheSameEngine) {
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 2)}).ok());
  ASSERT_TRUE(PushRows(*e_, "t", {1, 2}, {1, 1, 1, 1}).ok());
  Checkpoint(*store_, 1, 0);
  const auto at_cut = PullRows(*e_, "t", {1, 2});
  ASSERT_TRUE(PushRows(*e_, "t", {1, 3}, {5, 5, 5, 5}).ok());
  ASSERT_TRUE(e_->CreateTable({SimpleTable("later", 2)}).ok());
  auto r = store_->Restore(Opt({.checkpoint_id = 1}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(PullRows(*e_, "t", {1, 2}), at_cut);
  EXPECT_FALSE(e_->ReadRow("t", 3).ok());
  EXPECT_FALSE(e_->DescribeTable("later").ok());
  // The restored checkpoint is the base of the next incremental one.
  ASSERT_TRUE(PushRows(*e_, "t", {2}, {1, 1}).ok());
  PrepareResult p;
  Checkpoint(*store_, 2, 0, 1, &p);
  EXPECT_TRUE(p.incremental);
  // Rows 1 and 2: the pull above touched both (hit counts are state too).
  EXPECT_EQ(p.dirty_rows, 2);
}

// Every push moves two rows (in different stripes) by the same gradient;
// a cut that mixed moments would hold them unequal.
TEST_P(CheckpointTest, CutIsConsistentUnderConcurrentPushes) {
  constexpr int kPushers = 4;
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 4, 1.0)}).ok());
  ASSERT_TRUE(
      e_->CreateVariable({SimpleVariable("w", {kPushers, 4}, 1.0)}).ok());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> pushes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kPushers; ++t) {
    threads.emplace_back([&, t] {
      const std::vector<uint64_t> ids = {uint64_t(2 * t), uint64_t(2 * t + 1)};
      auto g = F32({2, 4}, {1, 2, 3, 4, 1, 2, 3, 4});
      auto d = F32({1, 4}, {1, 2, 3, 4});
      SparseGradient sg{"t", ids, g.view()};
      DenseGradient dg{"w", {t, t + 1}, d.view()};
      for (uint64_t step = 1; !stop.load(); ++step) {
        auto r = e_->Push(
            {.job_id = "j", .worker_id = uint64_t(t + 1), .step_id = step},
            {&dg, 1}, {&sg, 1});
        ASSERT_TRUE(r.ok()) << r.status();
        pushes.fetch_add(1);
      }
    });
  }
  uint64_t base = 0;
  for (uint64_t id = 1; id <= 6; ++id) {
    // Let pushes happen between cuts (bounded: the pushers never block).
    const int64_t seen = pushes.load();
    while (pushes.load() < seen + 50) std::this_thread::yield();
    // Odd ids complete, even ones incremental: both kinds of cut (and the
    // deferred stripe copies they make) are checked.
    PrepareResult p;
    Checkpoint(*store_, id, 0, id % 2 == 1 ? 0 : base, &p);
    EXPECT_EQ(p.incremental, id % 2 == 0);
    EXPECT_LT(p.cut_pause, absl::Seconds(5));
    base = id;
  }
  stop = true;
  for (auto& t : threads) t.join();
  for (uint64_t id = 1; id <= 6; ++id) {
    auto e2 = NewEngine();
    auto s2 = OpenStore(e2.get(), root_);
    auto r = s2->Restore(Opt({.checkpoint_id = id}));
    ASSERT_TRUE(r.ok()) << r.status();
    auto w = e2->ReadVariable("w");
    ASSERT_TRUE(w.ok());
    int64_t keys = 0;
    for (int t = 0; t < kPushers; ++t) {
      auto a = e2->ReadRow("t", 2 * t);
      auto b = e2->ReadRow("t", 2 * t + 1);
      ASSERT_EQ(a.ok(), b.ok()) << "checkpoint " << id << " pusher " << t;
      if (!a.ok()) continue;
      EXPECT_EQ(a->value, b->value) << "checkpoint " << id;
      EXPECT_EQ(a->version, b->version) << "checkpoint " << id;
      // The dense row moved with them, and one key per applied push.
      EXPECT_EQ(w->update_count[t], static_cast<int64_t>(a->version));
      EXPECT_EQ(w->values[4 * t], a->value[0]);
      keys += static_cast<int64_t>(a->version);
    }
    EXPECT_EQ(e2->counters().applied_keys, keys) << "checkpoint " << id;
  }
}

// A bulk write streams the cut out of the engine stripe by stripe while
// pushes go on: rows one push changes together, in many stripes, are still
// written as of one moment (a stripe not copied yet keeps its rows'
// pre-images), in complete and incremental checkpoints.
TEST_P(CheckpointTest, StreamedBulkWriteIsConsistentUnderConcurrentPushes) {
  constexpr int kPushers = 3;
  constexpr uint64_t kRowsPerPusher = 64;
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 4, 1.0)}).ok());
  std::vector<uint64_t> background(20000);
  for (uint64_t i = 0; i < background.size(); ++i) background[i] = i;
  auto refresh = [&](float g) {
    return PushRows(*e_, "t", background,
                    std::vector<float>(background.size() * 4, g));
  };
  ASSERT_TRUE(refresh(0.5f).ok());
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kPushers; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint64_t> ids;
      for (uint64_t k = 0; k < kRowsPerPusher; ++k) {
        ids.push_back(100000 + 1000 * static_cast<uint64_t>(t) + 7 * k);
      }
      const std::vector<float> g(ids.size() * 4, 0.25f);
      while (!stop.load()) ASSERT_TRUE(PushRows(*e_, "t", ids, g).ok());
    });
  }
  uint64_t base = 0;
  for (uint64_t id = 1; id <= 4; ++id) {
    // Every background row changes (one push): bulk either way.
    ASSERT_TRUE(refresh(0.125f * static_cast<float>(id)).ok());
    PrepareResult p;
    Checkpoint(*store_, id, 0, id % 2 == 1 ? 0 : base, &p);
    EXPECT_EQ(p.incremental, id % 2 == 0);
    EXPECT_GE(p.dirty_rows, static_cast<int64_t>(background.size()));
    base = id;
  }
  stop = true;
  for (auto& t : threads) t.join();
  for (uint64_t id = 1; id <= 4; ++id) {
    SCOPED_TRACE(absl::StrCat("checkpoint ", id));
    auto e2 = NewEngine();
    auto s2 = OpenStore(e2.get(), root_);
    auto r = s2->Restore(Opt({.checkpoint_id = id}));
    ASSERT_TRUE(r.ok()) << r.status();
    auto first = e2->ReadRow("t", background[0]);
    ASSERT_TRUE(first.ok()) << first.status();
    for (uint64_t b : background) {
      auto row = e2->ReadRow("t", b);
      ASSERT_TRUE(row.ok()) << b;
      ASSERT_EQ(row->value, first->value) << b;
      ASSERT_EQ(row->version, first->version) << b;
    }
    for (int t = 0; t < kPushers; ++t) {
      const uint64_t id0 = 100000 + 1000 * static_cast<uint64_t>(t);
      auto lead = e2->ReadRow("t", id0);
      if (!lead.ok()) continue;  // this pusher had not pushed yet
      for (uint64_t k = 1; k < kRowsPerPusher; ++k) {
        auto row = e2->ReadRow("t", id0 + 7 * k);
        ASSERT_TRUE(row.ok()) << "pusher " << t << " row " << k;
        ASSERT_EQ(row->value, lead->value) << "pusher " << t << " row " << k;
        ASSERT_EQ(row->version, lead->version)
            << "pusher " << t << " row " << k;
      }
    }
  }
}

TEST_P(CheckpointTest, IncrementalWritesOnlyDirtyRowsAndHandlesRemovals) {
  TableConfig ttl = SimpleTable("ttl", 4);
  ttl.ttl_steps = 5;
  ASSERT_TRUE(e_->CreateTable({SimpleTable("big", 64)}).ok());
  ASSERT_TRUE(e_->CreateTable({ttl}).ok());
  ASSERT_TRUE(e_->CreateTable({SimpleTable("gone", 4)}).ok());
  ASSERT_TRUE(e_->CreateTable({SimpleTable("again", 4)}).ok());
  ASSERT_TRUE(e_->CreateVariable({SimpleVariable("w", {10, 4})}).ok());
  std::vector<uint64_t> ids(1000);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i * 7919;
  ASSERT_TRUE(PushRows(*e_, "big", ids, Iota(64000, 0.5f, 0.001f)).ok());
  PushOptions step1{.step_id = 1, .exactly_once = false};
  ASSERT_TRUE(PushRows(*e_, "ttl", {1, 2, 3}, Iota(12, 1, 1), step1).ok());
  ASSERT_TRUE(PushRows(*e_, "gone", {1}, Iota(4, 1, 1)).ok());
  ASSERT_TRUE(PushRows(*e_, "again", {1, 2}, Iota(8, 1, 1)).ok());
  PrepareResult p1;
  ShardCheckpointInfo c1 = Checkpoint(*store_, 1, 0, 0, &p1);
  EXPECT_EQ(p1.dirty_rows, 1000 + 3 + 1 + 2 + 10);
  EXPECT_EQ(store_->TEST_rows_written(), 1000 + 3 + 1 + 2 + 10);
  EXPECT_EQ(c1.new_bytes, c1.total_bytes);

  // 10 rows of "big" change; rows 1 and 2 of "ttl" are evicted (step 20,
  // ttl 5), row 3 is touched at step 20 and stays; "gone" is deleted;
  // "again" is deleted and created anew (its old rows must not come back);
  // the dense variable is untouched.
  std::vector<uint64_t> some(ids.begin() + 100, ids.begin() + 110);
  ASSERT_TRUE(PushRows(*e_, "big", some, Iota(640, 1, 0)).ok());
  PushOptions step20{.step_id = 20, .exactly_once = false};
  ASSERT_TRUE(PushRows(*e_, "ttl", {3}, Iota(4, 1, 1), step20).ok());
  EXPECT_EQ(e_->DescribeTable("ttl")->rows_in_memory, 1);  // push evicted
  ASSERT_TRUE(e_->DeleteTable("gone").ok());
  ASSERT_TRUE(e_->DeleteTable("again").ok());
  ASSERT_TRUE(e_->CreateTable({SimpleTable("again", 4)}).ok());
  ASSERT_TRUE(PushRows(*e_, "again", {2}, Iota(4, 1, 1)).ok());
  PrepareResult p2;
  ShardCheckpointInfo c2 = Checkpoint(*store_, 2, 0, 1, &p2);
  EXPECT_TRUE(p2.incremental);
  EXPECT_EQ(c2.base_checkpoint_id, 1u);
  // 10 changed + 1 changed + 2 tombstones + 1 row of the new "again".
  EXPECT_EQ(p2.dirty_rows, 10 + 1 + 2 + 1);
  EXPECT_EQ(store_->TEST_rows_written(), 14);
  EXPECT_LT(c2.new_bytes, c2.total_bytes / 2) << "unchanged data is shared";

  // Nothing changed: an empty increment.
  PrepareResult p3;
  Checkpoint(*store_, 3, 0, 2, &p3);
  EXPECT_EQ(p3.dirty_rows, 0);
  EXPECT_EQ(store_->TEST_rows_written(), 0);

  for (uint64_t id : {2u, 3u}) {
    auto e2 = NewEngine();
    auto s2 = OpenStore(e2.get(), root_);
    auto r = s2->Restore(Opt({.checkpoint_id = id}));
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectRowsEqual(*e_, *e2, "big", ids);
    ExpectRowsEqual(*e_, *e2, "ttl", {1, 2, 3});
    ExpectRowsEqual(*e_, *e2, "again", {1, 2});
    EXPECT_FALSE(e2->ReadRow("ttl", 1).ok());
    EXPECT_FALSE(e2->ReadRow("again", 1).ok());
    EXPECT_FALSE(e2->DescribeTable("gone").ok());
    EXPECT_EQ(e2->ReadVariable("w")->values, e_->ReadVariable("w")->values);
    EXPECT_EQ(r->num_rows, 1000 + 1 + 1 + 10);
  }
  // The base is still intact and restores its own state.
  auto e1 = NewEngine();
  auto s1 = OpenStore(e1.get(), root_);
  ASSERT_TRUE(s1->Restore(Opt({.checkpoint_id = 1})).ok());
  EXPECT_TRUE(e1->ReadRow("ttl", 1).ok());
  EXPECT_TRUE(e1->ReadRow("gone", 1).ok());
  EXPECT_TRUE(e1->ReadRow("again", 1).ok());
}

// Large changes go through SST files ingested into the column family (puts
// and tombstones in one sorted file); the result must equal the batch path.
TEST_P(CheckpointTest, BulkChangesWithRemovalsRoundTrip) {
  TableConfig ttl = SimpleTable("t", 8);
  ttl.ttl_steps = 5;
  ASSERT_TRUE(e_->CreateTable({ttl}).ok());
  std::vector<uint64_t> ids(10000);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i * 104729 + 3;
  ASSERT_TRUE(PushRows(*e_, "t", ids, Iota(80000, -1, 0.0001f),
                       {.step_id = 1, .exactly_once = false})
                  .ok());
  PrepareResult p1;
  ShardCheckpointInfo c1 = Checkpoint(*store_, 1, 0, 0, &p1);
  EXPECT_EQ(p1.dirty_rows, 10000);
  EXPECT_EQ(store_->TEST_rows_written(), 10000);
  // 6000 rows touched at step 20; the 4000 others expire.
  std::vector<uint64_t> kept(ids.begin(), ids.begin() + 6000);
  ASSERT_TRUE(PushRows(*e_, "t", kept, Iota(48000, 2, 0.0001f),
                       {.step_id = 20, .exactly_once = false})
                  .ok());
  ASSERT_EQ(e_->DescribeTable("t")->rows_in_memory, 6000);
  PrepareResult p2;
  ShardCheckpointInfo c2 = Checkpoint(*store_, 2, 0, 1, &p2);
  EXPECT_TRUE(p2.incremental);
  EXPECT_EQ(p2.dirty_rows, 10000);  // 6000 changed + 4000 tombstones
  EXPECT_EQ(c2.num_rows, 6000);
  for (uint64_t id : {1u, 2u}) {
    auto e2 = NewEngine();
    auto s2 = OpenStore(e2.get(), root_);
    auto r = s2->Restore(Opt({.checkpoint_id = id}));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->num_rows, id == 1 ? 10000 : 6000);
    if (id == 2) ExpectRowsEqual(*e_, *e2, "t", ids);
  }
}

// The bulk path cuts the rows in key order into one SST file per writer
// thread (two per cut thread): with ids spread over the whole 64-bit range,
// in no order, and tombstones interleaved with the changed rows, every part
// must hold its own key range and the restored rows must be the engine's,
// complete and incremental.
TEST_P(CheckpointTest, BulkWriteSplitIntoManyPartsRoundTrips) {
  auto s = CheckpointStore::Open(e_.get(), {.root = root_, .cut_threads = 4});
  ASSERT_TRUE(s.ok()) << s.status();
  TableConfig ttl = SimpleTable("t", 4);
  ttl.ttl_steps = 5;
  ASSERT_TRUE(e_->CreateTable({ttl}).ok());
  std::vector<uint64_t> ids(40000);
  for (uint64_t i = 0; i < ids.size(); ++i) {
    ids[i] = (i + 1) * 0x9E3779B97F4A7C15ull;  // spread, unordered
  }
  ids.push_back(0);
  ids.push_back(~uint64_t{0});
  ASSERT_TRUE(PushRows(*e_, "t", ids, Iota(ids.size() * 4, -1, 0.0001f),
                       {.step_id = 1, .exactly_once = false})
                  .ok());
  PrepareResult p1;
  ShardCheckpointInfo c1 = Checkpoint(**s, 1, 0, 0, &p1);
  EXPECT_EQ(p1.dirty_rows, 40002);
  EXPECT_EQ((*s)->TEST_rows_written(), 40002);
  // Every other row touched at step 20 (the first and last id among them);
  // the others expire: tombstones between the changed rows in every part.
  std::vector<uint64_t> kept;
  for (size_t i = 0; i < ids.size(); i += 2) kept.push_back(ids[i]);
  kept.push_back(ids.back());
  ASSERT_TRUE(PushRows(*e_, "t", kept, Iota(kept.size() * 4, 2, 0.0001f),
                       {.step_id = 20, .exactly_once = false})
                  .ok());
  ASSERT_EQ(e_->DescribeTable("t")->rows_in_memory,
            static_cast<int64_t>(kept.size()));
  PrepareResult p2;
  ShardCheckpointInfo c2 = Checkpoint(**s, 2, 0, 1, &p2);
  EXPECT_TRUE(p2.incremental);
  EXPECT_EQ(p2.dirty_rows, 40002);  // kept changed + the rest tombstones
  EXPECT_EQ(c2.num_rows, static_cast<int64_t>(kept.size()));
  s->reset();
  for (uint64_t id : {1u, 2u}) {
    auto e2 = NewEngine();
    auto s2 = OpenStore(e2.get(), root_);
    auto r = s2->Restore(Opt({.checkpoint_id = id}));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->num_rows, id == 1 ? 40002 : static_cast<int64_t>(kept.size()));
    if (id == 2) ExpectRowsEqual(*e_, *e2, "t", ids);
  }
}

// Changes on top of a base keep the base's row keys: keys of the id alone
// (checkpoints written before the stripe led the key) or of another stripe
// count (an engine of other EngineOptions::table_stripes) are sorted on the
// way out instead of streamed. Restored, the rows are the engine's either
// way, complete and incremental, with tombstones between them.
TEST_P(CheckpointTest, ChangesOnABaseWithOtherRowKeysRoundTrip) {
  TableConfig ttl = SimpleTable("t", 4);
  ttl.ttl_steps = 5;
  std::vector<uint64_t> ids(20000);
  for (uint64_t i = 0; i < ids.size(); ++i) {
    ids[i] = (i + 1) * 0x9E3779B97F4A7C15ull;  // spread, unordered
  }
  std::vector<uint64_t> kept;
  for (size_t i = 0; i < ids.size(); i += 2) kept.push_back(ids[i]);
  for (bool id_only : {true, false}) {
    SCOPED_TRACE(id_only ? "base keyed by id" : "base of 16 stripes");
    const std::string root = tmp_.Sub(id_only ? "id_only" : "stripes16");
    auto a = NewEngine({.table_stripes = 16});
    ASSERT_TRUE(a->CreateTable({ttl}).ok());
    ASSERT_TRUE(PushRows(*a, "t", ids, Iota(ids.size() * 4, -1, 0.0001f),
                         {.step_id = 1, .exactly_once = false})
                    .ok());
    {
      auto s = CheckpointStore::Open(
          a.get(),
          {.root = root, .cut_threads = 2, .TEST_id_only_row_keys = id_only});
      ASSERT_TRUE(s.ok()) << s.status();
      Checkpoint(**s, 1, 0);
    }
    // Restored by a shard of 8 stripes, which changes half the rows (the
    // others expire) and writes the changes on top.
    auto b = NewEngine({.table_stripes = 8});
    auto sb = CheckpointStore::Open(b.get(), {.root = root, .cut_threads = 2});
    ASSERT_TRUE(sb.ok()) << sb.status();
    auto r = (*sb)->Restore(Opt({.checkpoint_id = 1}));
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectRowsEqual(*a, *b, "t", ids);
    ASSERT_TRUE(PushRows(*b, "t", kept, Iota(kept.size() * 4, 2, 0.0001f),
                         {.step_id = 20, .exactly_once = false})
                    .ok());
    ASSERT_EQ(b->DescribeTable("t")->rows_in_memory,
              static_cast<int64_t>(kept.size()));
    PrepareResult p2;
    Checkpoint(**sb, 2, 0, 1, &p2);
    EXPECT_TRUE(p2.incremental);
    EXPECT_EQ(p2.dirty_rows, static_cast<int64_t>(ids.size()));
    sb->reset();
    for (uint64_t id : {1u, 2u}) {
      auto c = NewEngine({.table_stripes = 32});
      auto sc = OpenStore(c.get(), root);
      auto rc = sc->Restore(Opt({.checkpoint_id = id}));
      ASSERT_TRUE(rc.ok()) << rc.status();
      ExpectRowsEqual(id == 1 ? *a : *b, *c, "t", ids);
    }
  }
}

TEST_P(CheckpointTest, UnknownOrInvalidatedBaseGivesACompleteCheckpoint) {
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 2)}).ok());
  ASSERT_TRUE(PushRows(*e_, "t", {1, 2, 3}, Iota(6, 1, 1)).ok());
  Checkpoint(*store_, 1, 0);
  ASSERT_TRUE(PushRows(*e_, "t", {1}, Iota(2, 1, 1)).ok());
  PrepareResult p;
  Checkpoint(*store_, 2, 0, /*base=*/42, &p);
  EXPECT_FALSE(p.incremental);
  EXPECT_EQ(p.dirty_rows, 3);
  // Base 1 is not the engine's previous cut any more (2 is).
  ASSERT_TRUE(PushRows(*e_, "t", {2}, Iota(2, 1, 1)).ok());
  Checkpoint(*store_, 3, 0, /*base=*/1, &p);
  EXPECT_FALSE(p.incremental);
  // An abandoned checkpoint is no base either.
  ASSERT_TRUE(
      store_->Prepare({.checkpoint_id = 4, .base_checkpoint_id = 3}).ok());
  auto deleted = store_->Finalize(4, /*published=*/false, 0);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, std::vector<uint64_t>{4});
  EXPECT_FALSE(fs::exists(root_ + "/4"));
  EXPECT_TRUE(store_->Finalize(4, false, 0).ok());  // idempotent
  EXPECT_EQ(store_->Finalize(4, true, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Checkpoint(*store_, 5, 0, /*base=*/4, &p);
  EXPECT_FALSE(p.incremental);
  EXPECT_EQ(p.dirty_rows, 3);
}

TEST_P(CheckpointTest, FlippedByteIsDataLossAndThePreviousOneRestores) {
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 16)}).ok());
  std::vector<uint64_t> ids(200);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
  ASSERT_TRUE(PushRows(*e_, "t", ids, Iota(3200, 0, 0.01f)).ok());
  Checkpoint(*store_, 1, 0);
  const auto at1 = PullRows(*e_, "t", ids);
  ASSERT_TRUE(PushRows(*e_, "t", {5}, Iota(16, 1, 0)).ok());
  ShardCheckpointInfo c2 = Checkpoint(*store_, 2, 0, 1);
  const auto at2 = PullRows(*e_, "t", ids);
  // Flip a byte of a file of checkpoint 2 that is not shared with 1.
  const std::string victim = UnsharedSst(c2, root_, 2, 1);
  ASSERT_FALSE(victim.empty());
  FlipByte(root_ + "/2/" + victim);
  auto e2 = NewEngine();
  ASSERT_TRUE(e2->CreateTable({SimpleTable("other", 1)}).ok());
  auto s2 = OpenStore(e2.get(), root_);
  auto bad = s2->Restore(Opt({.checkpoint_id = 2}));
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_NE(bad.status().message().find(victim), std::string::npos)
      << bad.status();
  // State unchanged.
  EXPECT_TRUE(e2->DescribeTable("other").ok());
  EXPECT_FALSE(e2->DescribeTable("t").ok());
  // The previous one restores (its files are intact).
  auto good = s2->Restore(Opt({.checkpoint_id = 1}));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(PullRows(*e2, "t", ids), at1);
  EXPECT_NE(at1, at2);
  // A size mismatch from the coordinator's list is DATA_LOSS too.
  std::vector<CheckpointFileInfo> files = c2.files;
  files[0].size_bytes += 1;
  auto sized = s2->Restore(Opt({.checkpoint_id = 2, .files = files}));
  EXPECT_EQ(sized.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(sized.status().message().find(files[0].path), std::string::npos);
}

// Restore does not re-read files this shard checksummed and that are
// unchanged since (PLEXUS_VERIFIED), but a byte flipped afterwards, even
// with the file's mtime put back, is still DATA_LOSS naming the file.
TEST_P(CheckpointTest, UnchangedFilesAreTrustedAndAFlippedByteIsStillFound) {
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 16)}).ok());
  std::vector<uint64_t> ids(5000);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
  ASSERT_TRUE(PushRows(*e_, "t", ids, Iota(80000, 0, 0.01f)).ok());
  ShardCheckpointInfo c1 = Checkpoint(*store_, 1, 0);
  const auto at1 = PullRows(*e_, "t", ids);
  ASSERT_TRUE(PushRows(*e_, "t", {5}, Iota(16, 1, 0)).ok());
  ShardCheckpointInfo c2 = Checkpoint(*store_, 2, 0, 1);
  const auto at2 = PullRows(*e_, "t", ids);
  auto e2 = NewEngine();
  auto s2 = OpenStore(e2.get(), root_);
  // Full verification reads every byte.
  auto full = s2->Restore(Opt({.checkpoint_id = 2, .full_verification = true}));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->bytes_verified, c2.total_bytes);
  EXPECT_EQ(full->files_trusted, 0);
  // A file changed in the file system's clock tick of its record is read
  // again (and re-recorded); within a few ticks every file is trusted.
  int64_t trusted = 0, read = -1;
  EXPECT_TRUE(plexus::testing::WaitFor(
      [&] {
        auto r = s2->Restore(Opt({.checkpoint_id = 2}));
        if (!r.ok()) return true;
        trusted = r->files_trusted;
        read = r->bytes_verified;
        return read == 0;
      },
      absl::Seconds(10)));
  EXPECT_EQ(trusted, static_cast<int64_t>(c2.files.size()));
  EXPECT_EQ(read, 0);
  EXPECT_EQ(PullRows(*e2, "t", ids), at2);
  // Flip a byte of an SST file of checkpoint 2 not shared with 1, and put
  // its mtime back: the ctime still changes.
  const std::string victim = UnsharedSst(c2, root_, 2, 1);
  ASSERT_FALSE(victim.empty());
  const std::string vp = root_ + "/2/" + victim;
  struct stat before;
  ASSERT_EQ(::stat(vp.c_str(), &before), 0);
  FlipByte(vp);
  const struct timespec times[2] = {before.st_atim, before.st_mtim};
  ASSERT_EQ(::utimensat(AT_FDCWD, vp.c_str(), times, 0), 0);
  auto bad = s2->Restore(Opt({.checkpoint_id = 2}));
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kDataLoss) << bad.status();
  EXPECT_NE(bad.status().message().find(victim), std::string::npos)
      << bad.status();
  // Checkpoint 1 is intact.
  auto good = s2->Restore(Opt({.checkpoint_id = 1}));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(PullRows(*e2, "t", ids), at1);
  EXPECT_GT(c1.total_bytes, 0);
}

TEST_P(CheckpointTest, DiskFullIsResourceExhaustedAndNothingIsPublished) {
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 4)}).ok());
  ASSERT_TRUE(PushRows(*e_, "t", {1, 2}, Iota(8, 1, 1)).ok());
  Checkpoint(*store_, 1, 0);
  ASSERT_TRUE(PushRows(*e_, "t", {2, 3}, Iota(8, 1, 1)).ok());
  ASSERT_TRUE(failpoint::Set("ps.checkpoint.write",
                             "error(RESOURCE_EXHAUSTED,no space left)")
                  .ok());
  auto p = store_->Prepare({.checkpoint_id = 2, .base_checkpoint_id = 1});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_TRUE(p->incremental);
  auto c = store_->Commit(2, kWait);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted)
      << c.status();
  EXPECT_EQ(store_->Commit(2, kWait).status().code(),
            absl::StatusCode::kResourceExhausted);  // sticky
  EXPECT_FALSE(fs::exists(root_ + "/2"));
  EXPECT_TRUE(fs::is_empty(root_ + "/.staging"));
  EXPECT_EQ(store_->Finalize(2, true, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // The engine is unaffected and keeps serving.
  ASSERT_TRUE(PushRows(*e_, "t", {4}, Iota(4, 1, 1)).ok());
  // Space returns: the next checkpoint cannot build on the failed cut, so it
  // is complete and holds the rows changed before the failure too.
  failpoint::ClearAll();
  PrepareResult p3;
  Checkpoint(*store_, 3, 0, 2, &p3);
  EXPECT_FALSE(p3.incremental);
  auto e2 = NewEngine();
  auto s2 = OpenStore(e2.get(), root_);
  ASSERT_TRUE(s2->Restore(Opt({.checkpoint_id = 3})).ok());
  ExpectRowsEqual(*e_, *e2, "t", {1, 2, 3, 4});
}

TEST_P(CheckpointTest, RetentionKeepsTheNewestK) {
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 4)}).ok());
  for (uint64_t id = 1; id <= 4; ++id) {
    ASSERT_TRUE(PushRows(*e_, "t", {id}, Iota(4, 1, 1)).ok());
    ASSERT_TRUE(
        store_->Prepare({.checkpoint_id = id, .base_checkpoint_id = id - 1})
            .ok());
    ASSERT_TRUE(store_->Commit(id, kWait).ok());
    auto deleted = store_->Finalize(id, true, /*keep_last=*/2);
    ASSERT_TRUE(deleted.ok()) << deleted.status();
    if (id == 3) {
      EXPECT_EQ(*deleted, std::vector<uint64_t>{1});
    }
    if (id == 4) {
      EXPECT_EQ(*deleted, std::vector<uint64_t>{2});
    }
  }
  EXPECT_FALSE(fs::exists(root_ + "/1"));
  EXPECT_FALSE(fs::exists(root_ + "/2"));
  auto e2 = NewEngine();
  auto s2 = OpenStore(e2.get(), root_);
  auto list = s2->List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].checkpoint_id, 4u);
  EXPECT_EQ(list[1].checkpoint_id, 3u);
  // Incremental checkpoints survive the deletion of their bases.
  ASSERT_TRUE(s2->Restore(Opt({.checkpoint_id = 4})).ok());
  ExpectRowsEqual(*e_, *e2, "t", {1, 2, 3, 4});
}

TEST_P(CheckpointTest, RefusesBadRequests) {
  EXPECT_EQ(store_->Prepare({.checkpoint_id = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  for (const char* dir : {"../x", "/abs", "a/b", ".", ".staging", "x.tmp"}) {
    EXPECT_EQ(
        store_->Prepare({.checkpoint_id = 1, .directory = dir}).status().code(),
        absl::StatusCode::kInvalidArgument)
        << dir;
  }
  EXPECT_EQ(
      store_->Prepare({.checkpoint_id = 1, .staging_directory = "elsewhere/1"})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Restore(Opt({.directory = "../etc"})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Restore(Opt({.checkpoint_id = 9})).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Commit(9, kWait).status().code(),
            absl::StatusCode::kNotFound);
  // A cut at step C after an update of a later step.
  ASSERT_TRUE(e_->CreateTable({SimpleTable("t", 1)}).ok());
  ASSERT_TRUE(
      PushRows(*e_, "t", {1}, {1}, {.step_id = 5, .exactly_once = false}).ok());
  EXPECT_EQ(store_->Prepare({.checkpoint_id = 1, .step_id = 4}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  Checkpoint(*store_, 1, 5);
  EXPECT_EQ(store_->Prepare({.checkpoint_id = 1, .step_id = 5}).status().code(),
            absl::StatusCode::kAlreadyExists);
  Checkpoint(*store_, 2, 5, 0);
  EXPECT_EQ(
      store_->Prepare({.checkpoint_id = 3, .directory = "2"}).status().code(),
      absl::StatusCode::kAlreadyExists);
}

// Rows changed, removed or untouched while a lazy restore is still loading
// in the background end up exactly as in the engine that never restarted.
TEST_P(CheckpointTest, ChangesDuringALazyRestoreAreKept) {
  TableConfig ttl = SimpleTable("t", 8);
  ttl.ttl_steps = 5;
  ASSERT_TRUE(e_->CreateTable({ttl}).ok());
  std::vector<uint64_t> ids(20000);
  for (uint64_t i = 0; i < ids.size(); ++i) ids[i] = i;
  ASSERT_TRUE(PushRows(*e_, "t", ids, Iota(160000, 0, 0.001f),
                       {.step_id = 1, .exactly_once = false})
                  .ok());
  Checkpoint(*store_, 1, 0);
  auto e2 = NewEngine();
  auto s2 = OpenStore(e2.get(), root_);
  ASSERT_TRUE(s2->Restore(Opt({.checkpoint_id = 1})).ok());
  // The same changes on both: rows 0..99 pushed at step 20, which expires
  // every row not touched since step 15 (all the others).
  std::vector<uint64_t> some(ids.begin(), ids.begin() + 100);
  for (Engine* e : {e_.get(), e2.get()}) {
    ASSERT_TRUE(PushRows(*e, "t", some, Iota(800, 1, 0),
                         {.step_id = 20, .exactly_once = false})
                    .ok());
  }
  EXPECT_EQ(e_->DescribeTable("t")->rows_in_memory, 100);
  // Incremental against the restored checkpoint, then complete.
  PrepareResult p;
  Checkpoint(*s2, 2, 0, 1, &p);
  EXPECT_TRUE(p.incremental);
  Checkpoint(*s2, 3, 0, 0);
  ExpectRowsEqual(*e_, *e2, "t", ids);
  for (uint64_t id : {2u, 3u}) {
    auto e3 = NewEngine();
    auto s3 = OpenStore(e3.get(), root_);
    auto r = s3->Restore(Opt({.checkpoint_id = id}));
    ASSERT_TRUE(r.ok()) << r.status();
    ExpectRowsEqual(*e_, *e3, "t", ids);
    std::vector<std::pair<uint64_t, uint64_t>> rows;
    ASSERT_TRUE(e3->ForEachRow("t", [&](uint64_t id, const RowSnapshot& row) {
                    rows.emplace_back(id, row.version);
                  }).ok());
    EXPECT_EQ(rows.size(), 100u) << "checkpoint " << id;
  }
}

INSTANTIATE_TEST_SUITE_P(Restore, CheckpointTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "Lazy" : "Eager";
                         });

// A shard killed while writing: nothing half-written is ever used, the
// leftovers are removed when the store is opened again, and the previous
// checkpoint restores. The kill is real (SIGKILL through the failpoint's
// "crash" action) in a child process that re-runs this test
// ("threadsafe" death tests start a fresh process, so RocksDB's threads are
// sound there); the child finds the parent's folder through the
// environment.
class CheckpointCrash : public ::testing::TestWithParam<const char*> {};

TEST_P(CheckpointCrash, LeavesNoUsableHalfCheckpoint) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  constexpr char kEnv[] = "PLEXUS_CHECKPOINT_CRASH_ROOT";
  std::unique_ptr<plexus::testing::TempDir> tmp;
  std::string root;
  if (const char* r = std::getenv(kEnv)) {
    root = r;  // the child
  } else {
    tmp = std::make_unique<plexus::testing::TempDir>();
    root = tmp->Sub("checkpoints");
    ::setenv(kEnv, root.c_str(), 1);
  }
  std::vector<float> expected;
  auto fill = [&](Engine& e) {
    EXPECT_TRUE(e.CreateTable({SimpleTable("t", 4)}).ok());
    EXPECT_TRUE(PushRows(e, "t", {1, 2, 3}, Iota(12, 1, 1)).ok());
  };
  {
    auto e = NewEngine();
    fill(*e);
    expected = PullRows(*e, "t", {1, 2, 3});
  }
  EXPECT_EXIT(
      {
        auto e = NewEngine();
        fill(*e);
        auto s = OpenStore(e.get(), root);
        Checkpoint(*s, 1, 0);
        (void)PushRows(*e, "t", {2}, Iota(4, 9, 0));
        (void)failpoint::Set(GetParam(), "crash");
        (void)s->Prepare({.checkpoint_id = 2, .base_checkpoint_id = 1});
        (void)s->Commit(2, kWait);
        std::_Exit(3);  // not reached: the failpoint kills the process
      },
      ::testing::KilledBySignal(SIGKILL), "");
  ::unsetenv(kEnv);
  // The child left a half checkpoint: staging, or a linked directory
  // without its manifest.
  const bool staged = fs::exists(root + "/.staging/2");
  const bool linked = fs::exists(root + "/2");
  EXPECT_TRUE(staged || linked);
  EXPECT_FALSE(fs::exists(root + "/2/PLEXUS_SHARD_MANIFEST"));
  auto e = NewEngine();
  auto s = OpenStore(e.get(), root);
  EXPECT_FALSE(fs::exists(root + "/2"));
  EXPECT_TRUE(fs::is_empty(root + "/.staging"));
  auto list = s->List();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].checkpoint_id, 1u);
  EXPECT_EQ(s->Restore({.checkpoint_id = 2}).status().code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(s->Restore({.checkpoint_id = 1}).ok());
  EXPECT_EQ(PullRows(*e, "t", {1, 2, 3}), expected);
  // The id can be written again.
  ASSERT_TRUE(PushRows(*e, "t", {2}, Iota(4, 9, 0)).ok());
  Checkpoint(*s, 2, 0, 1);
}

INSTANTIATE_TEST_SUITE_P(
    Failpoints, CheckpointCrash,
    ::testing::Values("ps.checkpoint.before_link",
                      "ps.checkpoint.after_link_before_manifest"));

}  // namespace
}  // namespace plexus::ps
