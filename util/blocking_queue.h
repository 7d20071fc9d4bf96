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
// Uses std::mutex/std::condition_variable rather than absl::Mutex: Debian's
// Abseil is not built for ThreadSanitizer, so waits on absl::Mutex would be
// invisible to `--config=tsan`.
#ifndef PSTRAIN_UTIL_BLOCKING_QUEUE_H_
#define PSTRAIN_UTIL_BLOCKING_QUEUE_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "util/wait.h"

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
    std::unique_lock<std::mutex> lock(mu_);
    WaitUntil(not_full_, lock, deadline,
              [this] { return closed_ || items_.size() < capacity_; });
    if (closed_) return absl::CancelledError("queue closed");
    if (items_.size() >= capacity_) {
      return absl::DeadlineExceededError("queue full until deadline");
    }
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return absl::OkStatus();
  }

  // Appends `item` only if there is room now. Returns Unavailable when full,
  // Cancelled when closed.
  absl::Status TryPush(T item) {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return absl::CancelledError("queue closed");
    if (items_.size() >= capacity_) {
      return absl::UnavailableError("queue full");
    }
    items_.push_back(std::move(item));
    not_empty_.notify_one();
    return absl::OkStatus();
  }

  // Removes and returns the oldest item, waiting until `deadline`. Returns
  // DeadlineExceeded if the queue is still empty then, Cancelled if it is
  // closed and empty.
  absl::StatusOr<T> Pop(absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    WaitUntil(not_empty_, lock, deadline,
              [this] { return closed_ || !items_.empty(); });
    if (items_.empty()) {
      if (closed_) return absl::CancelledError("queue closed");
      return absl::DeadlineExceededError("queue empty until deadline");
    }
    T item = std::move(items_.front());
    items_.pop_front();
    not_full_.notify_one();
    return item;
  }

  // Closes the queue and wakes every waiter. Idempotent.
  void Close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_empty_.notify_all();
    not_full_.notify_all();
  }

  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return items_.size();
  }

  size_t capacity() const { return capacity_; }

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::condition_variable not_full_;
  std::deque<T> items_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pstrain

#endif  // PSTRAIN_UTIL_BLOCKING_QUEUE_H_
