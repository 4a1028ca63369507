#include "engine/context/sender.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>

#include "common/error.h"
#include "common/unique_fd.h"
#include "engine/context/follow_links.h"
#include "engine/context/fs.h"
#include "engine/context/path_filter.h"
#include "engine/context/wire.h"

namespace kbuild::context {
namespace {

constexpr std::size_t kFlushAt = 256 * 1024;
constexpr std::int64_t kInlineContent = 128 * 1024;  // smaller files go through the frame buffer
constexpr std::size_t kSpliceChunk = 1 << 20;

struct SendError {
  ErrorKind kind;
  std::string message;
};

ErrorKind kind_of(int error) {
  return error == EACCES || error == EPERM ? ErrorKind::permission
         : error == ENOENT                 ? ErrorKind::not_found
                                           : ErrorKind::user;
}

[[noreturn]] void fail(int error, std::string_view op, std::string_view path) {
  throw SendError{kind_of(error), std::string(op) + " " + std::string(path) + ": " + errno_text(error)};
}

std::int64_t ns_of(const struct timespec& ts) { return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec; }

class Output {
 public:
  explicit Output(int fd) : fd_(fd) { buffer_.reserve(kFlushAt + kInlineContent + 8192); }
  std::string& buffer() { return buffer_; }
  void maybe_flush() {
    if (buffer_.size() >= kFlushAt) flush();
  }
  void flush() {
    write_all(fd_, buffer_.data(), buffer_.size(), "context stream");
    buffer_.clear();
  }
  int fd() const { return fd_; }

 private:
  int fd_;
  std::string buffer_;
};

class Sender {
 public:
  Sender(int root_fd, Output& out, PathFilter filter) : root_fd_(root_fd), out_(out), filter_(std::move(filter)) {}

  void walk() {
    walk_dir(root_fd_, "", true, false);
    wire::append_end(out_.buffer(), paths_.size());
    out_.flush();
  }

  void send_wanted(int request_fd) {
    wire::StreamReader in(request_fd, -1, 65536);
    char raw[wire::kFrameHeaderSize];
    if (!in.read_exact(raw, sizeof(raw), true)) return;  // the daemon gave up
    const wire::FrameHeader h = wire::parse_frame_header(raw);
    if (h.kind != wire::FrameKind::want || h.length > 4 * paths_.size()) {
      throw Error(ErrorKind::internal, "context reader: unexpected request");
    }
    std::string payload(h.length, '\0');
    in.read_exact(payload.data(), payload.size());
    std::int64_t last = -1;
    for (std::uint32_t index : wire::parse_want(payload)) {
      if (index >= paths_.size() || !regular_[index] || static_cast<std::int64_t>(index) <= last) {
        throw Error(ErrorKind::internal, "context reader: bad file index in request");
      }
      last = index;
      send_file(index);
    }
    out_.flush();
  }

 private:
  struct Pending {
    wire::EntryHeader header;
    bool sent = false;
  };

  static wire::EntryHeader header_of(const struct stat& st, EntryType type, std::string path) {
    wire::EntryHeader h;
    h.type = type;
    h.mode = st.st_mode & 07777;
    h.uid = st.st_uid;
    h.gid = st.st_gid;
    h.nlink = static_cast<std::uint32_t>(st.st_nlink);
    h.dev = st.st_dev;
    h.ino = st.st_ino;
    h.size = type == EntryType::regular ? st.st_size : 0;
    h.mtime_ns = ns_of(st.st_mtim);
    h.ctime_ns = ns_of(st.st_ctim);
    h.path = std::move(path);
    return h;
  }

  void send(const wire::EntryHeader& h) {
    paths_.push_back(h.path);
    regular_.push_back(h.type == EntryType::regular);
    wire::append_entry(out_.buffer(), h);
    out_.maybe_flush();
  }

  // fsutil sends a directory that is itself left out once something below it is kept.
  void send_pending() {
    for (Pending& p : pending_) {
      if (p.sent) continue;
      send(p.header);
      p.sent = true;
    }
  }

