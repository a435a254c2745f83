// A fixed-size pool of threads running queued closures in FIFO order.
//
// On a machine of 8 or more usable CPUs an idle pool thread, and a
// ParallelFor caller waiting for its helpers, first polls for up to
// PoolSpin() (kDefaultPoolSpin; $PLEXUS_POOL_SPIN_US overrides, 0 turns it
// off) before it sleeps: work handed over within that window starts without
// a wake-up, which costs tens of microseconds on a virtual machine, about a
// PS round trip. The poll yields the CPU between looks.
//
// Thread safety: Schedule() may be called from any thread, including pool
// threads. The destructor runs every closure already scheduled, then joins.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <queue>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace plexus {

class ThreadPool {
 public:
  // REQUIRES: num_threads >= 1.
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> fn);
  int size() const { return static_cast<int>(threads_.size()); }

 private:
  void Loop();

  absl::Mutex mu_;
  std::queue<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  std::atomic<int64_t> queued_{0};  // queue_.size(), read without mu_
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// Runs fn(0) .. fn(parts - 1), each once, on the calling thread and up to
// parts - 1 threads of `pool` (null: all on the calling thread), and returns
// when all have run. The caller claims parts itself rather than waiting for
// the pool: a busy pool only means fewer helpers, never a wait for a queued
// closure, and a helper that starts after every part is claimed returns at
// once.
void ParallelFor(ThreadPool* pool, int parts, absl::FunctionRef<void(int)> fn);

// How many parts ParallelFor should split `work` units into: one per
// `per_part` units, at most one per pool thread plus the caller (1 without a
// pool).
int PartsFor(const ThreadPool* pool, int64_t work, int64_t per_part);

// How long an idle pool thread polls for work before it sleeps (see
// ThreadPool; sparse tables retry a busy stripe, and data-plane connections
// look for bytes, as long before they wait); zero below 8 usable CPUs.
absl::Duration PoolSpin();
// PoolSpin() from 8 usable CPUs up, unless the environment says otherwise.
// Long enough to span a PS call of a few hundred rows: on a 16-core VM a
// 4,096 x 64 sparse pull took 290-350 us polling for 50 us, 255-300 us
// polling for 200 (bench/ps/ps_bench).
inline constexpr absl::Duration kDefaultPoolSpin = absl::Microseconds(200);

// Calls done() until it returns true (then true) or `limit` has passed
// (then false; done() runs once when limit is zero), yielding the CPU
// between calls.
template <typename Done>
bool SpinUntil(absl::Duration limit, Done done) {
  if (done()) return true;
  if (limit <= absl::ZeroDuration()) return false;
  const absl::Time until = absl::Now() + limit;
  do {
    std::this_thread::yield();
    if (done()) return true;
  } while (absl::Now() < until);
  return false;
}

// CPUs this process may run on (its affinity mask, which a container's or
// a batch job's cpuset narrows); at least 1.
int UsableCpus();

// Runs fn(0) .. fn(n - 1) on n threads started for the call (fn(0) on the
// calling one) and joins them: for work that blocks (disk writes) or runs so
// rarely that starting threads costs nothing beside it. Like a pool's, the
// threads start with asynchronous signals blocked.
void RunOnThreads(int n, absl::FunctionRef<void(int)> fn);

}  // namespace plexus
