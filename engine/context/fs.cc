#include "engine/context/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/syscall.h"
#include "common/unique_fd.h"

namespace kbuild::context {
namespace {

std::atomic<bool> g_no_openat2{false};

int open_by_walk(int root, std::string_view path, int flags, mode_t mode) {
  UniqueFd current;
  int dir = root;
  std::size_t start = 0;
  while (true) {
    const std::size_t slash = path.find('/', start);
    const std::string name(path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (name.empty() || name == "." || name == "..") {
      errno = EINVAL;
      return -1;
    }
    if (slash == std::string_view::npos) return ::openat(dir, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
    const int next = ::openat(dir, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (next < 0) return -1;
    current.reset(next);
    dir = next;
    start = slash + 1;
  }
}

}  // namespace

int open_beneath(int root, std::string_view path, int flags, mode_t mode) {
  if (path.empty()) return ::openat(root, ".", flags | O_CLOEXEC, mode);
  if (!g_no_openat2.load(std::memory_order_relaxed)) {
    struct open_how how {};
    how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    const std::string p(path);
    for (int attempt = 0; attempt < 8; ++attempt) {
      const long fd = ::syscall(SYS_openat2, root, p.c_str(), &how, sizeof(how));
      if (fd >= 0) return static_cast<int>(fd);
      if (errno == EAGAIN || errno == EINTR) continue;  // a concurrent rename raced the lookup
      if (errno != ENOSYS) return -1;
      g_no_openat2.store(true, std::memory_order_relaxed);
      break;
    }
    if (!g_no_openat2.load(std::memory_order_relaxed)) return -1;
  }
  return open_by_walk(root, path, flags, mode);
}

std::string errno_text(int error) {
  char buffer[256];
  const char* text = ::strerror_r(error, buffer, sizeof(buffer));
  std::string out = text ? text : "unknown error";
  // Go's syscall texts are glibc's with a lower-case first letter ("permission denied").
  if (!out.empty() && out[0] >= 'A' && out[0] <= 'Z' && !(out.size() > 1 && out[1] >= 'A' && out[1] <= 'Z')) {
    out[0] = static_cast<char>(out[0] - 'A' + 'a');
  }
  return out;
}

std::int64_t realtime_ns() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

bool read_dir_names(int dir_fd, std::vector<std::string>& names, bool reopen) {
  // A new open file description: the caller's fd keeps its offset, and reading starts at 0.
  UniqueFd owned;
  if (reopen) {
    owned.reset(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!owned) return false;
  }
  const int fd = reopen ? owned.get() : dir_fd;
  alignas(8) char buffer[32768];
  while (true) {
    const ssize_t n = ::getdents64(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) return true;
    for (ssize_t offset = 0; offset < n;) {
      const auto* entry = reinterpret_cast<const struct dirent64*>(buffer + offset);
      offset += entry->d_reclen;
      const char* name = entry->d_name;
      if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
      names.emplace_back(name);
    }
  }
}

void remove_below(int parent_fd, const std::string& name, std::string_view display_path) {
  if (::unlinkat(parent_fd, name.c_str(), 0) == 0 || errno == ENOENT) return;
  if (errno != EISDIR && errno != EPERM) throw_errno("unlinkat", display_path);
  UniqueFd dir(::openat(parent_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) throw_errno("openat", display_path);
  std::vector<std::string> children;
  if (!read_dir_names(dir.get(), children)) throw_errno("getdents64", display_path);
  for (const std::string& child : children) {
    remove_below(dir.get(), child, std::string(display_path) + "/" + child);
  }
  check(::unlinkat(parent_fd, name.c_str(), AT_REMOVEDIR), "unlinkat", display_path);
}

}  // namespace kbuild::context