  // `reopen`: `dir_fd` may be the client's fd (O_PATH, shared offset). `skipped`: the directory
  // itself is left out, and fsutil ignores its permission errors.
  void walk_dir(int dir_fd, const std::string& prefix, bool reopen, bool skipped) {
    std::vector<std::string> names;
    if (!read_dir_names(dir_fd, names, reopen)) {
      if (errno == ENOENT || (skipped && (errno == EACCES || errno == EPERM))) return;
      fail(errno, "open", prefix.empty() ? "." : prefix);
    }
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      std::string path = prefix.empty() ? name : prefix + "/" + name;
      if (path.size() > wire::kMaxPath) fail(ENAMETOOLONG, "lstat", path);
      struct stat st {};
      if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        const int error = errno;
        if (error == ENOENT) continue;  // removed while we walk
        if (filter_.decide(path, false) != PathFilter::Decision::keep) continue;
        fail(error, "lstat", path);
      }
      const bool is_dir = S_ISDIR(st.st_mode);
      const PathFilter::Decision decision = filter_.decide(path, is_dir);
      if (decision == PathFilter::Decision::skip_subtree) continue;
      if (is_dir) {
        walk_subdir(dir_fd, name, std::move(path), decision == PathFilter::Decision::keep);
      } else if (decision == PathFilter::Decision::keep) {
        send_leaf(dir_fd, name, std::move(path), st);
      }
    }
  }

