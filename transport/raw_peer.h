// Test helper: a raw ZeroMQ DEALER that sends whatever bytes it is given
// (garbage, truncated headers, wrong tokens) to a pstrain endpoint.
#ifndef PSTRAIN_TRANSPORT_RAW_PEER_H_
#define PSTRAIN_TRANSPORT_RAW_PEER_H_

#include <zmq.h>

#include <string>
#include <vector>

namespace pstrain {
namespace transport {

class RawPeer {
 public:
  explicit RawPeer(const std::string& host_port) {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_connect(sock_, ("tcp://" + host_port).c_str());
  }
  ~RawPeer() {
    zmq_close(sock_);
    zmq_ctx_term(ctx_);
  }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  // Sends one multipart message of `parts`.
  void Send(const std::vector<std::string>& parts) {
    for (size_t i = 0; i < parts.size(); ++i) {
      zmq_send(sock_, parts[i].data(), parts[i].size(), i + 1 < parts.size() ? ZMQ_SNDMORE : 0);
    }
  }

 private:
  void* ctx_;
  void* sock_;
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_RAW_PEER_H_
