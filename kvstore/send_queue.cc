#include "kvstore/send_queue.h"

#include "glog/logging.h"

namespace pstrain {
namespace kvstore {

SendQueue::SendQueue(int64_t credit_bytes) : credit_(credit_bytes) {
  CHECK_GE(credit_bytes, 0);
}

void SendQueue::Add(uint64_t id, int priority, int64_t bytes) {
  CHECK_GE(bytes, 0);
  heap_.push(Item{priority, seq_++, id, bytes});
}

std::vector<uint64_t> SendQueue::TakeReady() {
  std::vector<uint64_t> out;
  while (!heap_.empty()) {
    const Item& top = heap_.top();
    if (credit_ > 0 && in_flight_ > 0 && in_flight_ + top.bytes > credit_)
      break;
    in_flight_ += top.bytes;
    out.push_back(top.id);
    heap_.pop();
  }
  return out;
}

void SendQueue::Release(int64_t bytes) {
  CHECK_GE(bytes, 0);
  CHECK_LE(bytes, in_flight_);
  in_flight_ -= bytes;
}

std::vector<uint64_t> SendQueue::Clear() {
  std::vector<uint64_t> out;
  while (!heap_.empty()) {
    out.push_back(heap_.top().id);
    heap_.pop();
  }
  return out;
}

}  // namespace kvstore
}  // namespace pstrain
