#include "engine/fileops/chown.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/syscall.h"
#include "engine/fileops/root_path.h"

namespace kbuild::fileops {
namespace {

// BuildKit refuses passwd and group files bigger than this (solver/llbsolver/ops/user_linux.go).
constexpr std::size_t kMaxUserFileBytes = 10 << 20;
// bufio.Scanner's longest line: its default for passwd, 1 MiB for group files.
constexpr std::size_t kMaxPasswdLine = 64 * 1024 - 1;
constexpr std::size_t kMaxGroupLine = 1024 * 1024 - 1;

struct FileText {
  bool found = false;
  std::string text;
};

// openUserFile: the file inside the root (symlinks bounded by it); a missing file, or a
// non-directory on the way, is "not found" rather than an error.
FileText read_user_file(int root_fd, const std::string& path) {
  FileText out;
  RootedPath resolved;
  try {
    resolved = resolve_in_root(root_fd, path);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::not_found) return out;
    throw;
  }
  if (!resolved.exists() || resolved.parts.empty()) return out;
  UniqueFd dir = open_dir_parts(root_fd, resolved.parts, resolved.parts.size() - 1);
  UniqueFd file(::openat(dir.get(), resolved.parts.back().c_str(),
                         O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!file) {
    if (errno == ENOENT || errno == ENOTDIR) return out;
    throw_path_error("open", path);
  }
  struct stat st;
  check_path(::fstat(file.get(), &st), "stat", path);
  if (!S_ISREG(st.st_mode)) throw Error(ErrorKind::user, path + " is not a regular file");
  out.found = true;
  char buffer[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(file.get(), buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_path_error("read", path);
    }
    if (n == 0) break;
    out.text.append(buffer, static_cast<std::size_t>(n));
    if (out.text.size() > kMaxUserFileBytes) {
      throw Error(ErrorKind::user,
                  "\"" + path + "\" exceeds " + std::to_string(kMaxUserFileBytes) + " bytes");
    }
  }
  return out;
}

bool is_ascii_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

std::string_view trim_space(std::string_view s) {
  while (!s.empty() && is_ascii_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_ascii_space(s.back())) s.remove_suffix(1);
  return s;
}

// strconv.ParseInt(text, 10, bits): optional sign, decimal digits, within range.
std::optional<int64_t> parse_int(std::string_view text, int bits) {
  if (text.empty()) return std::nullopt;
  bool negative = false;
  if (text[0] == '+' || text[0] == '-') {
    negative = text[0] == '-';
    text.remove_prefix(1);
  }
  if (text.empty()) return std::nullopt;
  const uint64_t limit = (uint64_t{1} << (bits - 1)) - (negative ? 0 : 1);
  uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<uint64_t>(c - '0');
    if (value > limit) return std::nullopt;
  }
  if (negative) return value == (uint64_t{1} << 63) ? INT64_MIN : -static_cast<int64_t>(value);
  return static_cast<int64_t>(value);
}

// strconv.Atoi with its error ignored, as moby/sys/user reads id fields: a malformed number is
// 0, one out of range the nearest limit.
int64_t atoi_lenient(std::string_view text) {
  if (const auto value = parse_int(text, 64)) return *value;
  std::string_view digits = text;
  const bool negative = !digits.empty() && digits[0] == '-';
  if (!digits.empty() && (digits[0] == '+' || digits[0] == '-')) digits.remove_prefix(1);
  if (digits.empty()) return 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') return 0;
  }
  return negative ? INT64_MIN : INT64_MAX;
}

// The first entry named `name` in passwd- or group-formatted text: {id field, gid field}.
// `id_field` is 2 in both formats; passwd's gid is field 3.
struct Entry {
  int64_t id = 0;
  int64_t gid = 0;
};

