// Deadline waits on std::condition_variable with absl::Time deadlines.
// Code on pstrain::Mutex (util/mutex.h), which clang's thread-safety
// analysis checks, uses CondVar::WaitUntil instead.
#ifndef PSTRAIN_UTIL_WAIT_H_
#define PSTRAIN_UTIL_WAIT_H_

#include <condition_variable>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace pstrain {

// Waits on `cv` until `pred()` holds or `deadline` passes; returns pred().
// absl::InfiniteFuture() waits without a timeout (callers that pass it must
// guarantee progress some other way); absl::InfinitePast() does not wait.
// REQUIRES: `lock` holds the mutex.
template <typename Pred>
bool WaitUntil(std::condition_variable& cv, std::unique_lock<std::mutex>& lock,
               absl::Time deadline, Pred pred) {
  if (deadline == absl::InfinitePast()) return pred();
  if (deadline == absl::InfiniteFuture()) {
    cv.wait(lock, pred);
    return true;
  }
  return cv.wait_until(lock, absl::ToChronoTime(deadline), pred);
}

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_WAIT_H_
