#include "engine/remotecache/layout_protocol.h"

#include <poll.h>

#include <array>

namespace kbuild::remotecache::layout {
namespace {

constexpr std::size_t kHeaderSize = 5;

void append_be(std::string& out, std::uint64_t value, int bytes) {
  for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) out += static_cast<char>((value >> shift) & 0xff);
}

std::uint64_t read_be(std::string_view bytes) {
  std::uint64_t value = 0;
  for (unsigned char c : bytes) value = (value << 8) | c;
  return value;
}

bool readable(int fd) {
  if (fd < 0) return false;
  struct pollfd p = {fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

bool known_frame_type(std::uint8_t type) {
  return (type >= static_cast<std::uint8_t>(FrameType::root) &&
          type <= static_cast<std::uint8_t>(FrameType::put_root)) ||
         (type >= static_cast<std::uint8_t>(FrameType::ok) && type <= static_cast<std::uint8_t>(FrameType::end));
}

}  // namespace

void throw_malformed(std::string_view peer, std::string_view detail) {
  throw Error(ErrorKind::internal, std::string(peer) + " sent a malformed frame: " + std::string(detail));
}

std::uint8_t wire_kind(ErrorKind kind) {
  return static_cast<std::uint8_t>(kind);
}

ErrorKind kind_from_wire(std::uint8_t kind) {
  // canceled is only ever this end's own: a peer cannot cancel a build by saying so.
  for (ErrorKind k : {ErrorKind::user, ErrorKind::not_found, ErrorKind::permission})
    if (kind == static_cast<std::uint8_t>(k)) return k;
  return ErrorKind::internal;
}

FieldWriter& FieldWriter::string(std::string_view value) {
  append_be(payload_, value.size(), 4);
  payload_.append(value);
  return *this;
}

FieldWriter& FieldWriter::u64(std::uint64_t value) {
  append_be(payload_, value, 8);
  return *this;
}

std::string_view FieldReader::take(std::size_t size) {
  if (size > rest_.size()) throw_malformed(peer_, "a field runs past the end of its frame");
  std::string_view field = rest_.substr(0, size);
  rest_.remove_prefix(size);
  return field;
}

std::string FieldReader::string(std::size_t limit) {
  const std::uint64_t size = read_be(take(4));
  if (size > limit)
    throw_malformed(peer_, "a field of " + std::to_string(size) + " bytes, more than " + std::to_string(limit));
  return std::string(take(size));
}

std::uint64_t FieldReader::u64() {
  return read_be(take(8));
}

void FieldReader::finish() const {
  if (!rest_.empty()) throw_malformed(peer_, std::to_string(rest_.size()) + " bytes after its fields");
}

FrameStream::FrameStream(int fd, int cancel_fd, std::string peer)
    : cancel_fd_(cancel_fd), peer_(std::move(peer)), stream_(fd, ClientStream::Direction::read, cancel_fd, peer_) {}

void FrameStream::throw_io(const Error& error) const {
  // ClientStream says canceled for a peer that hung up on a write too: only our cancel_fd
  // means canceled here.
  if (readable(cancel_fd_)) throw Error(ErrorKind::canceled, "canceled while talking to " + peer_);
  // A hang-up on a write is canceled, "the reader has gone"; other failures keep their text.
  if (error.kind() == ErrorKind::canceled) throw Error(ErrorKind::internal, peer_ + " closed the connection");
  throw Error(ErrorKind::internal, peer_ + " closed the connection (" + error.what() + ")");
}

void FrameStream::send(FrameType type, std::string_view payload) {
  std::string header;
  header += static_cast<char>(type);
  append_be(header, payload.size(), 4);
  try {
    stream_.write_all(header.data(), header.size());
    stream_.write_all(payload.data(), payload.size());
  } catch (const Error& e) {
    throw_io(e);
  }
}

bool FrameStream::read_exactly(char* data, std::size_t size, bool frame_started) {
  while (size > 0) {
    std::size_t n = 0;
    try {
      n = stream_.read_some(data, size);
    } catch (const Error& e) {
      throw_io(e);
    }
    if (n == 0) {
      if (readable(cancel_fd_)) throw Error(ErrorKind::canceled, "canceled while talking to " + peer_);
      if (!frame_started) return false;
      throw Error(ErrorKind::internal, peer_ + " closed the connection in the middle of a frame");
    }
    data += n;
    size -= n;
    frame_started = true;
  }
  return true;
}

bool FrameStream::receive_next(Frame& frame, std::size_t limit) {
  std::array<char, kHeaderSize> header{};
  if (!read_exactly(header.data(), kHeaderSize, false)) return false;
  const auto type = static_cast<std::uint8_t>(header[0]);
  if (!known_frame_type(type)) throw_malformed(peer_, "unknown frame type " + std::to_string(type));
  const std::uint64_t size = read_be(std::string_view(header.data() + 1, kHeaderSize - 1));
  if (size > limit) {
    throw_malformed(peer_, "a frame of " + std::to_string(size) + " bytes, more than " + std::to_string(limit));
  }
  frame.type = static_cast<FrameType>(type);
  frame.payload.resize(size);
  read_exactly(frame.payload.data(), size, true);
  return true;
}

void FrameStream::receive(Frame& frame, std::size_t limit) {
  if (!receive_next(frame, limit)) throw Error(ErrorKind::internal, peer_ + " closed the connection");
}

Frame FrameStream::receive(std::size_t limit) {
  Frame frame;
  receive(frame, limit);
  return frame;
}

Error FrameStream::error_in(const Frame& frame) {
  if (frame.payload.empty()) return Error(ErrorKind::internal, "an error without a message");
  const ErrorKind kind = kind_from_wire(static_cast<std::uint8_t>(frame.payload[0]));
  std::string message = frame.payload.substr(1, kFieldLimit);
  return Error(kind, message);
}

std::string FrameStream::error_payload(const Error& error) {
  std::string payload(1, static_cast<char>(wire_kind(error.kind())));
  payload.append(std::string_view(error.what()).substr(0, kFieldLimit));
  return payload;
}

}  // namespace kbuild::remotecache::layout
