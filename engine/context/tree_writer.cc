#include "engine/context/tree_writer.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_set>
#include <cerrno>

#include "common/error.h"
#include "common/syscall.h"
#include "engine/context/fs.h"

namespace kbuild::context {
namespace {

constexpr std::size_t kMaxCachedDirs = 256;

[[noreturn]] void refuse(std::string_view path, std::string_view why) {
  std::string shown(path.substr(0, 256));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20) c = '?';
  }
  throw Error(ErrorKind::user, "\"" + shown + "\": " + std::string(why));
}

struct timespec to_timespec(std::int64_t ns) {
  struct timespec ts {};
  ts.tv_sec = ns / 1'000'000'000;
  ts.tv_nsec = ns % 1'000'000'000;
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1'000'000'000;
    ts.tv_sec -= 1;
  }
  return ts;
}

// Copies a whole file: a reflink where the file system shares extents, else copy_file_range
// (in the kernel, no user-space copy), else read and write.
std::uint64_t copy_contents(int from, int to, std::string_view path) {
  if (::ioctl(to, FICLONE, from) == 0) {
    struct stat st {};
    check(::fstat(to, &st), "fstat", path);
    return static_cast<std::uint64_t>(st.st_size);
  }
  std::uint64_t total = 0;
  while (true) {
    const ssize_t n = ::copy_file_range(from, nullptr, to, nullptr, 1 << 30, 0);
    if (n > 0) {
      total += static_cast<std::uint64_t>(n);
      continue;
    }
    if (n == 0) return total;
    if (errno == EINTR) continue;
    if (total == 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) break;
    throw_errno("copy_file_range", path);
  }
  std::string buffer(1 << 20, '\0');
  while (true) {
    const ssize_t n = ::read(from, buffer.data(), buffer.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read", path);
    }
    if (n == 0) return total;
    write_all(to, buffer.data(), static_cast<std::size_t>(n), path);
    total += static_cast<std::uint64_t>(n);
  }
}

}  // namespace

TreeWriter::TreeWriter(int root_fd, Options options) : root_fd_(root_fd), options_(options) {}

const Entry* TreeWriter::find(std::string_view path) const {
  auto it = entries_.find(std::string(path));
  return it == entries_.end() ? nullptr : &it->second;
}

int TreeWriter::dir_fd(std::string_view dir) {
  if (dir.empty()) return root_fd_;
  const std::string key(dir);
  auto it = dir_fds_.find(key);
  if (it != dir_fds_.end()) return it->second.get();
  UniqueFd fd(open_beneath(root_fd_, dir, O_PATH | O_DIRECTORY));
  if (!fd) throw_errno("open", dir);
  return dir_fds_.emplace(key, std::move(fd)).first->second.get();
}

void TreeWriter::make_parents(std::string_view dir) {
  if (dir.empty()) return;
  auto it = entries_.find(std::string(dir));
  if (it != entries_.end()) {
    if (it->second.type != EntryType::directory) refuse(dir, "is not a directory but has entries below it");
    return;
  }
  make_parents(parent_of(dir));
  const std::string name(base_of(dir));
  check(::mkdirat(dir_fd(parent_of(dir)), name.c_str(), 0700), "mkdirat", dir);
  Entry implied;
  implied.path = std::string(dir);
  implied.type = EntryType::directory;
  implied.mode = 0755;
  implied.mtime_ns = realtime_ns();
  record(implied);
}

void TreeWriter::trim_cache() {
  // Only between operations: an fd handed out by dir_fd stays valid until the next one.
  if (dir_fds_.size() >= kMaxCachedDirs) dir_fds_.clear();
  if (source_dir_fds_.size() >= kMaxCachedDirs) source_dir_fds_.clear();
}

void TreeWriter::repoint_hardlinks(const std::vector<std::string>& removed) {
  // Entries that shared a removed file's inode still share it among themselves: the first one
  // now stands for it.
  std::unordered_map<std::string, std::vector<Entry*>> groups;
  for (const std::string& r : removed) groups.emplace(r, std::vector<Entry*>());
  bool any = false;
  for (auto& [path, e] : entries_) {
    if (e.hardlink_to.empty()) continue;
    auto g = groups.find(e.hardlink_to);
    if (g == groups.end()) continue;
    g->second.push_back(&e);
    any = true;
  }
  if (!any) return;
  for (auto& [removed_path, group] : groups) {
    std::sort(group.begin(), group.end(), [](const Entry* a, const Entry* b) { return path_less(a->path, b->path); });
    for (std::size_t i = 0; i < group.size(); ++i) group[i]->hardlink_to = i == 0 ? std::string() : group[0]->path;
  }
}

