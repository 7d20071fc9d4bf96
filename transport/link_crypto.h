// Encryption of the TCP data link under CURVE (transport/data_link.h has
// the link, DESIGN-level prose is in the README, "Encrypted data links").
//
// A link is one TCP connection from a connector (the node that connected
// it and sends its messages through it) to a listener (which, on a two-way
// link, sends its own messages back on it too). Before anything else they run a
// three-message handshake, all with X25519 (the keys ZeroMQ CURVE uses)
// and BLAKE2b (crypto_generichash):
//
//   M1 connector -> listener (40 bytes):
//        u32 kLinkHs1Magic, u32 flags (bit 0: the connector has AES-GCM),
//        e_c (a fresh ephemeral public key)
//   M2 listener -> connector (56 bytes):
//        u32 kLinkHs2Magic, u32 cipher chosen (LinkCipher), e_l (fresh),
//        tag: ChaCha20-Poly1305 of nothing under k_hs, nonce 0, AD h
//   M3 connector -> listener (48 bytes):
//        s_c (the connector's static public key, its CURVE node key)
//        encrypted under k_hs, nonce 1, AD h, plus its 16-byte tag
//
//   h    = BLAKE2b-256("pstrain-link-v1" | M1 | M2's first 40 bytes)
//   dh1  = X25519(e_c, e_l), dh2 = X25519(e_c, S) with S the job's CURVE
//          server key, dh3 = X25519(s_c, e_l)
//   k_hs = BLAKE2b-256("hs" | dh1 | dh2 | h)
//   k    = BLAKE2b-256("c2l" | dh1 | dh2 | dh3 | h | s_c)
//   k_r  = BLAKE2b-256("l2c" | dh1 | dh2 | dh3 | h | s_c)
//
// M2's tag proves the listener holds S's secret key (only it and the
// connector can compute dh2); the connector sends nothing else before it
// checked it. The listener admits s_c only if it is one of the keys the ZAP
// handler accepts, and the first record (the hello) opens under k only if
// the connector holds s_c's secret key (dh3). Fresh ephemerals on both
// sides make every session key new (forward secrecy, no replay across
// connections).
//
// Then the connector's byte stream (the hello, then message after message,
// framed as on a plaintext link) travels as records under k, and, where the
// listener sends on the same connection too (a two-way link,
// transport/data_link.h), the listener's stream as records under k_r, with
// its own counter:
//   u32 n (plaintext bytes, 1..kLinkMaxRecordBytes), n bytes of
//   ciphertext, 16-byte tag; AD: the 4 length bytes; nonce: 4 zero bytes
//   and a u64 record counter (little-endian), starting at 0.
// AES-256-GCM when both ends have it (AES-NI and PCLMULQDQ), else
// ChaCha20-Poly1305-IETF. A record whose tag does not check (tampered,
// replayed, reordered, cut or from another session) is never delivered,
// and ends the connection.
#ifndef PSTRAIN_TRANSPORT_LINK_CRYPTO_H_
#define PSTRAIN_TRANSPORT_LINK_CRYPTO_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <set>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "transport/curve.h"

namespace pstrain {
namespace transport {

inline constexpr uint32_t kLinkHs1Magic = 0x31455350;  // "PSE1"
inline constexpr uint32_t kLinkHs2Magic = 0x32455350;  // "PSE2"
inline constexpr size_t kLinkHs1Bytes = 40;
inline constexpr size_t kLinkHs2Bytes = 56;
inline constexpr size_t kLinkHs3Bytes = 48;
// Plaintext bytes per record written (a record holds at most one frame
// when the frame is large: it is encrypted from the frame itself).
inline constexpr size_t kLinkRecordBytes = 256 << 10;
// Largest record accepted.
inline constexpr size_t kLinkMaxRecordBytes = 1 << 20;
// Length prefix plus tag.
inline constexpr size_t kLinkRecordOverhead = 4 + 16;

enum class LinkCipher : uint32_t { kChaCha20Poly1305 = 1, kAes256Gcm = 2 };

// Whether this CPU runs libsodium's AES-256-GCM.
bool LinkAesGcmAvailable();
const char* LinkCipherName(LinkCipher c);

// The binary keys a transport runs the handshake with. Secret keys are
// wiped when this is destroyed.
struct LinkKeys {
  uint8_t node_public[32], node_secret[32];  // Presented as connector.
  uint8_t server_public[32];                 // Expected of listeners.
  uint8_t listen_secret[32];                 // Server key, as listener.
  std::set<std::string> accepted;            // 32-byte connector keys.
  bool allow_aes = true;                     // Tests turn AES-GCM off.
  LinkKeys() = default;
  LinkKeys(const LinkKeys&) = delete;
  LinkKeys& operator=(const LinkKeys&) = delete;
  ~LinkKeys();
};

// From Z85 keys as in TransportOptions: `node` connects, expecting the
// listener to hold `server_public`; `listen` is the pair the listener
// proves; `accepted` the connectors let in. Errors name the bad key.
absl::StatusOr<std::unique_ptr<LinkKeys>> MakeLinkKeys(
    const CurveKeyPair& node, const std::string& server_public,
    const CurveKeyPair& listen, const std::set<std::string>& accepted);

// One direction's record sealing or opening (a fresh key, a counter).
// Thread-compatible. Wipes its key when destroyed.
class LinkRecordCipher {
 public:
  LinkRecordCipher(LinkCipher cipher, const uint8_t key[32]);
  ~LinkRecordCipher();
  LinkRecordCipher(const LinkRecordCipher&) = delete;
  LinkRecordCipher& operator=(const LinkRecordCipher&) = delete;

