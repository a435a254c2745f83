// absl::Mutex locks that ThreadSanitizer can see.
//
// Debian's abseil is not built with -fsanitize=thread, so TSan cannot see the
// happens-before edges absl::Mutex creates and reports every access guarded
// by one as a race. TsanAcquire(mu) after locking and TsanRelease(mu) before
// unlocking add them by hand in TSan builds (no-ops otherwise); the scoped
// locks below do it for you. Use them wherever TSan runs (ps/storage, the
// thread pool); for Mutex::Await* use AwaitWithDeadline or Await below.
//
// Thread safety: as absl::Mutex.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#if defined(__SANITIZE_THREAD__)
#define PLEXUS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PLEXUS_TSAN 1
#endif
#endif

#ifdef PLEXUS_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace plexus {

inline void TsanAcquire(const void* addr) {
#ifdef PLEXUS_TSAN
  __tsan_acquire(const_cast<void*>(addr));
#else
  (void)addr;
#endif
}

inline void TsanRelease(const void* addr) {
#ifdef PLEXUS_TSAN
  __tsan_release(const_cast<void*>(addr));
#else
  (void)addr;
#endif
}

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu)
      : mu_(mu) {
    mu_->Lock();
    TsanAcquire(mu_);
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() {
    TsanRelease(mu_);
    mu_->Unlock();
  }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  absl::Mutex* const mu_;
};

class ABSL_SCOPED_LOCKABLE ReaderMutexLock {
 public:
  explicit ReaderMutexLock(absl::Mutex* mu) ABSL_SHARED_LOCK_FUNCTION(mu)
      : mu_(mu) {
    mu_->ReaderLock();
    TsanAcquire(mu_);
  }
  ~ReaderMutexLock() ABSL_UNLOCK_FUNCTION() {
    TsanRelease(mu_);
    mu_->ReaderUnlock();
  }
  ReaderMutexLock(const ReaderMutexLock&) = delete;
  ReaderMutexLock& operator=(const ReaderMutexLock&) = delete;

 private:
  absl::Mutex* const mu_;
};

// mu->Lock() / mu->TryLock() / mu->Unlock() with the TSan edges; prefer the
// scoped locks.
inline void Lock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) {
  mu->Lock();
  TsanAcquire(mu);
}
inline bool TryLock(absl::Mutex* mu) ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true, mu) {
  if (!mu->TryLock()) return false;
  TsanAcquire(mu);
  return true;
}
inline void Unlock(absl::Mutex* mu) ABSL_UNLOCK_FUNCTION(mu) {
  TsanRelease(mu);
  mu->Unlock();
}

// A condition evaluated with the edges of the mutex it runs under: absl
// evaluates a waiter's condition on whichever thread unlocks, inside the
// mutex, where TSan sees no lock.
class TsanCondition {
 public:
  TsanCondition(const absl::Condition& cond, const absl::Mutex* mu)
      : cond_(cond), mu_(mu) {}
  bool operator()() const {
    TsanAcquire(mu_);
    const bool ready = cond_.Eval();
    TsanRelease(mu_);
    return ready;
  }

 private:
  const absl::Condition& cond_;
  const absl::Mutex* const mu_;
};

// mu->AwaitWithDeadline(cond, deadline) / mu->Await(cond) with the TSan
// edges of the unlock and relock they do inside and of the condition's
// evaluations. REQUIRES: *mu held (exclusively).
inline bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                              absl::Time deadline)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  const TsanCondition edged(cond, mu);
  TsanRelease(mu);
  const bool ok = mu->AwaitWithDeadline(absl::Condition(&edged), deadline);
  TsanAcquire(mu);
  return ok;
}
inline void Await(absl::Mutex* mu, const absl::Condition& cond)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  AwaitWithDeadline(mu, cond, absl::InfiniteFuture());
}

}  // namespace plexus