std::optional<Entry> find_entry(const std::string& text, std::string_view name, bool group_file) {
  const std::size_t max_line = group_file ? kMaxGroupLine : kMaxPasswdLine;
  std::optional<Entry> found;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + start, end - start);
    start = end + 1;
    // bufio.Scanner fails on a line longer than its buffer, wherever it is in the file.
    if (line.size() > max_line) throw Error(ErrorKind::user, "bufio.Scanner: token too long");
    line = trim_space(line);
    if (line.empty() || found) continue;
    if (group_file && line[0] == '#') continue;
    std::vector<std::string_view> fields;
    std::size_t field_start = 0;
    for (;;) {
      const std::size_t colon = line.find(':', field_start);
      fields.push_back(line.substr(field_start, colon == std::string_view::npos ? std::string_view::npos
                                                                                 : colon - field_start));
      if (colon == std::string_view::npos) break;
      field_start = colon + 1;
    }
    if (fields[0] != name) continue;
    Entry entry;
    if (fields.size() > 2) entry.id = atoi_lenient(fields[2]);
    if (!group_file && fields.size() > 3) entry.gid = atoi_lenient(fields[3]);
    found = entry;
  }
  return found;
}

// llb's parseUID: "root" or a decimal that fits 32 bits (sent as its uint32 value).
std::optional<uint32_t> parse_id(std::string_view text) {
  if (text == "root") return 0;
  if (const auto value = parse_int(text, 32)) return static_cast<uint32_t>(*value);
  return std::nullopt;
}

Owner resolve_buildkit(std::string_view spec, int rootfs_fd) {
  Owner owner;
  const std::size_t colon = spec.find(':');
  const std::string_view user = spec.substr(0, colon);
  // An empty name is marshalled as id 0 by llb.
  if (const auto id = parse_id(user); id || user.empty()) {
    owner.uid = owner.gid = id.value_or(0);
  } else {
    const FileText passwd = read_user_file(rootfs_fd, "/etc/passwd");
    if (passwd.found) {
      if (const auto entry = find_entry(passwd.text, user, false)) {
        owner.uid = static_cast<uint32_t>(entry->id);
        owner.gid = static_cast<uint32_t>(entry->gid);
      }
    }
  }
  if (colon == std::string_view::npos) return owner;
  const std::string_view group = spec.substr(colon + 1);
  if (const auto id = parse_id(group); id || group.empty()) {
    owner.gid = id.value_or(0);
  } else {
    const FileText groups = read_user_file(rootfs_fd, "/etc/group");
    if (groups.found) {
      if (const auto entry = find_entry(groups.text, group, true)) owner.gid = static_cast<uint32_t>(entry->id);
    }
  }
  return owner;
}

uint32_t classic_lookup(int rootfs_fd, const std::string& name, bool group) {
  if (const auto id = parse_int(name, 64)) return static_cast<uint32_t>(*id);
  const std::string path = group ? "/etc/group" : "/etc/passwd";
  const std::string what = group ? "can't find gid for group " : "can't find uid for user ";
  const FileText file = read_user_file(rootfs_fd, path);
  if (!file.found) throw Error(ErrorKind::user, what + name + ": open " + path + ": no such file or directory");
  const auto entry = find_entry(file.text, name, group);
  if (!entry) {
    throw Error(ErrorKind::user, what + name + (group ? ": no such group: " : ": no such user: ") + name);
  }
  return static_cast<uint32_t>(entry->id);
}

Owner resolve_classic(std::string_view spec, int rootfs_fd) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t colon = spec.find(':', start);
    parts.emplace_back(spec.substr(start, colon == std::string_view::npos ? std::string_view::npos : colon - start));
    if (colon == std::string_view::npos) break;
    start = colon + 1;
  }
  if (parts.size() > 2) throw Error(ErrorKind::user, "invalid chown string format: " + std::string(spec));
  const std::string& user = parts[0];
  const std::string& group = parts.size() == 1 ? parts[0] : parts[1];
  Owner owner;
  owner.uid = classic_lookup(rootfs_fd, user, false);
  owner.gid = classic_lookup(rootfs_fd, group, true);
  return owner;
}

}  // namespace

Owner resolve_chown(std::string_view spec, int rootfs_fd, ChownStyle style) {
  return style == ChownStyle::classic ? resolve_classic(spec, rootfs_fd) : resolve_buildkit(spec, rootfs_fd);
}

}  // namespace kbuild::fileops
