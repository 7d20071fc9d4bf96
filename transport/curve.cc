#include "transport/curve.h"

#include <dirent.h>
#include <sodium.h>
#include <sys/stat.h>
#include <zmq.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "glog/logging.h"

namespace pstrain {
namespace transport {
namespace {

// Context key of the token-to-key derivation (BLAKE2b's key, 16+ bytes):
// changing it changes every job's keys.
constexpr char kJobKeyContext[] = "pstrain-curve-job-key-v1";

// ZeroMQ's well-known ZAP endpoint (RFC 27): every CURVE server socket of a
// context asks whoever is bound there.
constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";

absl::Status ZmqStatus(const std::string& what) {
  return absl::InternalError(
      absl::StrCat(what, ": ", zmq_strerror(zmq_errno())));
}

// Receives one multipart message; false when none is complete.
bool RecvAll(void* socket, std::vector<std::string>* parts) {
  parts->clear();
  while (true) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, socket, parts->empty() ? ZMQ_DONTWAIT : 0) < 0) {
      zmq_msg_close(&m);
      return false;
    }
    parts->emplace_back(static_cast<const char*>(zmq_msg_data(&m)),
                        zmq_msg_size(&m));
    const bool more = zmq_msg_more(&m) != 0;
    zmq_msg_close(&m);
    if (!more) return true;
  }
}

}  // namespace

absl::StatusOr<CurveKeyPair> DeriveJobKeys(absl::string_view token) {
  if (sodium_init() < 0)
    return absl::InternalError("libsodium failed to initialise");
  uint8_t secret[32];
  static_assert(sizeof(kJobKeyContext) - 1 >= crypto_generichash_KEYBYTES_MIN);
  crypto_generichash(
      secret, sizeof(secret), reinterpret_cast<const uint8_t*>(token.data()),
      token.size(), reinterpret_cast<const uint8_t*>(kJobKeyContext),
      sizeof(kJobKeyContext) - 1);
  char secret_z85[41], public_z85[41];
  if (zmq_z85_encode(secret_z85, secret, sizeof(secret)) == nullptr) {
    return ZmqStatus("zmq_z85_encode");
  }
  sodium_memzero(secret, sizeof(secret));
  if (zmq_curve_public(public_z85, secret_z85) != 0)
    return ZmqStatus("zmq_curve_public");
  CurveKeyPair keys{public_z85, secret_z85};
  sodium_memzero(secret_z85, sizeof(secret_z85));
  return keys;
}

absl::StatusOr<CurveKeyPair> NewKeyPair() {
  char public_z85[41], secret_z85[41];
  if (zmq_curve_keypair(public_z85, secret_z85) != 0)
    return ZmqStatus("zmq_curve_keypair");
  return CurveKeyPair{public_z85, secret_z85};
}

namespace {

// A secret key file: Z85 on its first line, not readable by others.
absl::StatusOr<CurveKeyPair> ReadSecretKeyFile(const std::string& path) {
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(absl::StrCat(path, ": ", strerror(errno)));
  }
  if (st.st_mode & (S_IRWXG | S_IRWXO)) {
    return absl::PermissionDeniedError(
        absl::StrCat(path,
                     ": a secret key file must not be readable by group or "
                     "others (chmod 600)"));
  }
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  line = std::string(absl::StripAsciiWhitespace(line));
  CurveKeyPair keys;
  keys.secret_key = line;
  char public_z85[41];
  uint8_t binary[32];
  if (line.size() != 40 || zmq_z85_decode(binary, line.c_str()) == nullptr ||
      zmq_curve_public(public_z85, line.c_str()) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path,
        ": not a Z85 CURVE secret key (40 characters on the first line)"));
  }
  keys.public_key = public_z85;
  return keys;
}

