// Test helpers for hostile input: a raw ZeroMQ DEALER that sends whatever
// bytes it is given (garbage, truncated headers, wrong tokens) to a pstrain
// endpoint, and a raw ZMTP peer on a plain TCP socket that can send what no
// ZeroMQ socket would (a message that never ends, a handshake that stalls).
#ifndef PSTRAIN_TRANSPORT_RAW_PEER_H_
#define PSTRAIN_TRANSPORT_RAW_PEER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include <zmq.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace pstrain {
namespace transport {

// Waits up to `timeout_ms` for the other end of the connected socket `fd`
// to close it (EOF or a socket error), reading and dropping whatever it
// sends meanwhile. Polls every 10 ms.
inline bool ClosedByPeer(int fd, int timeout_ms) {
  char buf[4096];
  for (int waited = 0; waited < timeout_ms; waited += 10) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10) > 0) {
      const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return true;
    }
  }
  return false;
}

class RawPeer {
 public:
  // Presents `token` in the handshake as pstrain nodes do (transport/gate.h),
  // so what it sends reaches the receiver's checks of messages.
  // `routing_id`: the id the receiver sees ("": ZeroMQ picks one).
  RawPeer(const std::string& host_port, const std::string& token,
          const std::string& routing_id = "") {
    ctx_ = zmq_ctx_new();
    sock_ = zmq_socket(ctx_, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(sock_, ZMQ_PLAIN_USERNAME, "pstrain", 7);
    if (!token.empty()) {
      zmq_setsockopt(sock_, ZMQ_PLAIN_PASSWORD, token.data(), token.size());
    }
    if (!routing_id.empty()) {
      zmq_setsockopt(sock_, ZMQ_ROUTING_ID, routing_id.data(),
                     routing_id.size());
    }
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
      zmq_send(sock_, parts[i].data(), parts[i].size(),
               i + 1 < parts.size() ? ZMQ_SNDMORE : 0);
    }
  }

 private:
  void* ctx_;
  void* sock_;
};

// ZMTP 3.0 spoken by hand over a TCP socket: the greeting, a NULL or PLAIN
// handshake, then raw frames. Nothing is buffered here: every byte goes
// straight to the kernel, so what the receiver holds is what it took.
class RawZmtpPeer {
 public:
  // Connects to 127.0.0.1:`port` and sends the greeting for `mechanism`
  // ("NULL" or "PLAIN"). ok() tells whether the connection and the
  // greeting went through.
  RawZmtpPeer(int port, const std::string& mechanism) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd_ < 0 ||
        connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
      ok_ = false;
      return;
    }
    timeval timeout{10, 0};  // A receiver that stops reading fails a write.
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    std::string greeting(64, '\0');
    greeting[0] = '\xff';
    greeting[8] = '\x01';
    greeting[9] = '\x7f';
    greeting[10] = 3;  // ZMTP 3.0.
    greeting.replace(12, mechanism.size(), mechanism);
    ok_ = Write(greeting);
  }
  ~RawZmtpPeer() {
    if (fd_ >= 0) close(fd_);
  }
  RawZmtpPeer(const RawZmtpPeer&) = delete;
  RawZmtpPeer& operator=(const RawZmtpPeer&) = delete;

  bool ok() const { return ok_; }

  // NULL mechanism: READY with the socket type and `routing_id`.
  bool SendReady(const std::string& routing_id) {
    std::string body = "\x05READY";
    Property(&body, "Socket-Type", "DEALER");
    if (!routing_id.empty()) Property(&body, "Identity", routing_id);
    return Command(body);
  }
  // PLAIN mechanism: HELLO with a user name and password.
  bool SendHello(const std::string& user, const std::string& password) {
    std::string body = "\x05HELLO";
    body += static_cast<char>(user.size());
    body += user;
    body += static_cast<char>(password.size());
    body += password;
    return Command(body);
  }
  // One message frame (`more`: more frames of the same message follow).
  bool SendFrame(const std::string& data, bool more) {
    return Write(FrameHeader(data.size(), more, false) + data);
  }
  // The header of a frame that announces `size` bytes, without them.
  static std::string FrameHeader(uint64_t size, bool more, bool command) {
    std::string h;
    const char flags = static_cast<char>((more ? 1 : 0) | (command ? 4 : 0));
    if (size < 256) {
      h += flags;
      h += static_cast<char>(size);
    } else {
      h += static_cast<char>(flags | 2);
      for (int i = 7; i >= 0; --i)
        h += static_cast<char>((size >> (8 * i)) & 0xff);
    }
    return h;
  }
  // Writes `bytes` as they are; false once the receiver has closed.
  bool Write(const std::string& bytes) {
    size_t off = 0;
    while (off < bytes.size()) {
      const ssize_t n =
          send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Waits up to `timeout_ms` for the receiver to close the connection
  // (reading and dropping whatever it sent).
  bool ClosedByPeer(int timeout_ms) {
    return transport::ClosedByPeer(fd_, timeout_ms);
  }

 private:
  static void Property(std::string* body, const std::string& name,
                       const std::string& value) {
    *body += static_cast<char>(name.size());
    *body += name;
    const uint32_t n = htonl(static_cast<uint32_t>(value.size()));
    body->append(reinterpret_cast<const char*>(&n), 4);
    *body += value;
  }
  bool Command(const std::string& body) {
    return Write(FrameHeader(body.size(), false, true) + body);
  }

  int fd_ = -1;
  bool ok_ = false;
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_RAW_PEER_H_
