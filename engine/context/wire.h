// The framed stream between the context reader process (running as the caller) and the daemon.
//
// reader → daemon, one pipe:   ENTRY* END, then for each wanted file CONTENT + its bytes; an
//                              ERROR frame may replace any frame and ends the transfer.
// daemon → reader, one socket: WANT (the indices, ascending, of the files whose content it needs).
//
// A frame is u32 kind, u32 payload length, payload (little-endian fields). A CONTENT frame's
// payload is its header; exactly `size` raw bytes follow it. Every field is checked on receipt:
// the reader runs as the user, on the user's files, and is treated as untrusted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "engine/context/manifest.h"

namespace kbuild::context::wire {

enum class FrameKind : std::uint32_t { entry = 1, end = 2, content = 3, error = 4, want = 5 };

constexpr std::size_t kFrameHeaderSize = 8;
constexpr std::size_t kMaxPath = 4096;
constexpr std::size_t kMaxLinkTarget = 4096;
constexpr std::size_t kMaxErrorText = 4096;
constexpr std::uint32_t kMaxEntryPayload = 128 + kMaxPath + kMaxLinkTarget;
constexpr std::uint32_t kContentPayload = 44;

struct FrameHeader {
  FrameKind kind;
  std::uint32_t length;
};

// What the walk found at one path: lstat's answer, never following the path if it is a link.
struct EntryHeader {
  EntryType type = EntryType::regular;
  std::uint32_t mode = 0;  // 07777 bits
  std::uint32_t uid = 0;  // sent as found; the daemon resets owners to 0 (receiver.cc)
  std::uint32_t gid = 0;
  std::uint32_t nlink = 1;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::int64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
  std::string path;
  std::string link_target;
};

// Precedes a file's bytes: the stat of the file as opened for reading.
struct ContentHeader {
  std::uint32_t index = 0;
  std::int64_t size = 0;
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::int64_t mtime_ns = 0;
  std::int64_t ctime_ns = 0;
};

void append_entry(std::string& out, const EntryHeader& entry);
void append_end(std::string& out, std::uint64_t entries);
void append_content_header(std::string& out, const ContentHeader& content);
// Ends the transfer with `message` ("open secret.txt: permission denied") of `kind`.
void append_error(std::string& out, ErrorKind kind, std::string_view message);
void append_want(std::string& out, const std::vector<std::uint32_t>& indices);

FrameHeader parse_frame_header(const char (&bytes)[kFrameHeaderSize]);
// Each throws kbuild::Error (internal) on a malformed payload; parse_entry also checks the path,
// the type and the fields that must be empty or in range.
EntryHeader parse_entry(std::string_view payload);
std::uint64_t parse_end(std::string_view payload);
ContentHeader parse_content_header(std::string_view payload);
std::pair<ErrorKind, std::string> parse_error(std::string_view payload);
std::vector<std::uint32_t> parse_want(std::string_view payload);

// Reads a pipe or socket in large blocks. The fd is switched to non-blocking; while waiting, a
// readable `cancel_fd` (if >= 0) ends the read with kbuild::Error (canceled).
class StreamReader {
 public:
  StreamReader(int fd, int cancel_fd, std::size_t buffer_size = 1 << 20);

  // Exactly `size` bytes; returns false on end of stream before the first byte when `eof_ok`,
  // and throws kbuild::Error (internal) on any other short read.
  bool read_exact(void* out, std::size_t size, bool eof_ok = false);
  // Up to `max` bytes of the stream (at least one), as a view into the buffer valid until the next call.
  std::string_view next_chunk(std::size_t max);
  // Exactly `size` bytes into `out`, what is not buffered yet read straight into it (no copy
  // through the buffer); throws kbuild::Error (internal) on a short read.
  void read_direct(void* out, std::size_t size);
  std::uint64_t consumed() const { return consumed_; }

 private:
  void fill();
  int fd_;
  int cancel_fd_;
  std::string buffer_;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
  std::uint64_t consumed_ = 0;
};

// Writes all of `data` to a non-blocking pipe or socket (no SIGPIPE: sockets use MSG_NOSIGNAL),
// waiting with poll; a readable `cancel_fd` ends the wait with kbuild::Error (canceled).
void send_all(int fd, std::string_view data, int cancel_fd);

}  // namespace kbuild::context::wire
