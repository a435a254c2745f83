#include "common/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>

#include "absl/synchronization/blocking_counter.h"
#include "absl/synchronization/notification.h"

namespace plexus {
namespace {

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

}  // namespace
}  // namespace plexus
