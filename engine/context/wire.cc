#include "engine/context/wire.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/syscall.h"
#include "engine/context/bytes.h"

namespace kbuild::context::wire {
namespace {

[[noreturn]] void bad(const std::string& what) { throw Error(ErrorKind::internal, "invalid context stream: " + what); }

void put_header(std::string& out, FrameKind kind, std::size_t length) {
  ByteSink sink(out);
  sink.put(static_cast<std::uint32_t>(kind));
  sink.put(static_cast<std::uint32_t>(length));
}

// Waits until `fd` is ready for `events`, or throws when `cancel_fd` becomes readable.
void wait_for(int fd, short events, int cancel_fd) {
  struct pollfd fds[2] = {{fd, events, 0}, {cancel_fd, POLLIN, 0}};
  while (true) {
    const int n = ::poll(fds, cancel_fd >= 0 ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll", "context stream");
    }
    if (cancel_fd >= 0 && fds[1].revents) throw Error(ErrorKind::canceled, "reading the build context was canceled");
    if (fds[0].revents) return;
  }
}

void set_nonblocking(int fd) {
  const int flags = check(::fcntl(fd, F_GETFL), "fcntl", "context stream");
  if (!(flags & O_NONBLOCK)) check(::fcntl(fd, F_SETFL, flags | O_NONBLOCK), "fcntl", "context stream");
}

}  // namespace

void append_entry(std::string& out, const EntryHeader& e) {
  put_header(out, FrameKind::entry, 65 + e.path.size() + e.link_target.size());
  ByteSink sink(out);
  sink.put(static_cast<std::uint8_t>(e.type));
  sink.put(e.mode);
  sink.put(e.uid);
  sink.put(e.gid);
  sink.put(e.nlink);
  sink.put(e.dev);
  sink.put(e.ino);
  sink.put(e.size);
  sink.put(e.mtime_ns);
  sink.put(e.ctime_ns);
  sink.put_string(e.path);
  sink.put_string(e.link_target);
}

void append_end(std::string& out, std::uint64_t entries) {
  put_header(out, FrameKind::end, 8);
  ByteSink(out).put(entries);
}

void append_content_header(std::string& out, const ContentHeader& c) {
  put_header(out, FrameKind::content, kContentPayload);
  ByteSink sink(out);
  sink.put(c.index);
  sink.put(c.size);
  sink.put(c.dev);
  sink.put(c.ino);
  sink.put(c.mtime_ns);
  sink.put(c.ctime_ns);
}

void append_error(std::string& out, ErrorKind kind, std::string_view message) {
  message = message.substr(0, kMaxErrorText);
  put_header(out, FrameKind::error, 8 + message.size());
  ByteSink sink(out);
  sink.put(static_cast<std::uint32_t>(kind));
  sink.put_string(message);
}

void append_want(std::string& out, const std::vector<std::uint32_t>& indices) {
  put_header(out, FrameKind::want, 4 * indices.size());
  ByteSink sink(out);
  for (std::uint32_t i : indices) sink.put(i);
}

FrameHeader parse_frame_header(const char (&bytes)[kFrameHeaderSize]) {
  ByteSource in(std::string_view(bytes, kFrameHeaderSize), "context frame");
  FrameHeader h;
  h.kind = static_cast<FrameKind>(in.get<std::uint32_t>());
  h.length = in.get<std::uint32_t>();
  return h;
}

EntryHeader parse_entry(std::string_view payload) {
  ByteSource in(payload, "invalid context stream: entry");
  EntryHeader e;
  const auto type = in.get<std::uint8_t>();
  if (type < 1 || type > 4) bad("entry of unknown type " + std::to_string(type));
  e.type = static_cast<EntryType>(type);
  e.mode = in.get<std::uint32_t>();
  e.uid = in.get<std::uint32_t>();
  e.gid = in.get<std::uint32_t>();
  e.nlink = in.get<std::uint32_t>();
  e.dev = in.get<std::uint64_t>();
  e.ino = in.get<std::uint64_t>();
  e.size = in.get<std::int64_t>();
  e.mtime_ns = in.get<std::int64_t>();
  e.ctime_ns = in.get<std::int64_t>();
  e.path = in.get_string(kMaxPath);
  e.link_target = in.get_string(kMaxLinkTarget);
  in.expect_done();
  if (!is_valid_context_path(e.path)) bad("invalid path \"" + e.path.substr(0, 200) + "\"");
  if (e.mode & ~07777u) bad(e.path + ": invalid mode");
  if (e.size < 0) bad(e.path + ": negative size");
  if (e.type == EntryType::symlink) {
    if (e.link_target.empty() || e.link_target.find('\0') != std::string::npos) bad(e.path + ": invalid link target");
  } else if (!e.link_target.empty()) {
    bad(e.path + ": link target on a " + entry_type_name(e.type));
  }
  return e;
}

std::uint64_t parse_end(std::string_view payload) {
  ByteSource in(payload, "invalid context stream: end");
  const auto count = in.get<std::uint64_t>();
  in.expect_done();
  return count;
}

ContentHeader parse_content_header(std::string_view payload) {
  ByteSource in(payload, "invalid context stream: content");
  ContentHeader c;
  c.index = in.get<std::uint32_t>();
  c.size = in.get<std::int64_t>();
  c.dev = in.get<std::uint64_t>();
  c.ino = in.get<std::uint64_t>();
  c.mtime_ns = in.get<std::int64_t>();
  c.ctime_ns = in.get<std::int64_t>();
  in.expect_done();
  if (c.size < 0) bad("negative content size");
  return c;
}

std::pair<ErrorKind, std::string> parse_error(std::string_view payload) {
  ByteSource in(payload, "invalid context stream: error");
  const auto code = in.get<std::uint32_t>();
  const ErrorKind kind = code <= static_cast<std::uint32_t>(ErrorKind::internal) ? static_cast<ErrorKind>(code) : ErrorKind::internal;
  std::string message(in.get_string(kMaxErrorText));
  in.expect_done();
  // The text is shown to the user: keep it printable.
  for (char& c : message) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  return {kind, message};
}

std::vector<std::uint32_t> parse_want(std::string_view payload) {
  if (payload.size() % 4) throw Error(ErrorKind::internal, "invalid want frame");
  ByteSource in(payload, "want frame");
  std::vector<std::uint32_t> out(payload.size() / 4);
  for (auto& i : out) i = in.get<std::uint32_t>();
  return out;
}

StreamReader::StreamReader(int fd, int cancel_fd, std::size_t buffer_size)
    : fd_(fd), cancel_fd_(cancel_fd), buffer_(buffer_size, '\0') {
  set_nonblocking(fd_);
}

void StreamReader::fill() {
  if (begin_ == end_) begin_ = end_ = 0;
  while (true) {
    const ssize_t n = ::read(fd_, buffer_.data() + end_, buffer_.size() - end_);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return;
    }
    if (n == 0) return;
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      wait_for(fd_, POLLIN, cancel_fd_);
      continue;
    }
    throw_errno("read", "context stream");
  }
}

