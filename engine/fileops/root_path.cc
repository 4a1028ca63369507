#include "engine/fileops/root_path.h"

#include "common/go_path.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>

#include "common/error.h"
#include "common/syscall.h"  // error_kind_for_errno

namespace kbuild::fileops {
namespace {

// fs.RootPath gives up after this many symlinks (continuity's errTooManyLinks).
constexpr int kMaxLinks = 255;

std::atomic<bool> openat2_missing{false};

long raw_openat2(int dirfd, const char* path, int flags, uint64_t resolve) {
  struct open_how how = {};
  how.flags = static_cast<uint64_t>(flags);
  how.resolve = resolve;
  return ::syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

// Opens parts[0, count) relative to the root, refusing any symlink, one component at a time.
UniqueFd walk_parts(int root_fd, const std::vector<std::string>& parts, std::size_t count, int flags) {
  UniqueFd current;
  for (std::size_t i = 0; i < count; ++i) {
    const int base = current ? current.get() : root_fd;
    const int step_flags = i + 1 == count ? flags : (O_PATH | O_DIRECTORY);
    UniqueFd next(::openat(base, parts[i].c_str(), step_flags | O_NOFOLLOW | O_CLOEXEC));
    if (!next) throw_path_error("open", join_parts(parts, i + 1));
    current = std::move(next);
  }
  if (!current) {
    current.reset(::openat(root_fd, ".", flags | O_CLOEXEC));
    if (!current) throw_path_error("open", "/");
  }
  return current;
}

std::string readlink_fd(int fd, const std::string& path) {
  std::string target(256, '\0');
  for (;;) {
    const ssize_t n = ::readlinkat(fd, "", target.data(), target.size());
    if (n < 0) throw_path_error("readlink", path);
    if (static_cast<std::size_t>(n) < target.size()) {
      target.resize(static_cast<std::size_t>(n));
      return target;
    }
    target.resize(target.size() * 2);
  }
}

}  // namespace

std::string go_errno_text(int error) {
  std::string text = std::strerror(error);
  if (!text.empty() && text[0] >= 'A' && text[0] <= 'Z' && !(text.size() > 1 && text[1] >= 'A' && text[1] <= 'Z')) {
    text[0] = static_cast<char>(text[0] - 'A' + 'a');
  }
  return text;
}

void throw_path_error(std::string_view op, std::string_view path, int error) {
  std::string message(op);
  if (!path.empty()) {
    message += ' ';
    message += path;
  }
  message += ": ";
  message += go_errno_text(error);
  throw Error(error_kind_for_errno(error), message);
}

void throw_path_error(std::string_view op, std::string_view path) { throw_path_error(op, path, errno); }


std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    std::size_t end = path.find('/', i);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view part = path.substr(i, end - i);
    if (!part.empty() && part != ".") parts.emplace_back(part);
    i = end + 1;
  }
  return parts;
}

std::string join_parts(const std::vector<std::string>& parts, std::size_t count) {
  count = std::min(count, parts.size());
  if (count == 0) return "/";
  std::string out;
  for (std::size_t i = 0; i < count; ++i) {
    out += '/';
    out += parts[i];
  }
  return out;
}

std::string child_path(const std::string& dir, std::string_view name) {
  std::string out = dir;
  if (out.empty() || out.back() != '/') out += '/';
  out += name;
  return out;
}