TreeWriter::Parent TreeWriter::prepare(const Entry& entry) {
  if (finished_) throw Error(ErrorKind::internal, "context tree written after it was finished");
  trim_cache();
  if (!is_valid_context_path(entry.path)) refuse(entry.path, "invalid path in build context");
  if (entry.mode & ~07777u) refuse(entry.path, "invalid mode");
  const std::string_view parent = parent_of(entry.path);
  if (!parent.empty()) {
    auto it = entries_.find(std::string(parent));
    if (it == entries_.end()) {
      if (!options_.create_missing_parents) refuse(entry.path, "parent directory was not sent first");
      make_parents(parent);
    } else if (it->second.type != EntryType::directory) {
      refuse(entry.path, "parent is a " + std::string(entry_type_name(it->second.type)) + ", not a directory");
    }
  }
  if (entries_.contains(entry.path)) {
    if (!options_.replace_existing) refuse(entry.path, "appears twice");
    const Entry& old = entries_.at(entry.path);
    // A directory stays a directory (later metadata wins); anything else is replaced whole.
    if (!(old.type == EntryType::directory && entry.type == EntryType::directory)) remove(entry.path);
  }
  return Parent{dir_fd(parent), std::string(base_of(entry.path))};
}

void TreeWriter::record(const Entry& entry) { entries_[entry.path] = entry; }

void TreeWriter::add_directory(const Entry& entry) {
  Parent p = prepare(entry);
  if (!entries_.contains(entry.path)) check(::mkdirat(p.fd, p.name.c_str(), 0700), "mkdirat", entry.path);
  Entry e = entry;
  e.type = EntryType::directory;
  record(e);
}

void TreeWriter::apply_link_metadata(int parent_fd, const std::string& name, const Entry& entry) {
  check(::fchownat(parent_fd, name.c_str(), entry.uid, entry.gid, AT_SYMLINK_NOFOLLOW), "fchownat", entry.path);
  const struct timespec times[2] = {to_timespec(entry.mtime_ns), to_timespec(entry.mtime_ns)};
  check(::utimensat(parent_fd, name.c_str(), times, AT_SYMLINK_NOFOLLOW), "utimensat", entry.path);
}

void TreeWriter::add_symlink(const Entry& entry) {
  if (entry.link_target.empty() || entry.link_target.find('\0') != std::string::npos) {
    refuse(entry.path, "invalid symlink target");
  }
  Parent p = prepare(entry);
  check(::symlinkat(entry.link_target.c_str(), p.fd, p.name.c_str()), "symlinkat", entry.path);
  apply_link_metadata(p.fd, p.name, entry);
  Entry e = entry;
  e.type = EntryType::symlink;
  e.mode = 0777;
  record(e);
}

void TreeWriter::add_fifo(const Entry& entry) {
  Parent p = prepare(entry);
  check(::mknodat(p.fd, p.name.c_str(), S_IFIFO | 0600, 0), "mknodat", entry.path);
  apply_link_metadata(p.fd, p.name, entry);
  // The new fifo is ours and nothing else writes this tree, so the name still means it.
  check(::fchmodat(p.fd, p.name.c_str(), entry.mode, 0), "fchmodat", entry.path);
  Entry e = entry;
  e.type = EntryType::fifo;
  record(e);
}

