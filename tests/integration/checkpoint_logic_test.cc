// coordinator/checkpointing's Checkpointer against fake shards and an
// in-memory manifest store, with a real Scheduler on a FakeClock: the
// protocol's order, what an abort leaves (nothing published, every shard
// told), ids never reused, retention, fall-back past DATA_LOSS, steps <= C
// awaited and steps > C held back only until the cut, and PS recovery in
// Poll. (Pure logic; it sits with the other checkpoint tests.)
#include "coordinator/checkpointing/checkpointer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"

namespace plexus::coordinator::checkpointing {
namespace {

using scheduling::NoTaskReason;
using scheduling::Scheduler;
using scheduling::SchedulerOptions;

class FakeShards : public ShardDriver {
 public:
  explicit FakeShards(int n) : n_(n), incarnation_(n, 1), up_(n, true) {}

  int num_shards() const override { return n_; }
  absl::StatusOr<absl::Duration> Prepare(int shard,
                                         const PrepareArgs& a) override {
    absl::MutexLock l(&mu_);
    log_.push_back(absl::StrCat("prepare ", shard, " ", a.checkpoint_id,
                                " step ", a.step_id, " base ",
                                a.base_checkpoint_id));
    if (!up_[shard]) return absl::UnavailableError("down");
    return absl::Microseconds(10 + shard);
  }
  absl::StatusOr<ShardPart> Commit(int shard, uint64_t id,
                                   absl::Duration) override {
    absl::MutexLock l(&mu_);
    log_.push_back(absl::StrCat("commit ", shard, " ", id));
    if (shard == fail_commit_on_) {
      return absl::ResourceExhaustedError("disk full");
    }
    ShardPart p;
    p.directory = absl::StrCat(id);
    p.files.push_back({"000001.sst", 10, 7});
    return p;
  }
  absl::Status Finalize(int shard, uint64_t id, bool published,
                        uint32_t keep_last, const std::string& job) override {
    absl::MutexLock l(&mu_);
    log_.push_back(absl::StrCat("finalize ", shard, " ", id, " ",
                                published ? "published" : "aborted", " keep ",
                                keep_last, " job ", job));
    return absl::OkStatus();
  }
  absl::Status Restore(int shard, const Manifest& m) override {
    absl::MutexLock l(&mu_);
    log_.push_back(absl::StrCat("restore ", shard, " ", m.checkpoint_id));
    if (m.checkpoint_id == damaged_ && shard == n_ - 1) {
      return absl::DataLossError("checkpoint file 000001.sst has crc32c 1");
    }
    return absl::OkStatus();
  }
  absl::StatusOr<ShardProbe> Probe(int shard) override {
    absl::MutexLock l(&mu_);
    if (!probed_.HasBeenNotified()) probed_.Notify();
    if (!up_[shard]) return absl::UnavailableError("down");
    return ShardProbe{.incarnation = incarnation_[shard]};
  }

  std::vector<std::string> TakeLog() {
    absl::MutexLock l(&mu_);
    return std::exchange(log_, {});
  }
  void SetUp(int shard, bool up) {
    absl::MutexLock l(&mu_);
    up_[shard] = up;
  }
  void Restart(int shard) {
    absl::MutexLock l(&mu_);
    ++incarnation_[shard];
  }
  void FailCommitOn(int shard) {
    absl::MutexLock l(&mu_);
    fail_commit_on_ = shard;
  }
  void Damage(uint64_t id) {
    absl::MutexLock l(&mu_);
    damaged_ = id;
  }
  absl::Notification& probed() { return probed_; }

 private:
  const int n_;
  absl::Mutex mu_;
  std::vector<uint64_t> incarnation_;
  std::vector<bool> up_;
  int fail_commit_on_ = -1;
  uint64_t damaged_ = 0;
  std::vector<std::string> log_;
  absl::Notification probed_;
};

class MemoryManifests : public ManifestStore {
 public:
  absl::StatusOr<uint64_t> NextId() override {
    absl::MutexLock l(&mu_);
    return ++last_;
  }
  absl::Status Publish(const Manifest& m) override {
    absl::MutexLock l(&mu_);
    if (!publish_error_.ok()) return publish_error_;
    manifests_[m.checkpoint_id] = m;
    return absl::OkStatus();
  }
  absl::StatusOr<std::vector<Manifest>> List() override {
    absl::MutexLock l(&mu_);
    std::vector<Manifest> out;
    for (auto it = manifests_.rbegin(); it != manifests_.rend(); ++it) {
      out.push_back(it->second);
    }
    return out;
  }
  absl::Status Remove(uint64_t id) override {
    absl::MutexLock l(&mu_);
    manifests_.erase(id);
    return absl::OkStatus();
  }
  void FailPublish(absl::Status st) {
    absl::MutexLock l(&mu_);
    publish_error_ = std::move(st);
  }