RootedPath resolve_in_root(int root_fd, std::string_view path, bool follow_final) {
  RootedPath out;
  const std::vector<std::string> initial = split_path(path);
  std::deque<std::string> pending(initial.begin(), initial.end());
  UniqueFd current;  // the directory join(out.parts) while everything exists; invalid: the root
  bool missing = false;
  int links = 0;

  while (!pending.empty()) {
    std::string part = std::move(pending.front());
    pending.pop_front();
    if (part == "..") {
      // Lexical on the resolved parts: they are real directories, so this is the real parent,
      // and it stops at the root.
      if (out.parts.empty()) continue;
      out.parts.pop_back();
      if (missing) {
        if (out.parts.size() <= out.existing) missing = false;
        continue;
      }
      --out.existing;
      current = out.parts.empty() ? UniqueFd() : walk_parts(root_fd, out.parts, out.parts.size(), O_PATH | O_DIRECTORY);
      continue;
    }
    if (missing) {
      out.parts.push_back(std::move(part));
      continue;
    }
    const bool last = pending.empty();
    UniqueFd fd(::openat(current ? current.get() : root_fd, part.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
      if (errno != ENOENT) throw_path_error("lstat", child_path(out.str(), part));
      missing = true;
      out.parts.push_back(std::move(part));
      continue;
    }
    struct stat st;
    check_path(::fstat(fd.get(), &st), "lstat", child_path(out.str(), part));
    if (S_ISLNK(st.st_mode) && (!last || follow_final)) {
      if (++links > kMaxLinks) {
        throw Error(ErrorKind::user, "resolving " + std::string(path) + " inside the root: too many links");
      }
      const std::string target = readlink_fd(fd.get(), child_path(out.str(), part));
      if (!target.empty() && target[0] == '/') {
        out.parts.clear();
        out.existing = 0;
        current.reset();
      }
      const std::vector<std::string> target_parts = split_path(target);
      pending.insert(pending.begin(), target_parts.begin(), target_parts.end());
      continue;
    }
    out.parts.push_back(std::move(part));
    ++out.existing;
    if (S_ISDIR(st.st_mode)) {
      current = std::move(fd);
      continue;
    }
    if (!last) {
      // fs.RootPath lstats the next component through this non-directory.
      throw_path_error("lstat", child_path(out.str(), pending.front()), ENOTDIR);
    }
  }
  return out;
}

UniqueFd open_dir_parts(int root_fd, const std::vector<std::string>& parts, std::size_t count) {
  count = std::min(count, parts.size());
  constexpr int kFlags = O_RDONLY | O_DIRECTORY | O_CLOEXEC;
  if (!openat2_missing.load(std::memory_order_relaxed)) {
    std::string relative;
    for (std::size_t i = 0; i < count; ++i) {
      if (i > 0) relative += '/';
      relative += parts[i];
    }
    if (relative.empty()) relative = ".";
    for (int attempt = 0; attempt < 16; ++attempt) {
      const long fd = raw_openat2(root_fd, relative.c_str(), kFlags,
                                  RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS);
      if (fd >= 0) return UniqueFd(static_cast<int>(fd));
      if (errno == EAGAIN || errno == EINTR) continue;  // a rename raced the lookup: retry
      if (errno == ENOSYS) {
        openat2_missing.store(true, std::memory_order_relaxed);
        break;
      }
      throw_path_error("open", join_parts(parts, count));
    }
  }
  return walk_parts(root_fd, parts, count, kFlags);
}

MadeDirs make_dirs(int root_fd, const RootedPath& path, std::size_t count, mode_t mode,
                   const std::optional<Owner>& owner) {
  count = std::min(count, path.parts.size());
  MadeDirs out;
  UniqueFd current(::openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!current) throw_path_error("open", "/");
  for (std::size_t i = 0; i < count; ++i) {
    const std::string& name = path.parts[i];
    const std::string shown = join_parts(path.parts, i + 1);
    if (i >= path.existing) {
      if (::mkdirat(current.get(), name.c_str(), 0700) == 0) {
        UniqueFd made(::openat(current.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!made) throw_path_error("open", shown);
        // MkdirAll chmods what it made: the umask must not matter.
        check_path(::fchmod(made.get(), mode & 07777), "chmod", shown);
        if (owner) check_path(::fchown(made.get(), owner->uid, owner->gid), "lchown", shown);
        ++out.created;
        current = std::move(made);
        continue;
      }
      if (errno != EEXIST) throw_path_error("mkdir", shown);
    }
    UniqueFd next(::openat(current.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) {
      if (errno == ENOTDIR || errno == ELOOP) throw_path_error("mkdir", shown, ENOTDIR);
      throw_path_error("mkdir", shown);
    }
    current = std::move(next);
  }
  out.fd = std::move(current);
  return out;
}

std::optional<struct stat> lstat_at(int dirfd, const std::string& name, const std::string& path) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return st;
  if (errno == ENOENT) return std::nullopt;
  throw_path_error("lstat", path);
}

void remove_all_at(int dirfd, const std::string& name, const std::string& path_for_messages) {
  const std::optional<struct stat> st = lstat_at(dirfd, name, path_for_messages);
  if (!st) return;
  if (S_ISDIR(st->st_mode)) {
    UniqueFd dir(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_path_error("open", path_for_messages);
    for (const DirEntry& child : list_directory(dir.get(), path_for_messages)) {
      remove_all_at(dir.get(), child.name, child_path(path_for_messages, child.name));
    }
    if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      throw_path_error("remove", path_for_messages);
    }
    return;
  }
  if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) throw_path_error("remove", path_for_messages);
}

}  // namespace kbuild::fileops