bool StreamReader::read_exact(void* out, std::size_t size, bool eof_ok) {
  char* p = static_cast<char*>(out);
  std::size_t done = 0;
  while (done < size) {
    if (begin_ == end_) {
      fill();
      if (begin_ == end_) {
        if (done == 0 && eof_ok) return false;
        bad("stream ended early");
      }
    }
    const std::size_t n = std::min(size - done, end_ - begin_);
    std::memcpy(p + done, buffer_.data() + begin_, n);
    begin_ += n;
    done += n;
  }
  consumed_ += size;
  return true;
}

std::string_view StreamReader::next_chunk(std::size_t max) {
  if (begin_ == end_) {
    fill();
    if (begin_ == end_) bad("stream ended early");
  }
  const std::size_t n = std::min(max, end_ - begin_);
  std::string_view out(buffer_.data() + begin_, n);
  begin_ += n;
  consumed_ += n;
  return out;
}

void StreamReader::read_direct(void* out, std::size_t size) {
  char* p = static_cast<char*>(out);
  const std::size_t buffered = std::min(size, end_ - begin_);
  std::memcpy(p, buffer_.data() + begin_, buffered);
  begin_ += buffered;
  std::size_t done = buffered;
  while (done < size) {
    const ssize_t n = ::read(fd_, p + done, size - done);
    if (n > 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) bad("stream ended early");
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      wait_for(fd_, POLLIN, cancel_fd_);
      continue;
    }
    throw_errno("read", "context stream");
  }
  consumed_ += size;
}

void send_all(int fd, std::string_view data, int cancel_fd) {
  set_nonblocking(fd);
  struct stat st {};
  check(::fstat(fd, &st), "fstat", "context stream");
  const bool socket = S_ISSOCK(st.st_mode);
  while (!data.empty()) {
    const ssize_t n = socket ? ::send(fd, data.data(), data.size(), MSG_NOSIGNAL) : ::write(fd, data.data(), data.size());
    if (n >= 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      wait_for(fd, POLLOUT, cancel_fd);
      continue;
    }
    if (errno == EPIPE || errno == ECONNRESET) throw Error(ErrorKind::internal, "context reader went away");
    throw_errno("write", "context stream");
  }
}

}  // namespace kbuild::context::wire