 private:
  absl::Mutex mu_;
  uint64_t last_ = 0;
  std::map<uint64_t, Manifest> manifests_;
  absl::Status publish_error_;
};

class CheckpointerTest : public ::testing::Test {
 protected:
  explicit CheckpointerTest(uint32_t keep = 2) {
    scheduler_ = std::make_unique<Scheduler>(SchedulerOptions{}, &clock_);
    CheckpointerOptions o;
    o.keep = keep;
    checkpointer_ = std::make_unique<Checkpointer>(o, &shards_, &manifests_,
                                                   scheduler_.get(), &clock_);
  }

  // A job of `steps` golden steps and two workers able to run it.
  void StartJob(uint64_t steps) {
    scheduling::JobSpec spec;
    spec.job_id = "job";
    spec.work = scheduling::StepLoop{.function_name = "f", .num_steps = steps};
    ASSERT_TRUE(scheduler_->SubmitJob(spec).ok());
    ASSERT_TRUE(scheduler_->AddWorker(1, 1, {"f"}).ok());
    ASSERT_TRUE(scheduler_->AddWorker(2, 1, {"f"}).ok());
  }
  scheduling::NextTaskResult Next(uint64_t worker) {
    auto r = scheduler_->NextTask(worker, 1, clock_.Now());
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : scheduling::NextTaskResult{};
  }
  void Succeed(uint64_t worker, const scheduling::Task& t) {
    auto d = scheduler_->ReportResult(
        worker, 1, {.closure_id = t.closure_id, .attempt = t.attempt});
    ASSERT_TRUE(d.ok()) << d.status();
  }
  // Runs the next step on `worker` to completion; returns its step.
  uint64_t RunOne(uint64_t worker) {
    auto n = Next(worker);
    EXPECT_TRUE(n.task.has_value());
    if (!n.task) return 0;
    Succeed(worker, *n.task);
    return n.task->step_id;
  }