UniqueFd TreeWriter::create_file(const Entry& entry) {
  Parent p = prepare(entry);
  UniqueFd fd(::openat(p.fd, p.name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw_errno("create", entry.path);
  Entry placeholder = entry;
  placeholder.type = EntryType::regular;
  record(placeholder);
  return fd;
}

void TreeWriter::reserve_file(const Entry& entry) {
  if (options_.replace_existing) throw Error(ErrorKind::internal, "reserve_file replaces nothing");
  prepare(entry);
  Entry placeholder = entry;
  placeholder.type = EntryType::regular;
  record(placeholder);
}

UniqueFd TreeWriter::create_reserved(int root_fd, const std::string& path,
                                     std::unordered_map<std::string, UniqueFd>& parent_fds) {
  const std::string dir(parent_of(path));
  int parent = root_fd;
  if (!dir.empty()) {
    auto it = parent_fds.find(dir);
    if (it == parent_fds.end()) {
      if (parent_fds.size() >= kMaxCachedDirs) parent_fds.clear();
      UniqueFd fd(open_beneath(root_fd, dir, O_PATH | O_DIRECTORY));
      if (!fd) throw_errno("open", dir);
      it = parent_fds.emplace(dir, std::move(fd)).first;
    }
    parent = it->second.get();
  }
  const std::string name(base_of(path));
  UniqueFd fd(::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw_errno("create", path);
  return fd;
}

void TreeWriter::finish_file(int fd, const Entry& entry) {
  // chown before chmod: changing the owner clears setuid and setgid bits.
  check(::fchown(fd, entry.uid, entry.gid), "fchown", entry.path);
  check(::fchmod(fd, entry.mode), "fchmod", entry.path);
  const struct timespec times[2] = {to_timespec(entry.mtime_ns), to_timespec(entry.mtime_ns)};
  check(::futimens(fd, times), "futimens", entry.path);
  Entry e = entry;
  e.type = EntryType::regular;
  record(e);
}

void TreeWriter::add_hardlink(const Entry& entry) {
  if (!is_valid_context_path(entry.hardlink_to)) refuse(entry.path, "invalid hard link target");
  auto target = entries_.find(entry.hardlink_to);
  if (target == entries_.end() || target->second.type == EntryType::directory) {
    refuse(entry.path, "hard link target \"" + entry.hardlink_to.substr(0, 256) + "\" is not an earlier file");
  }
  const Entry source = target->second;
  if (entry.hardlink_to == entry.path) return;  // a tar entry linking to itself changes nothing
  Parent p = prepare(entry);
  const std::string target_name(base_of(source.path));
  const int target_dir = dir_fd(parent_of(source.path));
  check(::linkat(target_dir, target_name.c_str(), p.fd, p.name.c_str(), 0), "linkat", entry.path);
  Entry e = source;  // one inode: the same metadata and content
  e.path = entry.path;
  e.hardlink_to = source.hardlink_to.empty() ? source.path : source.hardlink_to;
  record(e);
}

int TreeWriter::source_dir_fd(int from_root, std::string_view dir) {
  if (source_root_ != from_root) {
    source_dir_fds_.clear();
    source_root_ = from_root;
  }
  const std::string key(dir);
  auto it = source_dir_fds_.find(key);
  if (it != source_dir_fds_.end()) return it->second.get();
  UniqueFd fd(open_beneath(from_root, dir, O_PATH | O_DIRECTORY));
  if (!fd) throw_errno("open previous context", dir);
  return source_dir_fds_.emplace(key, std::move(fd)).first->second.get();
}

TreeWriter::Reused TreeWriter::reuse_file(int from_root, std::string_view from_path, const Entry& entry,
                                           bool allow_link) {
  const std::string from_name(base_of(from_path));
  if (allow_link) {
    Parent p = prepare(entry);
    const int from_dir = source_dir_fd(from_root, parent_of(from_path));
    if (::linkat(from_dir, from_name.c_str(), p.fd, p.name.c_str(), 0) == 0) {
      Entry e = entry;
      e.type = EntryType::regular;
      record(e);
      return Reused{true, 0};
    }
    // Another file system, or the inode has as many links as it can take: copy instead.
    if (errno != EXDEV && errno != EMLINK && errno != EPERM) throw_errno("linkat", entry.path);
  }
  UniqueFd to = create_file(entry);
  UniqueFd from(::openat(source_dir_fd(from_root, parent_of(from_path)), from_name.c_str(),
                         O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!from) throw_errno("open previous context", from_path);
  const std::uint64_t copied = copy_contents(from.get(), to.get(), entry.path);
  finish_file(to.get(), entry);
  return Reused{false, copied};
}

std::uint64_t TreeWriter::copy_file(int from_fd, const Entry& entry) {
  UniqueFd to = create_file(entry);
  const std::uint64_t copied = copy_contents(from_fd, to.get(), entry.path);
  finish_file(to.get(), entry);
  return copied;
}

void TreeWriter::adopt(const Manifest& manifest) {
  if (!entries_.empty() || finished_) throw Error(ErrorKind::internal, "context tree adopted after it was written");
  entries_.reserve(manifest.size());
  for (const Entry& e : manifest.entries()) record(e);
}

void TreeWriter::keep(const Entry& entry) {
  auto it = entries_.find(entry.path);
  if (it == entries_.end() || it->second.type != entry.type) {
    throw Error(ErrorKind::internal, "\"" + entry.path.substr(0, 256) + "\" kept but not in the tree");
  }
  it->second = entry;
}

void TreeWriter::remove_one(std::string_view path, std::vector<std::string>& removed, bool below_done) {
  trim_cache();
  const std::string key(path);
  auto it = entries_.find(key);
  if (it == entries_.end()) return;
  const bool is_dir = it->second.type == EntryType::directory;
  remove_below(dir_fd(parent_of(path)), std::string(base_of(path)), path);
  removed.push_back(key);
  entries_.erase(it);
  if (is_dir && !below_done) {
    const std::string prefix = key + "/";
    for (auto i = entries_.begin(); i != entries_.end();) {
      if (i->first.starts_with(prefix)) {
        removed.push_back(i->first);
        i = entries_.erase(i);
      } else {
        ++i;
      }
    }
  }
  if (is_dir) dir_fds_.clear();
}

void TreeWriter::remove(std::string_view path) {
  std::vector<std::string> removed;
  remove_one(path, removed, false);
  repoint_hardlinks(removed);
}

void TreeWriter::remove(const std::vector<std::string>& paths) {
  // Deepest first, so a directory is empty (or already gone) when its turn comes.
  std::vector<std::string> sorted = paths;
  std::sort(sorted.begin(), sorted.end(), [](const std::string& a, const std::string& b) { return path_less(b, a); });
  const std::unordered_set<std::string> listed(paths.begin(), paths.end());
  std::vector<std::string> removed;
  for (const std::string& p : sorted) {
    // When everything below a directory is listed too, it is gone already: no need to look.
    remove_one(p, removed, true);
  }
  // Entries below a listed directory that were not listed themselves.
  std::vector<std::string> rest;
  for (const auto& [path, e] : entries_) {
    for (std::string_view dir = parent_of(path); !dir.empty(); dir = parent_of(dir)) {
      if (listed.contains(std::string(dir))) {
        rest.push_back(path);
        break;
      }
    }
  }
  for (const std::string& r : rest) entries_.erase(r);
  removed.insert(removed.end(), rest.begin(), rest.end());
  repoint_hardlinks(removed);
}

void TreeWriter::finish() {
  if (finished_) return;
  std::vector<const Entry*> dirs;
  for (const auto& [path, entry] : entries_) {
    if (entry.type == EntryType::directory) dirs.push_back(&entry);
  }
  // Deepest first, each directory after everything below it.
  std::sort(dirs.begin(), dirs.end(), [](const Entry* a, const Entry* b) { return path_less(b->path, a->path); });
  for (const Entry* d : dirs) {
    trim_cache();
    const int parent = dir_fd(parent_of(d->path));
    const std::string name(base_of(d->path));
    check(::fchownat(parent, name.c_str(), d->uid, d->gid, AT_SYMLINK_NOFOLLOW), "fchownat", d->path);
    check(::fchmodat(parent, name.c_str(), d->mode, 0), "fchmodat", d->path);
    const struct timespec times[2] = {to_timespec(d->mtime_ns), to_timespec(d->mtime_ns)};
    check(::utimensat(parent, name.c_str(), times, AT_SYMLINK_NOFOLLOW), "utimensat", d->path);
  }
  finished_ = true;
  dir_fds_.clear();
  source_dir_fds_.clear();
}

Manifest TreeWriter::manifest() const {
  std::vector<Entry> all;
  all.reserve(entries_.size());
  for (const auto& [path, entry] : entries_) all.push_back(entry);
  return Manifest(std::move(all));
}

}  // namespace kbuild::context
