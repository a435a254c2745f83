#include "common/thread_pool.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <vector>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"
#include "common/tsan.h"

namespace plexus {
namespace {

// Idle threads poll for PLEXUS_POOL_SPIN_US where it is set (the
// ThreadPoolPolling run sets 200), else for kDefaultPoolSpin from 8
// usable CPUs up.
TEST(ThreadPool, PollingFollowsTheEnvironmentOrTheCpuCount) {
  const char* env = std::getenv("PLEXUS_POOL_SPIN_US");
  if (env != nullptr) {
    EXPECT_EQ(PoolSpin(), absl::Microseconds(std::atoi(env)));
  } else {
    EXPECT_EQ(PoolSpin(),
              UsableCpus() >= 8 ? kDefaultPoolSpin : absl::ZeroDuration());
  }
  EXPECT_GE(UsableCpus(), 1);
}

TEST(ThreadPool, RunsEveryClosure) {
  std::atomic<int> sum{0};
  absl::BlockingCounter done(100);
  ThreadPool pool(3);
  for (int i = 1; i <= 100; ++i) {
    pool.Schedule([&, i] {
      sum += i;
      done.DecrementCount();
    });
  }
  done.Wait();
  EXPECT_EQ(sum.load(), 5050);
}

TEST(ThreadPool, RunsClosuresConcurrently) {
  // Two closures that each wait for the other can only both finish if they
  // run on different threads at once.
  ThreadPool pool(2);
  absl::Notification a, b;
  absl::BlockingCounter done(2);
  pool.Schedule([&] {
    a.Notify();
    b.WaitForNotification();
    done.DecrementCount();
  });
  pool.Schedule([&] {
    b.Notify();
    a.WaitForNotification();
    done.DecrementCount();
  });
  done.Wait();
}

TEST(ThreadPool, DestructorDrainsTheQueue) {
  std::atomic<int> n{0};
  {
    ThreadPool pool(1);
    for (int i = 0; i < 50; ++i) pool.Schedule([&] { ++n; });
  }
  EXPECT_EQ(n.load(), 50);
}

TEST(ThreadPool, ThreadsBlockTerminationSignalsButNotFaults) {
  // A daemon's SIGTERM must reach its signal thread, never a pool thread
  // (where it would kill the process); the creator's mask is unchanged.
  sigset_t before;
  pthread_sigmask(SIG_BLOCK, nullptr, &before);
  ThreadPool pool(1);
  sigset_t after;
  pthread_sigmask(SIG_BLOCK, nullptr, &after);
  EXPECT_EQ(sigismember(&after, SIGTERM), sigismember(&before, SIGTERM));
  sigset_t in_pool;
  absl::Notification done;
  pool.Schedule([&] {
    pthread_sigmask(SIG_BLOCK, nullptr, &in_pool);
    done.Notify();
  });
  done.WaitForNotification();
  EXPECT_TRUE(sigismember(&in_pool, SIGTERM));
  EXPECT_TRUE(sigismember(&in_pool, SIGINT));
  EXPECT_FALSE(sigismember(&in_pool, SIGSEGV));
}

TEST(ParallelFor, RunsEveryPartOnce) {
  ThreadPool pool(3);
  for (int parts : {0, 1, 2, 7, 64}) {
    std::vector<std::atomic<int>> runs(static_cast<size_t>(parts));
    ParallelFor(&pool, parts, [&](int i) { ++runs[static_cast<size_t>(i)]; });
    for (int i = 0; i < parts; ++i) {
      EXPECT_EQ(runs[static_cast<size_t>(i)].load(), 1)
          << "part " << i << " of " << parts;
    }
  }
  std::vector<int> serial(5, 0);
  ParallelFor(nullptr, 5, [&](int i) { serial[static_cast<size_t>(i)] = i; });
  EXPECT_EQ(serial, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(ParallelFor, CallerRunsThePartsWhenThePoolIsBusy) {
  // The pool's only thread is held until ParallelFor has returned: the
  // caller must run every part itself instead of waiting for the helper.
  ThreadPool pool(1);
  absl::Notification release;
  pool.Schedule([&] { release.WaitForNotification(); });
  std::atomic<int> sum{0};
  ParallelFor(&pool, 10, [&](int i) { sum += i; });
  EXPECT_EQ(sum.load(), 45);
  release.Notify();
}

TEST(PartsFor, OnePartPerShareAtMostOnePerThreadPlusTheCaller) {
  ThreadPool pool(3);
  EXPECT_EQ(PartsFor(&pool, 0, 1024), 1);
  EXPECT_EQ(PartsFor(&pool, 2047, 1024), 1);
  EXPECT_EQ(PartsFor(&pool, 2048, 1024), 2);
  EXPECT_EQ(PartsFor(&pool, 1 << 20, 1024), 4);
  EXPECT_EQ(PartsFor(nullptr, 1 << 20, 1024), 1);
}

TEST(RunOnThreads, EachIndexOnItsOwnThread) {
  // Three parts that each wait for all three can only finish on three
  // threads at once; each index runs once.
  absl::Mutex mu;
  int arrived = 0;
  std::vector<std::atomic<int>> runs(3);
  RunOnThreads(3, [&](int i) {
    ++runs[static_cast<size_t>(i)];
    MutexLock lock(&mu);
    ++arrived;
    auto all = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return arrived == 3; };
    Await(&mu, absl::Condition(&all));
  });
  for (const auto& r : runs) EXPECT_EQ(r.load(), 1);
}

}  // namespace
}  // namespace plexus
