// A bounded, deadline-aware multi-producer multi-consumer queue.
//
// Every blocking call takes a deadline and returns DeadlineExceeded when it
// passes, so no thread waits forever. Close() wakes every waiter: pushes then
// fail with Cancelled, and pops drain what is left before failing with
// Cancelled too. The capacity bounds memory; a full queue pushes back on
// producers (backpressure) instead of growing.
//
// Thread-safe: every method may be called from any thread.
#ifndef PSTRAIN_UTIL_BLOCKING_QUEUE_H_
#define PSTRAIN_UTIL_BLOCKING_QUEUE_H_

#include <cstddef>
#include <deque>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "glog/logging.h"

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
  absl::Status Push(T item, absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || items_.size() < capacity_;
    };
    mu_.AwaitWithDeadline(absl::Condition(&room), deadline);
    if (closed_) return absl::CancelledError("queue closed");
    if (items_.size() >= capacity_) {
      return absl::DeadlineExceededError("queue full until deadline");
    }
    items_.push_back(std::move(item));
    return absl::OkStatus();
  }

  // Appends `item` only if there is room now. Returns Unavailable when full,
  // Cancelled when closed.
  absl::Status TryPush(T item) {
    absl::MutexLock lock(&mu_);
    if (closed_) return absl::CancelledError("queue closed");
    if (items_.size() >= capacity_) {
      return absl::UnavailableError("queue full");
    }
    items_.push_back(std::move(item));
    return absl::OkStatus();
  }

  // Removes and returns the oldest item, waiting until `deadline`. Returns
  // DeadlineExceeded if the queue is still empty then, Cancelled if it is
  // closed and empty.
  absl::StatusOr<T> Pop(absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return closed_ || !items_.empty();
    };
    mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
    if (items_.empty()) {
      if (closed_) return absl::CancelledError("queue closed");
      return absl::DeadlineExceededError("queue empty until deadline");
    }
    T item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

  // Closes the queue and wakes every waiter. Idempotent.
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

  bool closed() const {
    absl::MutexLock lock(&mu_);
    return closed_;
  }

  size_t size() const {
    absl::MutexLock lock(&mu_);
    return items_.size();
  }

  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_BLOCKING_QUEUE_H_
