// Private to ps/storage. Scoped locks over absl::Mutex that ThreadSanitizer
// can see.
//
// Debian's abseil is not built with -fsanitize=thread, so TSan cannot see the
// happens-before edges that absl::Mutex creates and reports every access
// guarded by one as a race. These wrappers add the edges by hand
// (__tsan_acquire after locking, __tsan_release before unlocking) in TSan
// builds and are plain absl::MutexLock / ReaderMutexLock otherwise. Use them
// for every lock in ps/storage; for Mutex::Await* use AwaitWithDeadline below.
//
// Thread safety: as absl::Mutex.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

#if defined(__SANITIZE_THREAD__)
#define PLEXUS_PS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PLEXUS_PS_TSAN 1
#endif
#endif

#ifdef PLEXUS_PS_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace plexus::ps {

inline void TsanAcquire(const absl::Mutex* mu) {
#ifdef PLEXUS_PS_TSAN
  __tsan_acquire(const_cast<absl::Mutex*>(mu));
#endif
}

inline void TsanRelease(const absl::Mutex* mu) {
#ifdef PLEXUS_PS_TSAN
  __tsan_release(const_cast<absl::Mutex*>(mu));
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

// mu->TryLock() / mu->Unlock() with the TSan edges; prefer the scoped locks.
inline bool TryLock(absl::Mutex* mu) ABSL_EXCLUSIVE_TRYLOCK_FUNCTION(true, mu) {
  if (!mu->TryLock()) return false;
  TsanAcquire(mu);
  return true;
}
inline void Unlock(absl::Mutex* mu) ABSL_UNLOCK_FUNCTION(mu) {
  TsanRelease(mu);
  mu->Unlock();
}

// mu->AwaitWithDeadline(cond, deadline) with the TSan edges of the unlock and
// relock it does inside. REQUIRES: *mu held (exclusively).
inline bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                              absl::Time deadline)
    ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
  TsanRelease(mu);
  const bool ok = mu->AwaitWithDeadline(cond, deadline);
  TsanAcquire(mu);
  return ok;
}

}  // namespace plexus::ps