absl::Status WriteLine(const std::string& path, const std::string& text,
                       mode_t mode) {
  std::ofstream out(path, std::ios::trunc);
  out << text << "\n";
  out.close();
  if (!out || chmod(path.c_str(), mode) != 0) {
    return absl::InternalError(
        absl::StrCat("cannot write ", path, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<CurveKeysDir> ReadCurveKeysDir(const std::string& dir) {
  CurveKeysDir keys;
  auto server = ReadSecretKeyFile(dir + "/server.key");
  if (!server.ok()) return server.status();
  keys.server = *server;
  auto node = ReadSecretKeyFile(dir + "/node.key");
  if (!node.ok()) return node.status();
  keys.node = *node;
  const std::string clients = dir + "/clients";
  DIR* d = opendir(clients.c_str());
  if (d == nullptr)
    return absl::NotFoundError(absl::StrCat(clients, ": ", strerror(errno)));
  absl::Status bad;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (!absl::EndsWith(name, ".pub")) continue;
    std::ifstream in(clients + "/" + name);
    std::string line;
    std::getline(in, line);
    line = std::string(absl::StripAsciiWhitespace(line));
    uint8_t binary[32];
    if (line.size() != 40 || zmq_z85_decode(binary, line.c_str()) == nullptr) {
      bad = absl::InvalidArgumentError(absl::StrCat(
          clients, "/", name,
          ": not a Z85 CURVE public key (40 characters on the first line)"));
      break;
    }
    keys.clients.insert(line);
  }
  closedir(d);
  if (!bad.ok()) return bad;
  if (keys.clients.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(clients, ": no *.pub file: nobody could connect"));
  }
  return keys;
}

absl::Status WriteCurveKeysDir(const std::string& dir,
                               const std::vector<std::string>& node_names) {
  if (node_names.empty()) return absl::InvalidArgumentError("no node names");
  if ((mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) ||
      (mkdir((dir + "/clients").c_str(), 0755) != 0 && errno != EEXIST)) {
    return absl::InternalError(
        absl::StrCat("cannot create ", dir, ": ", strerror(errno)));
  }
  auto server = NewKeyPair();
  if (!server.ok()) return server.status();
  if (absl::Status s = WriteLine(dir + "/server.key", server->secret_key, 0600);
      !s.ok())
    return s;
  for (const auto& name : node_names) {
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') {
      return absl::InvalidArgumentError(
          absl::StrCat("'", name, "' is not a usable node name"));
    }
    auto node = NewKeyPair();
    if (!node.ok()) return node.status();
    if (absl::Status s = WriteLine(absl::StrCat(dir, "/", name, ".key"),
                                   node->secret_key, 0600);
        !s.ok()) {
      return s;
    }
    if (absl::Status s = WriteLine(absl::StrCat(dir, "/clients/", name, ".pub"),
                                   node->public_key, 0644);
        !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Start(
    void* zmq_context, const std::set<std::string>& accepted) {
  std::unique_ptr<ZapHandler> h(new ZapHandler());
  for (const auto& key : accepted) {
    uint8_t binary[32];
    if (key.size() != 40 || zmq_z85_decode(binary, key.c_str()) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", absl::CHexEscape(key.substr(0, 64)),
                       "' is not a Z85 CURVE public key (40 characters)"));
    }
    h->accepted_.emplace(reinterpret_cast<const char*>(binary), sizeof(binary));
  }
  h->socket_ = zmq_socket(zmq_context, ZMQ_REP);
  if (h->socket_ == nullptr) return ZmqStatus("zmq_socket(ZAP)");
  int linger = 0;
  zmq_setsockopt(h->socket_, ZMQ_LINGER, &linger, sizeof(linger));
  if (zmq_bind(h->socket_, kZapEndpoint) != 0) {
    absl::Status s = ZmqStatus(absl::StrCat("bind ", kZapEndpoint));
    zmq_close(h->socket_);
    h->socket_ = nullptr;
    return s;
  }
  h->thread_ = std::thread([p = h.get()] { p->Loop(); });
  return h;
}

ZapHandler::~ZapHandler() { Stop(); }

void ZapHandler::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();  // Loop closes the socket.
}

void ZapHandler::Loop() {
  std::vector<std::string> request;
  while (!stop_) {
    zmq_pollitem_t item{socket_, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, 100) <= 0 || !RecvAll(socket_, &request)) continue;
    // version, request id, domain, address, routing id, mechanism,
    // credentials (CURVE: the client's 32-byte public key).
    bool ok = request.size() >= 7 && request[0] == "1.0" &&
              request[5] == "CURVE" && request[6].size() == 32 &&
              accepted_.count(request[6]) > 0;
    if (ok) {
      ++admitted_;
    } else {
      ++refused_;
      LOG_EVERY_N(WARNING, 20)
          << "refused a connection from "
          << absl::CHexEscape(request.size() > 3 ? request[3] : "?")
          << ": its CURVE key is not one of this job's (" << refused_.load()
          << " refused so far)";
    }
    const std::string version = "1.0";
    const std::string id = request.size() > 1 ? request[1] : "";
    const std::string status = ok ? "200" : "400";
    const std::string text = ok ? "OK" : "unknown key";
    const std::string user = ok ? "job" : "";
    const std::string* reply[] = {&version, &id, &status, &text, &user};
    for (const std::string* part : reply) {
      zmq_send(socket_, part->data(), part->size(), ZMQ_SNDMORE);
    }
    zmq_send(socket_, "", 0, 0);  // Metadata: none.
  }
  zmq_close(socket_);
}

}  // namespace transport
}  // namespace pstrain
