// The wire protocol between kbuildd and kbuildctl for a cache in a local OCI layout directory
// (--cache-to type=local,dest=DIR, --cache-from type=local,src=DIR). The directory belongs to
// the user, so kbuildctl reads and writes it with the user's permissions and kbuildd only ever
// sees this socket (the Build option cache-fd-N).
//
// Every message is a frame: one type byte, a 4-byte big-endian length, that many payload bytes.
// kbuildd sends one request frame and waits for its answer before the next; kbuildctl answers
// each in order. Request payloads are fields: strings (4-byte big-endian length, then bytes)
// and u64 (8 bytes big-endian). Answers are `ok` (fields as listed) or `error` (one byte, the
// ErrorKind, then the message's bytes to the frame's end). Blob bytes travel as `data` frames of at most kChunkLimit
// bytes, closed by `end` (all sent) or `error` (the sender gave up).
//
//   root(tag)                      -> ok(media type, digest, bytes) of the manifest named
//                                     `tag` in index.json; error not_found without one
//   blob(digest, size)             -> ok(), data..., end; or error (not_found when missing)
//   has_blob(digest)               -> ok(u64 1 or 0)
//   put_blob(digest, size) data... end|error
//                                  -> ok() once stored and verified; error otherwise
//   put_root(tag, media type, bytes)
//                                  -> ok() once the bytes are a blob and index.json names
//                                     them `tag`
//
// The two ends do not trust each other's lengths: every frame has a limit its reader checks
// before reading it, and neither end holds more than one frame in memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/client_stream.h"
#include "common/error.h"

namespace kbuild::remotecache::layout {

enum class FrameType : std::uint8_t {
  root = 1,
  blob = 2,
  has_blob = 3,
  put_blob = 4,
  put_root = 5,
  ok = 0x80,
  error = 0x81,
  data = 0x82,
  end = 0x83,
};

// The largest `data` frame either end sends or accepts.
inline constexpr std::size_t kChunkLimit = 128 << 10;
// The largest root document (remotecache::kCacheConfigLimit, which registry manifests share).
inline constexpr std::size_t kRootLimit = 4 << 20;
// The largest request or answer that is not `data`: a root document and its names.
inline constexpr std::size_t kFrameLimit = kRootLimit + (64 << 10);
// The largest string field other than a root document: tags, media types, digests, messages.
inline constexpr std::size_t kFieldLimit = 16 << 10;

// "PEER sent a malformed frame: DETAIL", internal: what every protocol violation throws.
[[noreturn]] void throw_malformed(std::string_view peer, std::string_view detail);

// The error kinds an `error` frame carries; anything else reads as internal.
std::uint8_t wire_kind(ErrorKind kind);
ErrorKind kind_from_wire(std::uint8_t kind);

struct Frame {
  FrameType type{};
  std::string payload;
};

// A frame's fields, written in order.
class FieldWriter {
 public:
  FieldWriter& string(std::string_view value);
  FieldWriter& u64(std::uint64_t value);
  const std::string& payload() const { return payload_; }

 private:
  std::string payload_;
};

// A frame's fields, read in order; a field that is missing, too long or left over throws
// "PEER sent a malformed frame: ..." (internal), never reads past the payload.
class FieldReader {
 public:
  FieldReader(std::string_view payload, std::string_view peer) : rest_(payload), peer_(peer) {}
  std::string string(std::size_t limit = kFieldLimit);
  std::uint64_t u64();
  // Throws unless every byte was read.
  void finish() const;

 private:
  std::string_view take(std::size_t size);
  std::string_view rest_;
  std::string_view peer_;
};

// Frames over one end of the socket. Every wait polls `cancel_fd` too. Errors are one
// kbuild::Error each, naming `peer` ("kbuildctl", "kbuildd"): canceled once `cancel_fd` is
// readable; internal "PEER closed the connection" for a hang-up (between frames or inside one)
// and "PEER sent a malformed frame: ..." for a frame over its limit.
class FrameStream {
 public:
  // `fd` and `cancel_fd` (-1 for none) are borrowed.
  FrameStream(int fd, int cancel_fd, std::string peer);

  void send(FrameType type, std::string_view payload = {});
  // The next frame, its payload at most `limit` bytes. `frame` is reused so that a stream of
  // chunks needs one buffer.
  void receive(Frame& frame, std::size_t limit);
  Frame receive(std::size_t limit);
  // As receive, but false when the peer hung up before the frame began: the normal end of a
  // conversation for the side that answers.
  bool receive_next(Frame& frame, std::size_t limit);

  // The error a `error` frame carries, with the kind it names.
  static Error error_in(const Frame& frame);
  // The payload of an `error` frame for `error`.
  static std::string error_payload(const Error& error);

  const std::string& peer() const { return peer_; }

 private:
  // Fills `data`; false only for a hang-up before the first byte when `frame_started` is false.
  bool read_exactly(char* data, std::size_t size, bool frame_started);
  [[noreturn]] void throw_io(const Error& error) const;

  int cancel_fd_;
  std::string peer_;
  ClientStream stream_;
};

}  // namespace kbuild::remotecache::layout
