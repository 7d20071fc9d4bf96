// The per-server send queue of the dist_* KVStores (issue #16, priority
// and slicing): requests wait here in priority order (higher first, FIFO
// within a priority) and leave while the request payload in flight to that
// server stays within a credit (KVStoreOptions::send_credit_bytes), so a
// request queued later with a higher priority overtakes every part of a
// big low-priority array that has not left yet. Credit is returned by
// Release() when the server has the payload (its receipt or its answer).
//
// Strict priority: only the head of the queue may leave; a smaller item
// behind a head that does not fit waits too. An item larger than the whole
// credit leaves when nothing is in flight, so everything moves eventually.
// Pure bookkeeping (ids and byte counts, no messages, no clock).
// Thread-compatible: the store guards it with its mutex.
#ifndef PSTRAIN_KVSTORE_SEND_QUEUE_H_
#define PSTRAIN_KVSTORE_SEND_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <queue>
#include <vector>

namespace pstrain {
namespace kvstore {

class SendQueue {
 public:
  // credit_bytes: payload bytes in flight at most (0: no limit; every item
  // leaves at once, in priority order). REQUIRES: credit_bytes >= 0.
  explicit SendQueue(int64_t credit_bytes);

  // Queues item `id` (the caller's name for it) of `bytes` payload.
  // REQUIRES: bytes >= 0.
  void Add(uint64_t id, int priority, int64_t bytes);
  // Removes and returns, in order, the items that may leave now; their
  // bytes count as in flight until Release()d.
  std::vector<uint64_t> TakeReady();
  // Returns the credit of `bytes` that left earlier (TakeReady).
  // REQUIRES: bytes <= in_flight_bytes().
  void Release(int64_t bytes);
  // Drops every queued item (the job ended); returns their ids.
  std::vector<uint64_t> Clear();

  int64_t in_flight_bytes() const { return in_flight_; }
  size_t queued() const { return heap_.size(); }
  int64_t credit_bytes() const { return credit_; }

 private:
  struct Item {
    int priority;
    uint64_t seq;
    uint64_t id;
    int64_t bytes;
  };
  // Max-heap order: true when `a` leaves after `b`.
  struct LeavesAfter {
    bool operator()(const Item& a, const Item& b) const {
      if (a.priority != b.priority) return a.priority < b.priority;
      return a.seq > b.seq;
    }
  };

  const int64_t credit_;
  int64_t in_flight_ = 0;
  uint64_t seq_ = 0;
  std::priority_queue<Item, std::vector<Item>, LeavesAfter> heap_;
};

}  // namespace kvstore
}  // namespace pstrain

#endif  // PSTRAIN_KVSTORE_SEND_QUEUE_H_
