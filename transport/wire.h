// Decoding of received messages (DESIGN.md, Wire protocol): the one place
// that turns the frames ZeroMQ delivered into a Message, checking
// everything about them that can be checked without this process's state.
//
// On the wire a message is one multipart ZeroMQ message: the serialized
// proto::Header, then one raw frame per entry of Header.keys (or none, for
// requests without values). A data frame that travels in the sender's
// shared-memory arena (transport/shm.h) is an empty placeholder on the
// socket, described by an entry of Header.shm_frames.
//
// What Decode does not check, because it needs the receiver's state: whether
// the keys exist (the server), and whether the shared-memory descriptors
// name real blocks of a mapped arena (ShmPeers::Resolve).
#ifndef PSTRAIN_TRANSPORT_WIRE_H_
#define PSTRAIN_TRANSPORT_WIRE_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "transport/message.h"

namespace pstrain {
namespace transport {

// Decodes one received message from `parts`, the frames after the sender's
// routing id: parts[0] is the header, the rest are data frames (moved into
// the result, not copied). `token` is the job token the header must carry.
//
// Errors, each naming what is wrong (never a crash, whatever the bytes):
//  - InvalidArgument: no header frame.
//  - DataLoss: the header does not parse.
//  - PermissionDenied: the header does not carry `token`.
//  - InvalidArgument: unknown message type or dtype; keys, offsets and
//    lengths of different counts; data frames neither one per key nor none;
//    a negative offset or length, or one whose byte size or end overflows;
//    a frame whose size is not its length in floats; a shared-memory
//    descriptor that names no data frame, names one twice, whose socket
//    frame is not empty, that has no bytes, or a size other than its
//    frame's length, whose offset plus size overflows, that claims to be in
//    both arenas, or of the sender's arena without the arena's identity.
// Thread-safe (no shared state).
absl::StatusOr<Message> Decode(std::vector<Frame> parts,
                               absl::string_view token);

// Whether `a` equals `b`, in time that depends only on their lengths.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b);

}  // namespace transport
}  // namespace pstrain

#endif  // PSTRAIN_TRANSPORT_WIRE_H_
