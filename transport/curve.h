// ZeroMQ CURVE for the job's wire: keys and the ZAP handler that admits
// only the job's peers (DESIGN.md, Security).
//
// By default every node of a job derives the same CURVE key pair from the
// job token (DeriveJobKeys), so the token file stays the one secret to hand
// out and nodes started by hand or by a cluster engine need nothing more.
// Every incoming connection is a CURVE handshake in which the client proves
// that it holds the secret key of a public key the node accepts (the ZAP
// handler checks it); a stranger without the token can neither complete a
// connection (no routing-id squatting, nothing it sends is even read) nor
// read the traffic (every byte on the wire is encrypted and authenticated).
#ifndef PSTRAIN_TRANSPORT_CURVE_H_
#define PSTRAIN_TRANSPORT_CURVE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pstrain {
namespace transport {

// A CURVE key pair, each key Z85-encoded (40 characters).
struct CurveKeyPair {
  std::string public_key;
  std::string secret_key;
};

// The job's key pair, derived from the job token: the secret key is
// BLAKE2b-256 of the token under a fixed context key, the public key its
// Curve25519 base-point product. The same token gives the same keys on
// every node. An empty token (a job run without --token_file) gives the
// keys of the empty token: encrypted, but open to anyone else without one.
absl::StatusOr<CurveKeyPair> DeriveJobKeys(absl::string_view token);

// A fresh random key pair (zmq_curve_keypair).
absl::StatusOr<CurveKeyPair> NewKeyPair();

// Per-node keys instead of the token's (--curve_keys_dir DIR):
//   DIR/server.key   the job's server key pair, the same file on every node
//                    (Z85 secret key, one line; the public key is derived):
//                    every node listens with it, and connects expecting it;
//   DIR/node.key     this node's own key pair (Z85 secret key), which it
//                    presents when it connects;
//   DIR/clients/*.pub  the public keys (Z85, one line each) of every node
//                    of the job: only these are admitted. Removing a node's
//                    .pub file locks that node out of the next job.
// Secret key files must not be readable by group or others.
struct CurveKeysDir {
  CurveKeyPair server;
  CurveKeyPair node;
  std::set<std::string> clients;  // Z85 public keys.
};

// Reads DIR as above. Errors name the file and what is wrong (missing,
// readable by others, not a Z85 key, no clients).
absl::StatusOr<CurveKeysDir> ReadCurveKeysDir(const std::string& dir);

// Writes a fresh keys dir for `node_names` (one `<name>.key` secret and
// `clients/<name>.pub` each, plus server.key) into `dir`, to be handed
// out: every node gets server.key, its own `<name>.key` as node.key and
// clients/. Secret files are mode 600.
absl::Status WriteCurveKeysDir(const std::string& dir,
                               const std::vector<std::string>& node_names);

// Answers ZeroMQ's authentication requests (ZAP, RFC 27) for every CURVE
// server socket of `zmq_context`: a client is admitted when its public key
// is in `accepted` (Z85 keys), refused otherwise. One owned thread, joined
// by Stop() (or the destructor), which must run before the context is
// terminated.
class ZapHandler {
 public:
  static absl::StatusOr<std::unique_ptr<ZapHandler>> Start(
      void* zmq_context, const std::set<std::string>& accepted);
  ~ZapHandler();  // Stop()s.
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Joins the thread and closes the socket. Idempotent; not concurrent
  // with itself.
  void Stop();

  // Connections admitted and refused so far (any thread, also after Stop).
  int64_t admitted() const { return admitted_.load(); }
  int64_t refused() const { return refused_.load(); }

 private:
  ZapHandler() = default;
  void Loop();

  void* socket_ = nullptr;  // ZMQ_REP on inproc://zeromq.zap.01; Loop's.
  std::set<std::string> accepted_;  // Binary (32-byte) public keys.
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> admitted_{0}, refused_{0};
  std::thread thread_;
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_CURVE_H_
