// A bounded, deadline-aware multi-producer multi-consumer queue.
//
// Every blocking call takes a deadline and returns DeadlineExceeded when it
// passes, so no thread waits forever. Close() wakes every waiter: pushes then
// fail with Cancelled, and pops drain what is left before failing with
// Cancelled too. The capacity bounds memory; a full queue pushes back on
// producers (backpressure) instead of growing.
//
// Thread-safe: every method may be called from any thread.
//
// Uses pstrain::Mutex (util/mutex.h) rather than absl::Mutex: Debian's
// Abseil is not built for ThreadSanitizer, so waits on absl::Mutex would be
// invisible to `--config=tsan`; pstrain::Mutex is std::mutex annotated for
// clang's thread-safety analysis.
#ifndef PSTRAIN_UTIL_BLOCKING_QUEUE_H_
#define PSTRAIN_UTIL_BLOCKING_QUEUE_H_

#include <cstddef>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "util/mutex.h"

namespace pstrain {

template <typename T>
class BlockingQueue {
 public:
  // REQUIRES: capacity > 0.
  explicit BlockingQueue(size_t capacity) : capacity_(capacity) {
    CHECK_GT(capacity, 0u);
  }
  BlockingQueue(const BlockingQueue&) = delete;
  BlockingQueue& operator=(const BlockingQueue&) = delete;

  // Appends `item`, waiting for room until `deadline`. Returns
  // DeadlineExceeded if there is still no room then (the item is not
  // queued), Cancelled if the queue is closed.
  absl::Status Push(T item, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    not_full_.WaitUntil(&mu_, deadline,
                        [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                          return closed_ || items_.size() < capacity_;
                        });
    if (closed_) return absl::CancelledError("queue closed");
    if (items_.size() >= capacity_) {
      return absl::DeadlineExceededError("queue full until deadline");
    }
    items_.push_back(std::move(item));
    not_empty_.Signal();
    return absl::OkStatus();
  }

  // Appends `item` only if there is room now. Returns Unavailable when full,
  // Cancelled when closed.
  absl::Status TryPush(T item) {
    MutexLock lock(&mu_);
    if (closed_) return absl::CancelledError("queue closed");
    if (items_.size() >= capacity_) {
      return absl::UnavailableError("queue full");
    }
    items_.push_back(std::move(item));
    not_empty_.Signal();
    return absl::OkStatus();
  }

  // Removes and returns the oldest item, waiting until `deadline`. Returns
  // DeadlineExceeded if the queue is still empty then, Cancelled if it is
  // closed and empty.
  absl::StatusOr<T> Pop(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_) {
    MutexLock lock(&mu_);
    not_empty_.WaitUntil(&mu_, deadline,
                         [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
                           return closed_ || !items_.empty();
                         });
    if (items_.empty()) {
      if (closed_) return absl::CancelledError("queue closed");
      return absl::DeadlineExceededError("queue empty until deadline");
    }
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.Signal();
    return item;
  }

  // Closes the queue and wakes every waiter. Idempotent.
  void Close() {
    MutexLock lock(&mu_);
    closed_ = true;
    not_empty_.SignalAll();
    not_full_.SignalAll();
  }

  bool closed() const {
    MutexLock lock(&mu_);
    return closed_;
  }

  size_t size() const {
    MutexLock lock(&mu_);
    return items_.size();
  }

  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable Mutex mu_;
  CondVar not_empty_;  // Signalled when an item arrives or on Close().
  CondVar not_full_;   // Signalled when an item leaves or on Close().
  std::deque<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_BLOCKING_QUEUE_H_
