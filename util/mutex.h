// A mutex, a scoped lock and a condition variable that clang's thread-safety
// analysis (-Wthread-safety, `bazel build --config=tsa`) understands, after
// LevelDB's port::Mutex and port::CondVar: thin inline wrappers around
// std::mutex and std::condition_variable.
//
// Why not absl::Mutex, which is annotated too: Debian's Abseil is not built
// for ThreadSanitizer, so locks and waits on absl::Mutex are invisible to
// `--config=tsan`, which then reports every access they guard as a race.
// std::mutex is pthreads underneath, which TSan intercepts. The wrappers add
// no work to a lock or a wait.
//
// Use:
//   Mutex mu_;
//   CondVar cv_;
//   int count_ ABSL_GUARDED_BY(mu_) = 0;
//   ...
//   MutexLock lock(&mu_);
//   cv_.WaitUntil(&mu_, deadline,
//                 [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return count_ > 0;
//                 });
//
// Thread-safe, like the std types they wrap.
#ifndef PSTRAIN_UTIL_MUTEX_H_
#define PSTRAIN_UTIL_MUTEX_H_

#include <condition_variable>
#include <mutex>

#include "absl/base/thread_annotations.h"
#include "absl/time/time.h"

namespace pstrain {

class CondVar;

// A non-recursive exclusive lock: std::mutex, annotated as a capability.
class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() { mu_.lock(); }
  void Unlock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  // Tells the analysis that the calling thread holds the lock (it checks
  // nothing at run time), for code it cannot follow.
  void AssertHeld() const ABSL_ASSERT_EXCLUSIVE_LOCK() {}

 private:
  friend class CondVar;
  std::mutex mu_;
};

// Holds `mu` from construction to destruction (std::lock_guard).
class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
  }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// std::condition_variable, waited on with a Mutex held.
class CondVar {
 public:
  CondVar() = default;
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;

  // Waits until `pred()` holds or `deadline` passes and returns pred(), as
  // std::condition_variable::wait_until(lock, time, pred) does (spurious
  // wake-ups are waited out). `mu` is released while waiting and held
  // again on return. absl::InfiniteFuture() waits without a timeout
  // (callers that pass it must guarantee progress some other way);
  // absl::InfinitePast() does not wait.
  // `pred` runs with `mu` held: declare a lambda
  //   [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { ... }
  // so that the analysis checks its body.
  // REQUIRES: the calling thread holds `mu`.
  template <typename Pred>
  bool WaitUntil(Mutex* mu, absl::Time deadline, Pred pred)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    // The analysis cannot tell that `pred` needs the `mu` it is given;
    // callers' annotated lambdas say so, and this holds it for them.
    if (deadline == absl::InfinitePast()) return pred();
    // Borrows the held lock for the wait and gives it back after.
    std::unique_lock<std::mutex> lock(mu->mu_, std::adopt_lock);
    bool ok = true;
    if (deadline == absl::InfiniteFuture()) {
      cv_.wait(lock, pred);
    } else {
      ok = cv_.wait_until(lock, absl::ToChronoTime(deadline), pred);
    }
    lock.release();
    return ok;
  }

  // Wakes one waiter.
  void Signal() { cv_.notify_one(); }
  // Wakes every waiter.
  void SignalAll() { cv_.notify_all(); }

 private:
  std::condition_variable cv_;
};

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_MUTEX_H_
