#include "engine/context/follow_links.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "common/error.h"
#include "common/go_match.h"
#include "common/go_path.h"
#include "common/unique_fd.h"
#include "engine/context/fs.h"
#include "engine/context/path_filter.h"

namespace kbuild::context {
namespace {

std::string go_dir(std::string_view p) {
  const auto slash = p.rfind('/');
  return go_clean_path(slash == std::string_view::npos ? std::string_view(".") : p.substr(0, slash + 1));
}

std::string go_join(std::string_view a, std::string_view b) {
  if (a.empty()) return go_clean_path(b);
  if (b.empty()) return go_clean_path(a);
  return go_clean_path(std::string(a) + "/" + std::string(b));
}

class SymlinkResolver {
 public:
  explicit SymlinkResolver(int root_fd) : root_fd_(root_fd) {}

  void append(std::string p, int depth) {
    if (depth > 255) throw Error(ErrorKind::user, "failed to follow " + p + ": too many levels of symbolic links");
    p = go_join(".", p);
    std::string current = ".";
    while (true) {
      const auto slash = p.find('/');
      current = go_join(current, p.substr(0, slash));
      const std::optional<std::vector<std::string>> targets = read_symlink(current, true);
      p = slash == std::string::npos ? std::string() : p.substr(slash + 1);
      if ((p.empty() || targets) && resolved_.contains(current)) return;
      if (targets) {
        resolved_.insert(current);
        for (const std::string& target : *targets) append(go_join(target, p), depth + 1);
        return;
      }
      if (p.empty()) {
        resolved_.insert(current);
        return;
      }
    }
  }

  const std::set<std::string>& resolved() const { return resolved_; }

 private:
  // Where the symlink at `p` points (a wildcard name: every matching symlink), or nullopt when
  // `p` is not a symlink or does not exist.
  std::optional<std::vector<std::string>> read_symlink(const std::string& p, bool allow_wildcard) {
    if (p == "." || p == "/") return std::nullopt;
    const std::string dir = go_dir(p);
    const std::string base(base_of(p));
    UniqueFd parent(open_beneath(root_fd_, dir == "." ? "" : dir, O_PATH | O_DIRECTORY));
    if (!parent) {
      if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP || errno == EXDEV || errno == EINVAL) return std::nullopt;
      throw Error(ErrorKind::permission, "lstat " + dir + ": " + errno_text(errno));
    }
    if (allow_wildcard && contains_wildcards(base)) {
      std::vector<std::string> names;
      if (!read_dir_names(parent.get(), names)) {
        if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
        throw Error(ErrorKind::permission, "readdir " + dir + ": " + errno_text(errno));
      }
      std::sort(names.begin(), names.end());
      std::optional<std::vector<std::string>> out;
      for (const std::string& name : names) {
        if (!go_match(base, name)) continue;
        auto targets = read_symlink(dir == "." ? name : dir + "/" + name, false);
        if (targets) {
          if (!out) out.emplace();
          out->insert(out->end(), targets->begin(), targets->end());
        }
      }
      return out;
    }
    struct stat st {};
    if (::fstatat(parent.get(), base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
      throw Error(ErrorKind::permission, "lstat " + p + ": " + errno_text(errno));
    }
    if (!S_ISLNK(st.st_mode)) return std::nullopt;
    char buffer[4097];
    const ssize_t n = ::readlinkat(parent.get(), base.c_str(), buffer, sizeof(buffer));
    if (n < 0) throw Error(ErrorKind::permission, "readlink " + p + ": " + errno_text(errno));
    const std::string link = go_clean_path(std::string_view(buffer, static_cast<std::size_t>(n)));
    if (!link.empty() && link[0] == '/') return std::vector<std::string>{link};
    return std::vector<std::string>{go_join("/", go_join(go_dir(p), link))};
  }

  int root_fd_;
  std::set<std::string> resolved_;
};

}  // namespace

std::optional<std::vector<std::string>> follow_links(int root_fd, const std::vector<std::string>& paths) {
  SymlinkResolver resolver(root_fd);
  for (const std::string& p : paths) resolver.append(p, 0);
  // dedupePaths over the sorted set: "." means everything, and a path below another adds nothing.
  std::vector<std::string> out;
  std::string last;
  for (const std::string& s : resolver.resolved()) {
    if (s == ".") return std::nullopt;
    if (!out.empty() && s.starts_with(last + "/")) continue;
    out.push_back(s);
    last = s;
  }
  return out;
}

std::vector<std::string> include_patterns_for(int root_fd, std::vector<std::string> include_patterns,
                                              const std::vector<std::string>& follow_paths) {
  if (follow_paths.empty()) return include_patterns;
  const std::optional<std::vector<std::string>> targets = follow_links(root_fd, follow_paths);
  if (!targets) return include_patterns;
  include_patterns.insert(include_patterns.end(), targets->begin(), targets->end());
  // fsutil's dedupePaths, which it applies to this list unsorted: "." means no filter at all.
  std::vector<std::string> out;
  std::string last;
  for (const std::string& s : include_patterns) {
    if (s == ".") return {};
    if (s.starts_with(last + "/")) continue;
    out.push_back(s);
    last = s;
  }
  return out;
}

}  // namespace kbuild::context
