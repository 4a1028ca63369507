// COPY/ADD execution. The pieces mirror BuildKit, whose behaviour this must reproduce:
//  - plan_sources: dockerfile2llb's dispatchCopy (source normalization, --parents pivots) and
//    the cache checksum that fails first for a missing source;
//  - Copier::copy_source: fsutil copy.Copy with CopyDirContents and prepareTargetDir;
//  - Copier::copy_entry / copy_directory: fsutil's copier.copy / copyDirectory, including its
//    include/exclude matching and its delayed creation of parent directories;
//  - unpack_source: solver/llbsolver/file/unpack.go.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/go_path.h"
#include "common/error.h"
#include "common/go_match.h"
#include "common/layer_xattrs.h"
#include "common/syscall.h"
#include "engine/fileops/file_data.h"
#include "engine/fileops/fileops.h"
#include "engine/fileops/root_path.h"
#include "engine/fileops/tar_extract.h"
#include "engine/fileops/worker_pool.h"
#include "engine/patterns/dockerignore.h"

namespace kbuild::fileops {
namespace {

using patterns::IgnoreMatcher;
using patterns::IgnorePattern;

bool ends_with(std::string_view s, std::string_view suffix) { return s.ends_with(suffix); }

std::string base_name(const std::string& path) {
  const std::size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// ---------------------------------------------------------------------------------------------
// Patterns: --exclude and the include pattern of --parents, as patternmatcher.New reads them.

std::string_view trim_space(std::string_view s) {
  const auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

std::optional<IgnoreMatcher> make_matcher(const std::vector<std::string>& raw, bool include) {
  std::vector<IgnorePattern> patterns;
  for (const std::string& text : raw) {
    const std::string_view trimmed = trim_space(text);
    if (trimmed.empty()) continue;
    IgnorePattern pattern;
    pattern.pattern = go_clean_path(trimmed);
    if (pattern.pattern[0] == '!') {
      pattern.exclusion = true;
      pattern.pattern.erase(0, 1);
    }
    patterns.push_back(std::move(pattern));
  }
  try {
    return IgnoreMatcher(std::move(patterns));
  } catch (const Error& e) {
    if (!include) throw;
    // The same check, reported for the include patterns fsutil was given.
    std::string message = e.what();
    if (const std::size_t at = message.find("excludepatterns"); at != std::string::npos) {
      message.replace(at, std::strlen("excludepatterns"), "includepatterns");
    }
    throw Error(e.kind(), message);
  }
}

// An include pattern split into components when its regexp can only match paths with exactly
// that many components, each matching its glob (no "**", no bracket, escape or '^' that the
// regexp translation could make span a '/'): the copy may then skip directories no component
// prefix of which matches. Empty when the pattern cannot be used that way.
std::optional<std::vector<std::string>> prunable_components(const IgnorePattern& pattern) {
  if (pattern.exclusion) return std::nullopt;
  const std::string& p = pattern.pattern;
  if (p.find("**") != std::string::npos || p.find_first_of("[]\\^") != std::string::npos) return std::nullopt;
  if (p.empty() || p[0] == '/') return std::nullopt;
  return split_path(p);
}

struct IncludeRules {
  IgnoreMatcher matcher;
  // One entry per pattern when all can prune; nullopt when any cannot.
  std::optional<std::vector<std::vector<std::string>>> components;

  // Whether something below the directory `rel` (not itself included) could match.
  bool may_match_below(const std::string& rel) const {
    if (!components) return true;
    const std::vector<std::string> dir = split_path(rel);
    for (const std::vector<std::string>& parts : *components) {
      if (parts.size() <= dir.size()) continue;
      bool all = true;
      for (std::size_t i = 0; i < dir.size() && all; ++i) all = go_match(parts[i], dir[i]);
      if (all) return true;
    }
    return false;
  }
};

std::shared_ptr<const IncludeRules> make_include_rules(const std::string& pattern) {
  std::optional<IgnoreMatcher> matcher = make_matcher({pattern}, true);
  std::optional<std::vector<std::vector<std::string>>> components(std::in_place);
  for (const IgnorePattern& p : matcher->patterns()) {
    std::optional<std::vector<std::string>> parts = prunable_components(p);
    if (!parts) {
      components.reset();
      break;
    }
    components->push_back(std::move(*parts));
  }
  return std::make_shared<const IncludeRules>(IncludeRules{std::move(*matcher), std::move(components)});
}

// ---------------------------------------------------------------------------------------------
// Sources.

bool is_url(std::string_view source) { return source.starts_with("http://") || source.starts_with("https://"); }

// The forms dfgitutil.ParseGitRef takes for a remote that cannot be a local path.
bool is_git_ref(std::string_view source) {
  if (source.starts_with("git://") || source.starts_with("ssh://")) return true;
  if (source.starts_with("git@")) {
    const std::size_t colon = source.find(':');
    const std::size_t slash = source.find('/');
    return colon != std::string_view::npos && (slash == std::string_view::npos || colon < slash);
  }
  return false;
}

[[noreturn]] void throw_not_found(const std::string& path) {
  throw Error(ErrorKind::not_found, "\"" + path + "\": not found");
}

// One source to copy after wildcard resolution: a path in the source root (cleaned, absolute).
struct PlannedSource {
  std::string path;
  std::shared_ptr<const IncludeRules> include;  // --parents
};

// fsutil's resolveWildcards: a walk below the non-wildcard prefix (symlinked directories are not
// entered), in lexical order, a directory that matches is not descended into.
class WildcardWalk {
 public:
  WildcardWalk(std::string pattern, std::string base, std::vector<std::string>& out)
      : pattern_(std::move(pattern)), base_(std::move(base)), out_(out) {
    // '*' and '?' never match '/': without a bracket expression a match has exactly as many
    // components as the pattern, and deeper directories need not be read.
    if (pattern_.find('[') == std::string::npos) {
      max_slashes_ = static_cast<std::size_t>(std::count(pattern_.begin(), pattern_.end(), '/'));
    }
  }

  void walk(int dirfd, const std::string& rel, std::size_t slashes) {
    for (const DirEntry& entry : list_directory(dirfd, rel.empty() ? base_ : child_path(base_, rel))) {
      const std::string& name = entry.name;
      const std::string path = rel.empty() ? name : rel + "/" + name;
      if (go_match(pattern_, path)) {
        out_.push_back(child_path(base_, path));
        continue;
      }
      if (max_slashes_ && slashes >= *max_slashes_) continue;
      if (entry.type != DT_DIR && entry.type != DT_UNKNOWN) continue;
      const auto st = lstat_at(dirfd, name, child_path(base_, path));
      if (!st || !S_ISDIR(st->st_mode)) continue;
      UniqueFd child(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!child) throw_path_error("open", child_path(base_, path));
      walk(child.get(), path, slashes + 1);
    }
  }

 private:
  std::string pattern_;
  std::string base_;
  std::vector<std::string>& out_;
  std::optional<std::size_t> max_slashes_;
};

std::vector<std::string> resolve_wildcards(int root_fd, const std::string& path, bool follow) {
  const WildcardSplit split = split_wildcards(path);
  if (split.pattern.empty()) return {split.prefix.empty() ? path : split.prefix};
  const RootedPath base = resolve_in_root(root_fd, split.prefix, follow);
  // filepath.Walk lstats its root first.
  if (!base.exists()) throw Error(ErrorKind::not_found, "lstat " + base.str() + ": no such file or directory");
  std::vector<std::string> matches;
  UniqueFd dir;
  if (base.parts.empty()) {
    dir = open_dir_parts(root_fd, base.parts, 0);
  } else {
    UniqueFd parent = open_dir_parts(root_fd, base.parts, base.parts.size() - 1);
    const auto st = lstat_at(parent.get(), base.parts.back(), base.str());
    if (!st || !S_ISDIR(st->st_mode)) return matches;  // a file or a symlink: nothing below
    dir.reset(::openat(parent.get(), base.parts.back().c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_path_error("open", base.str());
  }
  WildcardWalk(split.pattern, base.str(), matches).walk(dir.get(), "", 0);
  return matches;
}

std::vector<PlannedSource> plan_sources(int source_root, const CopyRequest& request) {
  std::vector<PlannedSource> planned;
  for (const std::string& raw : request.sources) {
    if (is_url(raw)) {
      if (request.instruction != "ADD") throw Error(ErrorKind::user, "source can't be a URL for COPY");
      throw Error(ErrorKind::user, "ADD from a URL is not supported yet");
    }
    if (is_git_ref(raw)) {
      if (request.instruction != "ADD") throw Error(ErrorKind::user, "source can't be a git ref for COPY");
      throw Error(ErrorKind::user, "ADD from a Git repository is not supported yet");
    }
    std::string source = raw;
    std::shared_ptr<const IncludeRules> include;
    if (request.parents) {
      // "parent/./pattern": only what follows the pivot keeps its directories.
      std::string parent = "/";
      std::string pattern = source;
      if (const std::size_t pivot = source.find("/./"); pivot != std::string::npos) {
        parent = source.substr(0, pivot);
        pattern = source.substr(pivot + 3);
      }
      pattern = go_clean_path("/" + pattern);
      const std::string include_pattern = pattern.substr(1);
      include = make_include_rules(include_pattern);
      if (!contains_wildcards(parent) && !contains_wildcards(pattern)) {
        // RequiredPaths: the cache checksum fails for a missing one.
        const std::string required = go_clean_path("/" + parent + "/" + pattern);
        if (!resolve_in_root(source_root, required, false).exists()) throw_not_found(required);
      }
      source = parent;
    }
    const std::string path = go_clean_path("/" + source);
    if (!contains_wildcards(path)) {
      if (!resolve_in_root(source_root, path, request.follow_symlinks).exists()) throw_not_found(path);
      planned.push_back({path, include});
      continue;
    }
    for (std::string& match : resolve_wildcards(source_root, path, request.follow_symlinks)) {
      // A match that is a dangling symlink fails the checksum as a missing file.
      if (!resolve_in_root(source_root, match, request.follow_symlinks).exists()) throw_not_found(match);
      planned.push_back({std::move(match), include});
    }
  }
  return planned;
}

// ---------------------------------------------------------------------------------------------
// The tree copy.

struct InodeKey {
  dev_t dev;
  ino_t ino;
  bool operator==(const InodeKey&) const = default;
};
struct InodeHash {
  std::size_t operator()(const InodeKey& k) const { return std::hash<uint64_t>()(k.ino * 31 + k.dev); }
};

// A destination directory whose metadata waits for its last file: the walk holds one count
// while it is inside the directory, each queued file one more; whoever drops the last count
// applies the metadata (times must come after the last entry is created).
struct DirDone {
  std::atomic<int> pending{1};
  std::function<void()> finish;
};

void release(const std::shared_ptr<DirDone>& done) {
  if (done->pending.fetch_sub(1, std::memory_order_acq_rel) == 1 && done->finish) done->finish();
}

using SharedFd = std::shared_ptr<UniqueFd>;

SharedFd share(UniqueFd fd) { return std::make_shared<UniqueFd>(std::move(fd)); }

dev_t device_of(int fd, const std::string& path) {
  struct stat st;
  check_path(::fstat(fd, &st), "stat", path);
  return st.st_dev;
}

class Copier {
 public:
  Copier(int source_root, int dest_root, const CopyRequest& request, CopyStats& stats)
      : source_root_(source_root), dest_root_(dest_root), request_(request), stats_(stats) {
    if (!request.excludes.empty()) excludes_ = make_matcher(request.excludes, false);
    dir_mode_ = request.chmod ? request.chmod->created_dir_mode() : 0755;
  }

  // fsutil's Copy for one source: makes the destination's parents, decides whether the source
  // goes into an existing directory, and copies it.
  void copy_source(const PlannedSource& source, const std::string& dest) {
    include_ = source.include.get();
    hardlinks_.clear();

    // The directory part of the destination, or all of it when it ends in "/" or "/.".
    const bool dest_is_dir = ends_with(dest, "/") || ends_with(dest, "/.");
    const std::string ensure = dest_is_dir ? dest : dest.substr(0, dest.rfind('/') + 1);
    const RootedPath ensured = resolve_in_root(dest_root_, ensure, true);
    stats_.directories += make_dirs(dest_root_, ensured, ensured.parts.size(), dir_mode_, request_.owner).created;

    const RootedPath dst = resolve_in_root(dest_root_, go_clean_path(dest), true);
    const RootedPath src = resolve_in_root(source_root_, source.path, request_.follow_symlinks);
    if (!src.exists()) throw_not_found(source.path);

    UniqueFd src_parent = open_parent(source_root_, src.parts);
    const std::string src_name = src.parts.empty() ? "." : src.parts.back();
    const struct stat src_st = stat_source(src_parent.get(), src_name, src.str());

    std::optional<struct stat> dst_st;
    if (dst.exists()) {
      UniqueFd parent = open_parent(dest_root_, dst.parts);
      dst_st = lstat_at(parent.get(), dst.parts.empty() ? "." : dst.parts.back(), dst.str());
    }
    std::vector<std::string> target = dst.parts;
    // A non-directory copied onto an existing directory goes inside it, under its own name.
    if (!S_ISDIR(src_st.st_mode) && dst_st && S_ISDIR(dst_st->st_mode)) target.push_back(base_name(source.path));
    // The directories above the target (all of it for a directory's contents going to a new
    // path) are made with --chmod's octal mode or 0755, owned by --chown.
    std::size_t make = target.empty() ? 0 : target.size() - 1;
    if (S_ISDIR(src_st.st_mode) && !dst_st) make = target.size();
    const RootedPath to_make{target, std::min(dst.existing, target.size())};
    MadeDirs made = make_dirs(dest_root_, to_make, make, dir_mode_, request_.owner);
    stats_.directories += made.created;
    top_fresh_ = made.created > 0 && make == target.size();
    // Directories this copy made are never a source (should both roots be one tree).
    if (top_fresh_) remember_created(made.fd.get());

    UniqueFd dst_parent = target.empty() ? open_dir_parts(dest_root_, target, 0) : open_parent(dest_root_, target);
    top_ = Top{share(std::move(dst_parent)), 0};
    top_.dev = device_of(top_.dst->get(), join_parts(target));
    const std::string dst_name = target.empty() ? "." : target.back();
    Entry entry{src_parent.get(), src_name, DT_UNKNOWN, "", src.str(), dst_name, join_parts(target)};
    copy_entry(entry, &src_st, false);
    if (pool_) pool_->drain();
    top_ = Top{};
    stats_.files += files_.exchange(0);
    stats_.bytes += bytes_.exchange(0);
  }

 private:
  // One entry to copy: where it is in the source, what the walk knows of its type, the path
  // the patterns see ("" for the copied source itself), and where it goes.
  struct Entry {
    int src_dir;
    std::string name;
    unsigned char type;
    std::string rel;
    std::string src_path;
    std::string dst_name;
    std::string dst_path;
  };

  // A directory on the way down, as fsutil's parentDir: made when the walk reaches it if it is
  // included, else only when something below it is.
  struct Frame {
    SharedFd src;
    struct stat st;
    std::string src_path;
    std::string dst_name;
    std::string dst_path;
    SharedFd dst;
    dev_t dst_dev = 0;
    std::shared_ptr<DirDone> done;
    bool copied = false;
    bool fresh = false;  // made by this copy: nothing in it but what the copy put there
  };

  struct Top {
    SharedFd dst;  // the directory the copied source goes into
    dev_t dev = 0;
  };

  static UniqueFd open_parent(int root, const std::vector<std::string>& parts) {
    return open_dir_parts(root, parts, parts.empty() ? 0 : parts.size() - 1);
  }

  struct stat stat_source(int dir, const std::string& name, const std::string& path) const {
    struct stat st;
    if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      const int error = errno;
      throw Error(error_kind_for_errno(error), "failed to stat " + path + ": " + go_errno_text(error));
    }
    if (request_.source_owner_is_root) st.st_uid = st.st_gid = 0;
    return st;
  }

  void remember_created(int fd) {
    struct stat st;
    if (::fstat(fd, &st) == 0) created_dirs_.insert(InodeKey{st.st_dev, st.st_ino});
  }

  int dst_parent_fd() const {
    if (frames_.empty()) return top_.dst->get();
    return frames_.back().dst ? frames_.back().dst->get() : -1;
  }
  dev_t dst_parent_dev() const { return frames_.empty() ? top_.dev : frames_.back().dst_dev; }
  bool parent_is_fresh() const { return !frames_.empty() && frames_.back().fresh; }

  // Opens a source file the walk saw as regular, for its contents and its stat in two calls.
  // An entry that is not what getdents said is left to the lstat path (empty fd).
  UniqueFd open_source_file(const Entry& entry, struct stat& st) {
    // O_NONBLOCK: should the entry have become a fifo, opening it must not hang.
    constexpr int kFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    UniqueFd fd(::openat(entry.src_dir, entry.name.c_str(), kFlags | O_NOATIME));
    if (!fd && errno == EPERM) fd.reset(::openat(entry.src_dir, entry.name.c_str(), kFlags));
    if (!fd) {
      if (errno == ELOOP || errno == ENOENT || errno == ENXIO) return fd;
      throw_path_error("failed to open source", entry.src_path);
    }
    check_path(::fstat(fd.get(), &st), "stat", entry.src_path);
    if (!S_ISREG(st.st_mode)) return UniqueFd();
    if (request_.source_owner_is_root) st.st_uid = st.st_gid = 0;
    return fd;
  }

  // copier.copy. `overwrite` is false only for the copied source itself.
  void copy_entry(const Entry& entry, const struct stat* known, bool overwrite) {
    bool include = true;
    bool excluded = false;
    if (!entry.rel.empty()) {
      if (include_) include = include_->matcher.ignored(entry.rel);
      if (excludes_ && excludes_->ignored(entry.rel)) {
        include = false;
        excluded = true;
      }
      // Nothing below an excluded path can come back without include patterns or exclusions.
      if (!include && !include_ && !excludes_->has_exclusions()) return;
      if (!include && entry.type != DT_DIR && entry.type != DT_UNKNOWN) return;
    }
    struct stat st;
    UniqueFd src_file;
    if (known) {
      st = *known;
    } else {
      if (entry.type == DT_REG) src_file = open_source_file(entry, st);
      if (!src_file) st = stat_source(entry.src_dir, entry.name, entry.src_path);
    }
    if (!include && !S_ISDIR(st.st_mode)) return;

    // fsutil lstats the target before createParentDirs; making the parents cannot change it,
    // and a parent still to be made (or that this copy just made) cannot hold it.
    if (include) create_parent_dirs(overwrite);
    const int ddir = dst_parent_fd();
    std::optional<struct stat> target;
    if (ddir >= 0 && !parent_is_fresh()) target = lstat_at(ddir, entry.dst_name, entry.dst_path);

    if (!S_ISDIR(st.st_mode) && target) {
      // ensureEmptyFileTarget
      if (S_ISDIR(target->st_mode)) {
        throw Error(ErrorKind::user, "cannot replace to directory " + entry.dst_path + " with file");
      }
      check_path(::unlinkat(ddir, entry.dst_name.c_str(), 0), "remove", entry.dst_path);
    }

    switch (st.st_mode & S_IFMT) {
      case S_IFDIR:
        copy_directory(entry, st, overwrite, include, excluded, target);
        return;
      case S_IFREG:
        copy_regular(entry, st, std::move(src_file), ddir);
        return;
      case S_IFLNK: {
        const std::string link = read_link(entry, st);
        check_path(::symlinkat(link.c_str(), ddir, entry.dst_name.c_str()), "symlink", entry.dst_path);
        ++stats_.symlinks;
        break;
      }
      default: {
        // copyDevice: mknod with the source's type bits minus S_IFSOCK, so a socket becomes an
        // empty regular file. The same mask turns a block device into a character device in
        // BuildKit (S_IFBLK &^ S_IFSOCK == S_IFCHR); kept for identical results.
        const mode_t mode = st.st_mode & ~static_cast<mode_t>(S_IFSOCK);
        const dev_t dev = (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) ? st.st_rdev : 0;
        check_path(::mknodat(ddir, entry.dst_name.c_str(), mode, dev), "mknod", entry.dst_path);
        ++stats_.special;
        break;
      }
    }
    apply_metadata(st, -1, ddir, entry.dst_name, entry.dst_path, -1);
  }

  // copyDirectoryOnly: makes the directory or checks the existing one. Returns whether it made it.
  bool copy_directory_only(int parent, const std::string& name, const std::string& path, const struct stat& st,
                           bool overwrite, const std::optional<struct stat>& target) {
    if (!target) {
      check_path(::mkdirat(parent, name.c_str(), st.st_mode & 07777), "mkdir", path);
      ++stats_.directories;
      return true;
    }
    if (!S_ISDIR(target->st_mode)) throw Error(ErrorKind::user, "cannot copy to non-directory: " + path);
    if (overwrite) check_path(::fchmodat(parent, name.c_str(), st.st_mode & 07777, 0), "chmod", path);
    return false;
  }

  void open_frame_dst(Frame& frame, int parent) {
    UniqueFd fd(::openat(parent, frame.dst_name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_path_error("open", frame.dst_path);
    frame.dst_dev = device_of(fd.get(), frame.dst_path);
    frame.dst = share(std::move(fd));
  }

  // createParentDirs: before an included entry is written, make the directories above it that
  // were passed over because they were not included themselves.
  void create_parent_dirs(bool overwrite) {
    for (std::size_t i = 0; i < frames_.size(); ++i) {
      Frame& frame = frames_[i];
      if (frame.copied) continue;
      const int parent = i == 0 ? top_.dst->get() : frames_[i - 1].dst->get();
      const bool parent_fresh = i > 0 && frames_[i - 1].fresh;
      const auto target = parent_fresh ? std::nullopt : lstat_at(parent, frame.dst_name, frame.dst_path);
      const bool created = copy_directory_only(parent, frame.dst_name, frame.dst_path, frame.st, overwrite, target);
      open_frame_dst(frame, parent);
      if (created) {
        remember_created(frame.dst->get());
        apply_metadata(frame.st, frame.dst->get(), parent, frame.dst_name, frame.dst_path,
                       frame.src ? frame.src->get() : -1);
      }
      frame.copied = true;
      frame.fresh = created;
    }
  }

  // copyDirectory, and the metadata copier.copy gives the directory once its entries are in:
  // the source's (owner, mode, times) for a directory inside the copy; for the copied source
  // itself only the source's times, unless this made it.
  void copy_directory(const Entry& entry, const struct stat& st, bool overwrite, bool include, bool excluded,
                      const std::optional<struct stat>& target) {
    Frame frame;
    frame.st = st;
    frame.src_path = entry.src_path;
    frame.dst_name = entry.dst_name;
    frame.dst_path = entry.dst_path;
    frame.done = std::make_shared<DirDone>();
    bool created = false;
    if (include) {
      const int parent = dst_parent_fd();
      created = copy_directory_only(parent, entry.dst_name, entry.dst_path, st, overwrite, target);
      open_frame_dst(frame, parent);
      if (created) remember_created(frame.dst->get());
      frame.copied = true;
      frame.fresh = created || (frames_.empty() && top_fresh_);
    }

    const bool descend = !(excluded && !excludes_->has_exclusions()) &&
                         (include || !include_ || include_->may_match_below(entry.rel)) &&
                         !created_dirs_.contains(InodeKey{st.st_dev, st.st_ino});
    if (descend) {
      UniqueFd src(::openat(entry.src_dir, entry.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!src) throw_path_error("failed to read", entry.src_path);
      frame.src = share(std::move(src));
    }
    const std::shared_ptr<DirDone> done = frame.done;
    frames_.push_back(std::move(frame));
    {
      struct Pop {
        std::vector<Frame>& frames;
        ~Pop() { frames.pop_back(); }
      } pop{frames_};
      const std::size_t index = frames_.size() - 1;
      if (descend) {
        const SharedFd src = frames_[index].src;
        for (const DirEntry& child : list_directory(src->get(), entry.src_path)) {
          Entry next{src->get(),
                     child.name,
                     child.type,
                     entry.rel.empty() ? child.name : entry.rel + "/" + child.name,
                     child_path(entry.src_path, child.name),
                     child.name,
                     child_path(entry.dst_path, child.name)};
          copy_entry(next, nullptr, true);
        }
      }
      const Frame& self = frames_[index];
      const SharedFd dst = self.dst;
      const SharedFd src = self.src;
      const int parent = dst_parent_fd_below(index);
      const struct stat dir_st = st;
      const std::string name = entry.dst_name;
      const std::string path = entry.dst_path;
      if (dst && !overwrite && !created && target) {
        done->finish = [dst, dir_st, path] {
          const struct timespec times[2] = {dir_st.st_atim, dir_st.st_mtim};
          check_path(::futimens(dst->get(), times), "utime", path);
        };
      } else if (dst && (overwrite ? include : created)) {
        // `parent` is only named in messages: the metadata goes through the directory's own fd.
        done->finish = [this, dst, src, dir_st, parent, name, path] {
          apply_metadata(dir_st, dst->get(), parent, name, path, src ? src->get() : -1);
        };
      }
    }
    release(done);
  }

  int dst_parent_fd_below(std::size_t index) const {
    if (index == 0) return top_.dst->get();
    return frames_[index - 1].dst ? frames_[index - 1].dst->get() : -1;
  }

  std::string read_link(const Entry& entry, const struct stat& st) {
    std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
    for (;;) {
      const ssize_t n = ::readlinkat(entry.src_dir, entry.name.c_str(), target.data(), target.size());
      if (n < 0) {
        const int error = errno;
        throw Error(error_kind_for_errno(error), "failed to read link: " + entry.src_path + ": " + go_errno_text(error));
      }
      if (static_cast<std::size_t>(n) < target.size()) {
        target.resize(static_cast<std::size_t>(n));
        return target;
      }
      target.resize(target.size() * 2);
    }
  }

  void copy_regular(const Entry& entry, const struct stat& st, UniqueFd src, int ddir) {
    // Hard links inside one copied source stay hard links (fsutil's inode map). They are done
    // here, in order, so the first copy exists before the links to it.
    const bool linked = st.st_nlink > 1;
    if (linked) {
      const InodeKey key{st.st_dev, st.st_ino};
      const auto found = hardlinks_.find(key);
      if (found != hardlinks_.end()) {
        link_to(found->second, ddir, entry.dst_name, entry.dst_path);
        apply_metadata(st, -1, ddir, entry.dst_name, entry.dst_path, -1);
        return;
      }
      hardlinks_.emplace(key, entry.dst_path);
    }
    if (!src) src = open_checked(entry, st);
    if (frames_.empty() || linked) {
      write_regular(data_, src.get(), st, ddir, dst_parent_dev(), entry.dst_name, entry.dst_path);
      return;
    }
    // A file inside a copied directory: a worker may write it while the walk goes on.
    const Frame& parent = frames_.back();
    const std::shared_ptr<DirDone> done = parent.done;
    done->pending.fetch_add(1, std::memory_order_relaxed);
    Job job{share(std::move(src)), parent.dst, parent.dst_dev, st, entry.dst_name, entry.dst_path, done};
    if (!pool_ && ++queued_files_ > kFilesBeforeWorkers) start_workers();
    if (!pool_) {
      run(job, data_);
      return;
    }
    pool_->submit([this, job](FileDataCopier& data) { run(job, data); });
  }

  // A regular file for a worker: everything it needs, kept open until it has run.
  struct Job {
    SharedFd src;
    SharedFd dst_dir;
    dev_t dst_dev;
    struct stat st;
    std::string dst_name;
    std::string dst_path;
    std::shared_ptr<DirDone> done;
  };

  void run(const Job& job, FileDataCopier& data) {
    write_regular(data, job.src->get(), job.st, job.dst_dir->get(), job.dst_dev, job.dst_name, job.dst_path);
    release(job.done);
  }

  void start_workers() {
    const unsigned cores = std::thread::hardware_concurrency();
    const unsigned threads = std::clamp(cores, 2u, 8u);
    pool_ = std::make_unique<WorkerPool>(threads);
  }

  UniqueFd open_checked(const Entry& entry, const struct stat& st) {
    constexpr int kFlags = O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC;
    UniqueFd fd(::openat(entry.src_dir, entry.name.c_str(), kFlags | O_NOATIME));
    if (!fd && errno == EPERM) fd.reset(::openat(entry.src_dir, entry.name.c_str(), kFlags));
    if (!fd) throw_path_error("failed to open source", entry.src_path);
    struct stat now;
    check_path(::fstat(fd.get(), &now), "stat", entry.src_path);
    if (!S_ISREG(now.st_mode) || now.st_ino != st.st_ino || now.st_dev != st.st_dev) {
      throw Error(ErrorKind::user, "failed to copy files: " + entry.src_path + " changed during the copy");
    }
    return fd;
  }

  // Creates the file, copies its bytes and metadata. Runs on the walk's thread or a worker's:
  // it touches nothing shared but the counters.
  void write_regular(FileDataCopier& data, int src, const struct stat& st, int ddir, dev_t dst_dev,
                     const std::string& dst_name, const std::string& dst_path) const {
    if (link_unchanged(src, st, ddir, dst_dev, dst_name)) {
      bytes_ += static_cast<uint64_t>(st.st_size);
      ++files_;
      return;
    }
    UniqueFd dst(::openat(ddir, dst_name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!dst) throw_path_error("failed to open target", dst_path);
    bytes_ += data.copy(src, st.st_dev, dst.get(), dst_dev, static_cast<uint64_t>(st.st_size), dst_path);
    ++files_;
    apply_metadata(st, dst.get(), ddir, dst_name, dst_path, src);
  }

  // The file itself as the copy (see CopyRequest::link_unchanged_files); false to copy instead.
  bool link_unchanged(int src, const struct stat& st, int ddir, dev_t dst_dev, const std::string& dst_name) const {
    if (!request_.link_unchanged_files || request_.chmod || st.st_dev != dst_dev) return false;
    const uint32_t uid = request_.owner ? request_.owner->uid : st.st_uid;
    const uint32_t gid = request_.owner ? request_.owner->gid : st.st_gid;
    // `st` may already say root (source_owner_is_root): the inode's own owner decides.
    struct stat inode;
    if (::fstat(src, &inode) != 0 || uid != inode.st_uid || gid != inode.st_gid) return false;
    if (::flistxattr(src, nullptr, 0) != 0) return false;
    // AT_EMPTY_PATH links the open file itself, whatever its name is now (needs
    // CAP_DAC_READ_SEARCH, which the daemon has); any failure falls back to a copy.
    return ::linkat(src, "", ddir, dst_name.c_str(), AT_EMPTY_PATH) == 0;
  }

  void link_to(const std::string& first, int ddir, const std::string& dst_name, const std::string& dst_path) {
    const std::vector<std::string> parts = split_path(first);
    UniqueFd parent = open_parent(dest_root_, parts);
    if (::linkat(parent.get(), parts.back().c_str(), ddir, dst_name.c_str(), 0) != 0) {
      const int error = errno;
      throw Error(error_kind_for_errno(error), "failed to create hard link: link " + first + " " + dst_path + ": " +
                                                  go_errno_text(error));
    }
    ++stats_.hardlinks;
  }

  // copyFileInfo, then copyXAttrs: owner (--chown or the source's), mode (--chmod applied, not
  // on symlinks), atime and mtime from the source; then extended attributes.
  void apply_metadata(const struct stat& st, int fd, int dir, const std::string& name, const std::string& path,
                      int src_fd) const {
    const uint32_t uid = request_.owner ? request_.owner->uid : st.st_uid;
    const uint32_t gid = request_.owner ? request_.owner->gid : st.st_gid;
    if (fd >= 0) {
      check_path(::fchown(fd, uid, gid), "lchown", path);
    } else {
      check_path(::fchownat(dir, name.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW), "lchown", path);
    }
    if (!S_ISLNK(st.st_mode)) {
      const mode_t mode = request_.chmod ? request_.chmod->apply(st.st_mode) : (st.st_mode & 07777);
      if (fd >= 0) {
        check_path(::fchmod(fd, mode), "chmod", path);
      } else {
        check_path(::fchmodat(dir, name.c_str(), mode, 0), "chmod", path);
      }
    }
    const struct timespec times[2] = {st.st_atim, st.st_mtim};
    if (fd >= 0) {
      check_path(::futimens(fd, times), "utime", path);
    } else {
      check_path(::utimensat(dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW), "utime", path);
    }
    if (fd >= 0 && src_fd >= 0) copy_xattrs(src_fd, fd);
  }

  // Extended attributes through fds, those a layer may carry. BuildKit's handler logs a
  // failure and stops there.
  static void copy_xattrs(int src, int dst) {
    ssize_t size = ::flistxattr(src, nullptr, 0);
    if (size <= 0) return;
    std::string names(static_cast<std::size_t>(size), '\0');
    size = ::flistxattr(src, names.data(), names.size());
    if (size <= 0) return;
    names.resize(static_cast<std::size_t>(size));
    std::string value;
    for (std::size_t at = 0; at < names.size();) {
      const char* key = names.c_str() + at;
      at += std::strlen(key) + 1;
      if (!layer_may_carry_xattr(key)) continue;
      const ssize_t length = ::fgetxattr(src, key, nullptr, 0);
      if (length < 0) return;
      value.resize(static_cast<std::size_t>(length));
      const ssize_t got = ::fgetxattr(src, key, value.data(), value.size());
      if (got < 0) return;
      if (::fsetxattr(dst, key, value.data(), static_cast<std::size_t>(got), 0) != 0) return;
    }
  }

  // Below this many files a copy stays on one thread.
  static constexpr std::size_t kFilesBeforeWorkers = 64;

  int source_root_;
  int dest_root_;
  const CopyRequest& request_;
  CopyStats& stats_;
  std::optional<IgnoreMatcher> excludes_;
  const IncludeRules* include_ = nullptr;
  mode_t dir_mode_ = 0755;
  std::vector<Frame> frames_;
  Top top_;
  bool top_fresh_ = false;  // copy_source just made the directory a directory source goes to
  std::unordered_map<InodeKey, std::string, InodeHash> hardlinks_;
  std::unordered_set<InodeKey, InodeHash> created_dirs_;
  FileDataCopier data_;
  mutable std::atomic<uint64_t> files_{0};
  mutable std::atomic<uint64_t> bytes_{0};
  std::size_t queued_files_ = 0;
  // Last: destroyed first, so no worker outlives what its jobs use.
  std::unique_ptr<WorkerPool> pool_;
};

// unpack.go: a source that is a tar archive is extracted into the destination directory
// (made 0755, owned by --chown) instead of copied. Returns false for anything else.
bool unpack_source(int source_root, int dest_root, const std::string& source, const std::string& dest,
                   const CopyRequest& request, CopyStats& stats) {
  const RootedPath src = resolve_in_root(source_root, source, true);
  if (!src.exists() || src.parts.empty()) return false;
  UniqueFd parent = open_dir_parts(source_root, src.parts, src.parts.size() - 1);
  UniqueFd file(::openat(parent.get(), src.parts.back().c_str(),
                         O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!file) return false;
  struct stat st;
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  Compression compression = Compression::none;
  if (!is_tar_archive(file.get(), &compression)) return false;

  const RootedPath target = resolve_in_root(dest_root, go_clean_path(dest), true);
  MadeDirs made = make_dirs(dest_root, target, target.parts.size(), 0755, request.owner);
  stats.directories += made.created;
  extract_tar(file.get(), compression, made.fd.get(), request.owner, stats);
  return true;
}

}  // namespace

std::string normalize_dest(const std::string& dest, const std::string& workdir) {
  std::string p = dest;
  if (p.empty() || p == ".") p = "./";
  std::string absolute = p;
  if (p[0] != '/') {
    const std::string base = workdir.empty() ? "/" : (workdir[0] == '/' ? workdir : "/" + workdir);
    absolute = base + "/" + p;
  }
  std::string out = go_clean_path(absolute);
  if (ends_with(p, "/")) {
    if (out != "/") out += '/';
  } else if (ends_with(p, "/.")) {
    if (out != "/") out += '/';
    out += '.';
  }
  return out;
}

CopyStats copy_files(int source_root_fd, int dest_root_fd, const CopyRequest& request) {
  CopyStats stats;
  const std::string dest = normalize_dest(request.dest, request.workdir);
  const std::vector<PlannedSource> planned = plan_sources(source_root_fd, request);
  if (request.legacy_builder) {
    if (planned.empty()) throw Error(ErrorKind::user, "no source files were specified");
    if (planned.size() > 1 && !ends_with(request.dest, "/")) {
      throw Error(ErrorKind::user, "When using " + request.instruction +
                                       " with more than one source file, the destination must be a directory and end with a /");
    }
  }
  Copier copier(source_root_fd, dest_root_fd, request, stats);
  for (const PlannedSource& source : planned) {
    if (request.unpack && unpack_source(source_root_fd, dest_root_fd, source.path, dest, request, stats)) continue;
    copier.copy_source(source, dest);
  }
  return stats;
}

}  // namespace kbuild::fileops
