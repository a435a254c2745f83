#include "common/thread_pool.h"

#include <glog/logging.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <memory>

#include "absl/strings/numbers.h"
#include "common/tsan.h"

namespace plexus {
namespace {

// While alive, the calling thread has every asynchronous signal blocked, so
// the threads it starts inherit that mask: a thread started before a daemon
// blocks SIGTERM for its signal thread never takes the daemon's SIGTERM and
// dies of it. Faults stay deliverable, for their stack traces.
class AsyncSignalsBlocked {
 public:
  AsyncSignalsBlocked() {
    sigset_t all;
    sigfillset(&all);
    for (int sig :
         {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) {
      sigdelset(&all, sig);
    }
    pthread_sigmask(SIG_BLOCK, &all, &old_);
  }
  ~AsyncSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  AsyncSignalsBlocked(const AsyncSignalsBlocked&) = delete;
  AsyncSignalsBlocked& operator=(const AsyncSignalsBlocked&) = delete;

 private:
  sigset_t old_;
};

}  // namespace

absl::Duration PoolSpin() {
  static const absl::Duration spin = [] {
    const char* env = std::getenv("PLEXUS_POOL_SPIN_US");
    int64_t us = 0;
    if (env != nullptr && absl::SimpleAtoi(env, &us) && us >= 0) {
      return absl::Microseconds(us);
    }
    return UsableCpus() >= 8 ? kDefaultPoolSpin : absl::ZeroDuration();
  }();
  return spin;
}

ThreadPool::ThreadPool(int num_threads) {
  CHECK_GE(num_threads, 1);
  AsyncSignalsBlocked blocked;
  threads_.reserve(num_threads);
  for (int i = 0; i < num_threads; ++i)
    threads_.emplace_back([this] { Loop(); });
}

ThreadPool::~ThreadPool() {
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (auto& t : threads_) t.join();
}

void ThreadPool::Schedule(std::function<void()> fn) {
  MutexLock lock(&mu_);
  queue_.push(std::move(fn));
  queued_.fetch_add(1, std::memory_order_release);
}

void ThreadPool::Loop() {
  const absl::Duration spin = PoolSpin();
  while (true) {
    SpinUntil(spin,
              [this] { return queued_.load(std::memory_order_acquire) > 0; });
    std::function<void()> fn;
    {
      MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      Await(&mu_, absl::Condition(&ready));
      if (queue_.empty()) return;  // stopping and drained
      fn = std::move(queue_.front());
      queue_.pop();
      queued_.fetch_sub(1, std::memory_order_relaxed);
    }
    fn();
  }
}

void ParallelFor(ThreadPool* pool, int parts, absl::FunctionRef<void(int)> fn) {
  if (pool == nullptr || parts <= 1) {
    for (int i = 0; i < parts; ++i) fn(i);
    return;
  }
  // Shared with helpers that may start after this call returned: they then
  // find no part left and never touch `fn`.
  struct State {
    std::atomic<int> next{0};
    // Parts finished; changed under mu (so that a waiter in Await sees it),
    // read without it while the caller polls.
    std::atomic<int> done{0};
    absl::Mutex mu;
  };
  auto state = std::make_shared<State>();
  auto work = [state, parts](absl::FunctionRef<void(int)> f) {
    for (int i; (i = state->next.fetch_add(1)) < parts;) {
      f(i);
      MutexLock lock(&state->mu);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int helpers = std::min(parts - 1, pool->size());
  for (int h = 0; h < helpers; ++h) {
    pool->Schedule([work, fn] { work(fn); });
  }
  work(fn);
  auto all_done = [&state, parts] {
    return state->done.load(std::memory_order_acquire) == parts;
  };
  if (SpinUntil(PoolSpin(), all_done)) {
    // The last helper may still hold mu for its count: wait for it, so the
    // caller's happens-after covers every part (and TSan sees it).
    MutexLock lock(&state->mu);
    return;
  }
  MutexLock lock(&state->mu);
  Await(&state->mu, absl::Condition(&all_done));
}

int PartsFor(const ThreadPool* pool, int64_t work, int64_t per_part) {
  if (pool == nullptr) return 1;
  return static_cast<int>(
      std::clamp<int64_t>(work / per_part, 1, int64_t{pool->size()} + 1));
}

void RunOnThreads(int n, absl::FunctionRef<void(int)> fn) {
  std::vector<std::thread> helpers;
  {
    AsyncSignalsBlocked blocked;
    for (int i = 1; i < n; ++i) helpers.emplace_back([fn, i] { fn(i); });
  }
  if (n > 0) fn(0);
  for (auto& h : helpers) h.join();
}

int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    return std::max(1, CPU_COUNT(&set));
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

}  // namespace plexus