  void walk_subdir(int dir_fd, const std::string& name, std::string path, bool keep) {
    UniqueFd sub(::openat(dir_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    if (!sub) {
      const int error = errno;
      if (error == ENOENT || error == ENOTDIR || error == ELOOP) return;  // replaced while we walk
      if (!keep && (error == EACCES || error == EPERM)) return;
      fail(error, "open", path);
    }
    struct stat st {};
    if (::fstat(sub.get(), &st) != 0) fail(errno, "lstat", path);
    pending_.push_back(Pending{header_of(st, EntryType::directory, path), false});
    if (keep) send_pending();
    walk_dir(sub.get(), path, false, !keep);
    pending_.pop_back();
  }

  void send_leaf(int dir_fd, const std::string& name, std::string path, const struct stat& st) {
    wire::EntryHeader h;
    if (S_ISREG(st.st_mode)) {
      // Fail now, as BuildKit would when it reads the file, even if its content is not needed.
      if (::faccessat(dir_fd, name.c_str(), R_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return;
        fail(errno, "open", path);
      }
      h = header_of(st, EntryType::regular, std::move(path));
    } else if (S_ISLNK(st.st_mode)) {
      char target[wire::kMaxLinkTarget + 1];
      const ssize_t n = ::readlinkat(dir_fd, name.c_str(), target, sizeof(target));
      if (n < 0) {
        if (errno == ENOENT || errno == EINVAL) return;
        fail(errno, "readlink", path);
      }
      if (static_cast<std::size_t>(n) > wire::kMaxLinkTarget) fail(ENAMETOOLONG, "readlink", path);
      h = header_of(st, EntryType::symlink, std::move(path));
      h.link_target.assign(target, static_cast<std::size_t>(n));
    } else if (S_ISFIFO(st.st_mode)) {
      h = header_of(st, EntryType::fifo, std::move(path));
    } else {
      return;  // sockets and device nodes are not materialized in the daemon's store
    }
    send_pending();
    send(h);
  }

  void send_file(std::uint32_t index) {
    const std::string& path = paths_[index];
    UniqueFd fd(open_beneath(root_fd_, path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY));
    if (!fd) fail(errno, "open", path);
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) fail(errno, "stat", path);
    if (!S_ISREG(st.st_mode)) throw SendError{ErrorKind::user, "open " + path + ": changed while the context was read"};
    wire::ContentHeader c;
    c.index = index;
    c.size = st.st_size;
    c.dev = st.st_dev;
    c.ino = st.st_ino;
    c.mtime_ns = ns_of(st.st_mtim);
    c.ctime_ns = ns_of(st.st_ctim);
    wire::append_content_header(out_.buffer(), c);
    const bool complete = c.size <= kInlineContent ? send_inline(fd.get(), path, c.size) : send_spliced(fd.get(), path, c.size);
    if (!complete) throw SendError{ErrorKind::user, "read " + path + ": file shrank while it was being read"};
    out_.maybe_flush();
  }

  // The bytes go into the frame buffer with the headers around them. A short file is padded
  // with zeros, so the stream stays in step, and reported.
  bool send_inline(int fd, const std::string& path, std::int64_t size) {
    std::string& buffer = out_.buffer();
    const std::size_t start = buffer.size();
    const auto n = static_cast<std::size_t>(size);
    buffer.resize(start + n);
    std::size_t done = 0;
    while (done < n) {
      const ssize_t got = ::read(fd, buffer.data() + start + done, n - done);
      if (got > 0) {
        done += static_cast<std::size_t>(got);
        continue;
      }
      if (got < 0 && errno == EINTR) continue;
      const int error = got < 0 ? errno : 0;
      std::memset(buffer.data() + start + done, 0, n - done);
      if (error) fail(error, "read", path);
      return false;
    }
    return true;
  }

  // Large files move page-cache pages straight into the pipe.
  bool send_spliced(int fd, const std::string& path, std::int64_t size) {
    out_.flush();
    auto remaining = static_cast<std::size_t>(size);
    bool can_splice = true;
    std::string buffer;
    while (remaining > 0) {
      ssize_t n;
      if (can_splice) {
        n = ::splice(fd, nullptr, out_.fd(), nullptr, std::min(remaining, kSpliceChunk), SPLICE_F_MORE);
        if (n < 0 && (errno == EINVAL || errno == ENOSYS)) {
          can_splice = false;
          continue;
        }
      } else {
        if (buffer.empty()) buffer.resize(kSpliceChunk);
        n = ::read(fd, buffer.data(), std::min(remaining, buffer.size()));
        if (n > 0) write_all(out_.fd(), buffer.data(), static_cast<std::size_t>(n), "context stream");
      }
      if (n > 0) {
        remaining -= static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      const int error = n < 0 ? errno : 0;
      pad(remaining);
      if (error) fail(error, "read", path);
      return false;
    }
    return true;
  }

  void pad(std::size_t count) {
    const std::string zeros(std::min<std::size_t>(count, kSpliceChunk), '\0');
    while (count > 0) {
      const std::size_t n = std::min(count, zeros.size());
      write_all(out_.fd(), zeros.data(), n, "context stream");
      count -= n;
    }
  }

  int root_fd_;
  Output& out_;
  PathFilter filter_;
  std::vector<Pending> pending_;
  std::vector<std::string> paths_;  // by entry index
  std::vector<bool> regular_;
};

PathFilter filter_for(int root_fd, const SenderOptions& options) {
  return PathFilter(include_patterns_for(root_fd, options.include_patterns, options.follow_paths), options.ignore);
}

void report(Output& out, ErrorKind kind, std::string_view message) {
  try {
    out.flush();
    std::string frame;
    wire::append_error(frame, kind, message);
    write_all(out.fd(), frame.data(), frame.size(), "context stream");
  } catch (...) {
    // The daemon went away; it has nobody to tell.
  }
}

}  // namespace

int run_context_sender(int root_fd, int data_fd, int request_fd, const SenderOptions& options) noexcept {
  std::optional<Output> out;
  try {
    out.emplace(data_fd);
  } catch (...) {
    return 1;
  }
  try {
    Sender sender(root_fd, *out, filter_for(root_fd, options));
    sender.walk();
    sender.send_wanted(request_fd);
    return 0;
  } catch (const SendError& e) {
    report(*out, e.kind, e.message);
  } catch (const Error& e) {
    report(*out, e.kind(), e.what());
  } catch (const std::exception& e) {
    report(*out, ErrorKind::internal, e.what());
  } catch (...) {
    report(*out, ErrorKind::internal, "unknown error");
  }
  return 1;
}

}  // namespace kbuild::context
