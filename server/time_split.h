// Where a server's time goes (issue #17): its message thread (the
// transport's I/O thread, which reads, applies and answers every request)
// is, at any moment, in one of
// - sum: adding workers' pushes (Shard::Times::sum_s);
// - update: the optimizer's update rule (Shard::Times::update_s);
// - send: handing replies to the transport;
// - other: the rest of handling a message (checks, bookkeeping);
// - wait: between messages while a dist_sync round is open (some worker
//   has pushed a slice, not every worker yet): waiting for the slowest
//   worker's push;
// - idle: between messages with no round open (every worker computing,
//   dist_async, or after the last message).
// The parts sum to the period, from the first message to now. The
// transport's own reading and writing of the sockets happens between
// messages, so it counts as wait or idle.
//
// Cheap: two clock reads per message, whatever its size. Thread-compatible:
// the message thread calls everything (or any one thread at a time).
#ifndef PSTRAIN_SERVER_TIME_SPLIT_H_
#define PSTRAIN_SERVER_TIME_SPLIT_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "proto/messages.pb.h"

namespace pstrain {
namespace server {

// Seconds per part (see above) and tensor bytes in and out.
struct ServerTimes {
  double period_s = 0;
  double sum_s = 0, update_s = 0, send_s = 0, other_s = 0;
  double wait_s = 0, idle_s = 0;
  int64_t bytes_in = 0, bytes_out = 0;
};

class ServerTimeSplit {
 public:
  // A message arrives at `now` (the first one starts the period).
  void MessageBegins(absl::Time now);
  // It has been handled at `now`: `sum_s`, `update_s` and `send_s` of its
  // handling went to those parts, the rest to other; `round_open` tells
  // whether a dist_sync round is now open (Shard::open_rounds() > 0).
  // REQUIRES: after MessageBegins().
  void MessageEnds(absl::Time now, double sum_s, double update_s, double send_s,
                   bool round_open);
  void AddBytes(int64_t in, int64_t out) {
    bytes_in_ += in;
    bytes_out_ += out;
  }
  // The totals up to `now`: the time since the last message ended goes to
  // wait or idle. All zero before the first message.
  ServerTimes Totals(absl::Time now) const;

 private:
  bool started_ = false;
  absl::Time start_, begin_, last_end_;
  bool round_open_ = false;  // When the last message ended.
  ServerTimes t_;            // Of the messages so far and the gaps between.
  int64_t bytes_in_ = 0, bytes_out_ = 0;
};

// "server 0: time split: sum 12% update 30% wait 50% send 8% idle 0%
// other 0% (over 123.4 s)": percentages of the period, rounded.
std::string ServerTimeSplitLine(int rank, const ServerTimes& t);

// The fractions of the period, bytes and period_s into `stats`.
void FillServerStats(const ServerTimes& t, proto::NodeStats* stats);

}  // namespace server
}  // namespace pstrain

#endif  // PSTRAIN_SERVER_TIME_SPLIT_H_