  LinkCipher cipher() const { return cipher_; }
  uint64_t records() const { return counter_; }
  // Writes the record of `n` (1..kLinkMaxRecordBytes) plaintext bytes at
  // `pt` to `out` (n + kLinkRecordOverhead bytes). `pt` may be out + 4.
  void Seal(const char* pt, size_t n, char* out);
  // Opens the record at `rec` whose length prefix says `n`: writes the n
  // plaintext bytes to `out` (may be rec + 4) and returns true, or returns
  // false when the tag does not check (then `out` holds nothing usable).
  bool Open(const char* rec, size_t n, char* out);

 private:
  void Nonce(uint8_t nonce[12]) const;
  struct State;
  const LinkCipher cipher_;
  std::unique_ptr<State> state_;
  uint64_t counter_ = 0;
};

// The connector's side of the handshake.
class LinkConnectorHandshake {
 public:
  explicit LinkConnectorHandshake(const LinkKeys* keys);
  ~LinkConnectorHandshake();
  LinkConnectorHandshake(const LinkConnectorHandshake&) = delete;
  LinkConnectorHandshake& operator=(const LinkConnectorHandshake&) = delete;
  const std::string& m1() const { return m1_; }
  // Checks M2 (kLinkHs2Bytes): on success writes M3 to *m3 and returns the
  // sealing cipher (under k), and, with `reverse`, sets *reverse to the
  // cipher that opens the listener's records (k_r); PermissionDenied when
  // the listener did not prove the server key, InvalidArgument when M2 is
  // not one.
  absl::StatusOr<std::unique_ptr<LinkRecordCipher>> Finish(
      const char* m2, std::string* m3,
      std::unique_ptr<LinkRecordCipher>* reverse = nullptr);

 private:
  const LinkKeys* const keys_;
  uint8_t e_public_[32], e_secret_[32];
  std::string m1_;
};

// The listener's side of the handshake.
class LinkListenerHandshake {
 public:
  explicit LinkListenerHandshake(const LinkKeys* keys);
  ~LinkListenerHandshake();
  LinkListenerHandshake(const LinkListenerHandshake&) = delete;
  LinkListenerHandshake& operator=(const LinkListenerHandshake&) = delete;
  // Takes M1 (kLinkHs1Bytes) and writes M2 to *m2; InvalidArgument when
  // M1 is not one.
  absl::Status OnM1(const char* m1, std::string* m2);
  // Takes M3 (kLinkHs3Bytes): the opening cipher (k) when the connector's
  // key is accepted, and, with `reverse`, sets *reverse to the cipher that
  // seals this end's records to the connector (k_r); PermissionDenied
  // (naming the key's Z85 form) when not, or when M3 does not open.
  absl::StatusOr<std::unique_ptr<LinkRecordCipher>> OnM3(
      const char* m3, std::unique_ptr<LinkRecordCipher>* reverse = nullptr);

 private:
  const LinkKeys* const keys_;
  uint8_t e_public_[32], e_secret_[32];
  uint8_t peer_e_[32];
  uint8_t h_[32], k_hs_[32], dh1_[32], dh2_[32];
  LinkCipher cipher_ = LinkCipher::kChaCha20Poly1305;
};

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_LINK_CRYPTO_H_
