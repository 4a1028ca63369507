#include "engine/context/follow_links.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <set>

#include "common/error.h"
#include "common/unique_fd.h"
#include "engine/context/fs.h"
#include "engine/context/path_filter.h"

namespace kbuild::context {
namespace {

struct BadPattern {};

// utf8.DecodeRuneInString, with U+FFFD for an invalid byte.
std::pair<char32_t, std::size_t> decode_rune(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  if (s.empty()) return {0xFFFD, 0};
  const unsigned char c = b(0);
  if (c < 0x80) return {c, 1};
  std::size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
  if (n == 0 || n > s.size()) return {0xFFFD, 1};
  char32_t r = c & (0x7F >> n);
  for (std::size_t i = 1; i < n; ++i) {
    if ((b(i) & 0xC0) != 0x80) return {0xFFFD, 1};
    r = (r << 6) | (b(i) & 0x3F);
  }
  if ((n == 3 && r < 0x800) || (n == 4 && (r < 0x10000 || r > 0x10FFFF)) || (r >= 0xD800 && r <= 0xDFFF)) {
    return {0xFFFD, 1};
  }
  return {r, n};
}

char32_t get_esc(std::string_view& chunk) {
  if (chunk.empty() || chunk[0] == '-' || chunk[0] == ']') throw BadPattern{};
  if (chunk[0] == '\\') {
    chunk.remove_prefix(1);
    if (chunk.empty()) throw BadPattern{};
  }
  const auto [r, n] = decode_rune(chunk);
  if (r == 0xFFFD && n == 1) throw BadPattern{};
  chunk.remove_prefix(n);
  if (chunk.empty()) throw BadPattern{};
  return r;
}

void scan_chunk(std::string_view& pattern, bool& star, std::string_view& chunk) {
  star = false;
  while (!pattern.empty() && pattern[0] == '*') {
    pattern.remove_prefix(1);
    star = true;
  }
  bool in_range = false;
  std::size_t i = 0;
  for (; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\') {
      if (i + 1 < pattern.size()) ++i;
    } else if (c == '[') {
      in_range = true;
    } else if (c == ']') {
      in_range = false;
    } else if (c == '*' && !in_range) {
      break;
    }
  }
  chunk = pattern.substr(0, i);
  pattern.remove_prefix(i);
}

// matchChunk: the rest of `s` after `chunk` matched its start, or nullopt.
std::optional<std::string_view> match_chunk(std::string_view chunk, std::string_view s) {
  bool failed = false;
  while (!chunk.empty()) {
    if (!failed && s.empty()) failed = true;
    switch (chunk[0]) {
      case '[': {
        char32_t r = 0;
        if (!failed) {
          const auto [rune, n] = decode_rune(s);
          r = rune;
          s.remove_prefix(n);
        }
        chunk.remove_prefix(1);
        bool negated = false;
        if (!chunk.empty() && chunk[0] == '^') {
          negated = true;
          chunk.remove_prefix(1);
        }
        bool match = false;
        int ranges = 0;
        while (true) {
          if (!chunk.empty() && chunk[0] == ']' && ranges > 0) {
            chunk.remove_prefix(1);
            break;
          }
          const char32_t lo = get_esc(chunk);
          char32_t hi = lo;
          if (chunk[0] == '-') {
            chunk.remove_prefix(1);
            hi = get_esc(chunk);
          }
          if (lo <= r && r <= hi) match = true;
          ++ranges;
        }
        if (match == negated) failed = true;
        break;
      }
      case '?':
        if (!failed) {
          if (s[0] == '/') failed = true;
          s.remove_prefix(decode_rune(s).second);
        }
        chunk.remove_prefix(1);
        break;
      case '\\':
        chunk.remove_prefix(1);
        if (chunk.empty()) throw BadPattern{};
        [[fallthrough]];
      default:
        if (!failed) {
          if (chunk[0] != s[0]) failed = true;
          s.remove_prefix(1);
        }
        chunk.remove_prefix(1);
    }
  }
  if (failed) return std::nullopt;
  return s;
}

bool match(std::string_view pattern, std::string_view name) {
  while (!pattern.empty()) {
    bool star = false;
    std::string_view chunk;
    scan_chunk(pattern, star, chunk);
    if (star && chunk.empty()) return name.find('/') == std::string_view::npos;
    auto rest = match_chunk(chunk, name);
    if (rest && (rest->empty() || !pattern.empty())) {
      name = *rest;
      continue;
    }
    bool advanced = false;
    if (star) {
      for (std::size_t i = 0; i < name.size() && name[i] != '/'; ++i) {
        auto t = match_chunk(chunk, name.substr(i + 1));
        if (t) {
          if (pattern.empty() && !t->empty()) continue;
          name = *t;
          advanced = true;
          break;
        }
      }
    }
    if (advanced) continue;
    while (!pattern.empty()) {
      scan_chunk(pattern, star, chunk);
      match_chunk(chunk, "");
    }
    return false;
  }
  return name.empty();
}

bool contains_wildcards(std::string_view name) {
  for (std::size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '\\') {
      ++i;
    } else if (name[i] == '*' || name[i] == '?' || name[i] == '[') {
      return true;
    }
  }
  return false;
}

std::string go_dir(std::string_view p) {
  const auto slash = p.rfind('/');
  return go_clean(slash == std::string_view::npos ? std::string_view(".") : p.substr(0, slash + 1));
}

std::string go_join(std::string_view a, std::string_view b) {
  if (a.empty()) return go_clean(b);
  if (b.empty()) return go_clean(a);
  return go_clean(std::string(a) + "/" + std::string(b));
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
        bool matched = false;
        try {
          matched = match(base, name);
        } catch (const BadPattern&) {
        }
        if (!matched) continue;
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
    const std::string link = go_clean(std::string_view(buffer, static_cast<std::size_t>(n)));
    if (!link.empty() && link[0] == '/') return std::vector<std::string>{link};
    return std::vector<std::string>{go_join("/", go_join(go_dir(p), link))};
  }

  int root_fd_;
  std::set<std::string> resolved_;
};

}  // namespace

bool go_match(std::string_view pattern, std::string_view name) {
  try {
    return match(pattern, name);
  } catch (const BadPattern&) {
    return false;
  }
}

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