  FakeClock clock_;
  FakeShards shards_{2};
  MemoryManifests manifests_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Checkpointer> checkpointer_;
};

TEST_F(CheckpointerTest, TakePreparesCommitsPublishesThenFinalizes) {
  StartJob(10);
  for (int i = 0; i < 3; ++i) RunOne(1);
  auto r = checkpointer_->Take("", 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest.checkpoint_id, 1u);
  EXPECT_EQ(r->manifest.step_id, 3u);
  EXPECT_EQ(r->manifest.job_id, "job");
  ASSERT_EQ(r->manifest.shards.size(), 2u);
  EXPECT_EQ(r->manifest.shards[1].shard_index, 1u);
  EXPECT_EQ(r->pause, absl::Microseconds(11));
  EXPECT_EQ(
      shards_.TakeLog(),
      (std::vector<std::string>{
          "prepare 0 1 step 3 base 0", "prepare 1 1 step 3 base 0",
          "commit 0 1", "commit 1 1", "finalize 0 1 published keep 2 job job",
          "finalize 1 1 published keep 2 job job"}));
  // The next one is incremental against it; a C in the past is refused.
  RunOne(1);
  EXPECT_EQ(checkpointer_->Take("", 2).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto r2 = checkpointer_->Take("", 0);
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_EQ(r2->manifest.base_checkpoint_id, 1u);
  EXPECT_EQ(r2->manifest.step_id, 4u);
  EXPECT_EQ(checkpointer_->Take("nope", 0).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CheckpointerTest, StepsUpToCFinishAndLaterOnesWaitOnlyForTheCut) {
  StartJob(10);
  RunOne(1);
  auto running = Next(1);  // step 2, still running
  ASSERT_TRUE(running.task.has_value());
  absl::StatusOr<TakeResult> r;
  std::thread t([&] { r = checkpointer_->Take("", 0); });
  // The Take probes the shards once it holds steps > 2 back.
  ASSERT_TRUE(
      shards_.probed().WaitForNotificationWithTimeout(absl::Seconds(30)));
  auto held = Next(2);
  EXPECT_FALSE(held.task.has_value());
  EXPECT_EQ(held.no_task_reason, NoTaskReason::kPaused);
  Succeed(1, *running.task);
  t.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest.step_id, 2u);
  // Dispatch goes on past C.
  auto after = Next(2);
  ASSERT_TRUE(after.task.has_value());
  EXPECT_EQ(after.task->step_id, 3u);
}

TEST_F(CheckpointerTest, StopEndsAWaitingCheckpointAndLiftsTheHold) {
  StartJob(10);
  auto running = Next(1);  // step 1 runs and never finishes here
  ASSERT_TRUE(running.task.has_value());
  absl::StatusOr<TakeResult> r;
  std::thread t([&] { r = checkpointer_->Take("", 0); });
  ASSERT_TRUE(
      shards_.probed().WaitForNotificationWithTimeout(absl::Seconds(30)));
  checkpointer_->Stop();
  t.join();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(checkpointer_->List(0)->empty());
  EXPECT_TRUE(Next(2).task.has_value());  // step 2 is not held back
  EXPECT_EQ(checkpointer_->Take("", 0).status().code(),
            absl::StatusCode::kUnavailable);
}

// A shard that restarts while the checkpoint waits for its steps answers
// probes, but those steps fail until it is restored (by Poll, on the same
// thread): the checkpoint must give up at once, not wait for its timeout
// (the nemesis found a 600 s stall that failed the job).
TEST_F(CheckpointerTest, AShardRestartedDuringTheWaitEndsTheCheckpoint) {
  StartJob(10);
  checkpointer_->Poll();   // learns every shard's incarnation
  auto running = Next(1);  // step 1 runs and never finishes here
  ASSERT_TRUE(running.task.has_value());
  shards_.Restart(0);
  absl::StatusOr<TakeResult> r = checkpointer_->Take("", 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find("shard 0 restarted"), std::string::npos)
      << r.status();
  EXPECT_TRUE(checkpointer_->List(0)->empty());
  EXPECT_TRUE(Next(2).task.has_value());  // the hold on step 2 is lifted
}

TEST_F(CheckpointerTest, AFailedCommitOrManifestPublishesNothing) {
  StartJob(10);
  RunOne(1);
  shards_.FailCommitOn(1);
  auto r = checkpointer_->Take("", 0);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted)
      << r.status();
  auto log = shards_.TakeLog();
  EXPECT_EQ(
      std::count(log.begin(), log.end(), "finalize 0 1 aborted keep 0 job "),
      1);
  EXPECT_EQ(
      std::count(log.begin(), log.end(), "finalize 1 1 aborted keep 0 job "),
      1);
  EXPECT_TRUE(checkpointer_->List(0)->empty());
  // Dispatch is not held back after a failure.
  EXPECT_EQ(RunOne(1), 2u);
  shards_.FailCommitOn(-1);
  manifests_.FailPublish(absl::ResourceExhaustedError("coordinator disk"));
  EXPECT_FALSE(checkpointer_->Take("", 0).ok());
  EXPECT_TRUE(checkpointer_->List(0)->empty());
  manifests_.FailPublish(absl::OkStatus());
  auto ok = checkpointer_->Take("", 0);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->manifest.checkpoint_id, 3u);  // 1 and 2 are never reused
}

TEST_F(CheckpointerTest, RetentionKeepsTheNewestTwo) {
  StartJob(10);
  for (int i = 0; i < 3; ++i) {
    RunOne(1);
    ASSERT_TRUE(checkpointer_->Take("", 0).ok());
  }
  auto list = checkpointer_->List(0);
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].checkpoint_id, 3u);
  EXPECT_EQ((*list)[1].checkpoint_id, 2u);
  EXPECT_EQ(checkpointer_->List(1).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CheckpointerTest, RestoreFallsBackPastDataLossAndRerunsLaterSteps) {
  StartJob(10);
  RunOne(1);
  RunOne(1);
  ASSERT_TRUE(checkpointer_->Take("", 0).ok());  // 1 at step 2
  RunOne(1);
  RunOne(1);
  ASSERT_TRUE(checkpointer_->Take("", 0).ok());  // 2 at step 4
  RunOne(1);
  shards_.Damage(2);
  EXPECT_EQ(checkpointer_->Restore(2, false).status().code(),
            absl::StatusCode::kDataLoss);
  shards_.TakeLog();
  auto r = checkpointer_->Restore(0, true);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->manifest.checkpoint_id, 1u);
  ASSERT_EQ(r->skipped.size(), 1u);
  EXPECT_EQ(r->skipped[0].code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(shards_.TakeLog(),
            (std::vector<std::string>{"restore 0 2", "restore 1 2",
                                      "restore 0 1", "restore 1 1"}));
  // Steps 3.. run again, in order.
  EXPECT_EQ(RunOne(1), 3u);
  EXPECT_EQ(checkpointer_->Restore(99, true).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(CheckpointerTest, PollPausesForALostShardAndRestoresWhenItIsBack) {
  StartJob(10);
  checkpointer_->Poll();  // learns the incarnations
  RunOne(1);
  ASSERT_TRUE(checkpointer_->Take("", 0).ok());  // at step 1
  RunOne(1);
  RunOne(1);
  shards_.TakeLog();
  shards_.SetUp(1, false);
  checkpointer_->Poll();
  EXPECT_TRUE(checkpointer_->recovering());
  EXPECT_EQ(Next(1).no_task_reason, NoTaskReason::kPaused);
  EXPECT_EQ(checkpointer_->Take("", 0).status().code(),
            absl::StatusCode::kUnavailable);
  shards_.Restart(1);
  shards_.SetUp(1, true);
  checkpointer_->Poll();
  EXPECT_FALSE(checkpointer_->recovering());
  EXPECT_EQ(shards_.TakeLog(),
            (std::vector<std::string>{"restore 0 1", "restore 1 1"}));
  // Steps after C = 1 run again.
  EXPECT_EQ(RunOne(1), 2u);
  // A shard that answers with the same incarnation after a blip: no
  // restore, dispatch resumes.
  shards_.SetUp(0, false);
  checkpointer_->Poll();
  EXPECT_TRUE(checkpointer_->recovering());
  shards_.SetUp(0, true);
  checkpointer_->Poll();
  EXPECT_FALSE(checkpointer_->recovering());
  EXPECT_TRUE(Next(1).task.has_value());
}

}  // namespace
}  // namespace plexus::coordinator::checkpointing
