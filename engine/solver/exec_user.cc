#include "engine/solver/exec_user.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <charconv>
#include <sstream>

#include "common/error.h"
#include "common/unique_fd.h"

namespace kbuild::solver {
namespace {

std::optional<uint32_t> parse_id(const std::string& text) {
  uint32_t value = 0;
  if (text.empty()) return std::nullopt;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::vector<std::string> split(const std::string& line, char separator) {
  std::vector<std::string> fields;
  std::string field;
  std::istringstream in(line);
  while (std::getline(in, field, separator)) fields.push_back(field);
  if (!line.empty() && line.back() == separator) fields.emplace_back();
  return fields;
}

struct PasswdEntry {
  std::string name;
  uid_t uid;
  gid_t gid;
  std::string home;
};

struct GroupEntry {
  std::string name;
  gid_t gid;
  std::vector<std::string> members;
};

std::vector<PasswdEntry> parse_passwd(const std::string& text) {
  std::vector<PasswdEntry> entries;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = split(line, ':');
    if (f.size() < 4) continue;
    auto uid = parse_id(f[2]);
    auto gid = parse_id(f[3]);
    if (!uid || !gid) continue;
    entries.push_back({f[0], *uid, *gid, f.size() > 5 ? f[5] : ""});
  }
  return entries;
}

std::vector<GroupEntry> parse_group(const std::string& text) {
  std::vector<GroupEntry> entries;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> f = split(line, ':');
    if (f.size() < 3) continue;
    auto gid = parse_id(f[2]);
    if (!gid) continue;
    GroupEntry entry{f[0], *gid, {}};
    if (f.size() > 3 && !f[3].empty()) entry.members = split(f[3], ',');
    entries.push_back(std::move(entry));
  }
  return entries;
}

std::string home_of(uid_t uid, const RootfsFileReader& read_file) {
  auto passwd = read_file("/etc/passwd");
  if (!passwd) return "/";
  for (const PasswdEntry& e : parse_passwd(*passwd)) {
    if (e.uid == uid) return e.home.empty() ? "/" : e.home;
  }
  return "/";
}

}  // namespace

ExecUser resolve_exec_user(const std::string& user, const RootfsFileReader& read_file) {
  std::string user_part = user.empty() ? "0" : user;
  std::string group_part;
  bool has_group = false;
  if (size_t colon = user_part.find(':'); colon != std::string::npos) {
    group_part = user_part.substr(colon + 1);
    user_part = user_part.substr(0, colon);
    has_group = true;
  }
  ExecUser out;
  auto numeric_uid = parse_id(user_part);
  auto numeric_gid = parse_id(group_part);
  // BuildKit's fast path: numbers are taken as they are, without the passwd file.
  if (numeric_uid && (!has_group || numeric_gid)) {
    out.uid = *numeric_uid;
    out.gid = has_group ? *numeric_gid : 0;
    out.home = home_of(out.uid, read_file);
    return out;
  }
  std::vector<PasswdEntry> passwd;
  if (auto text = read_file("/etc/passwd")) passwd = parse_passwd(*text);
  std::string user_name;
  bool found = false;
  for (const PasswdEntry& e : passwd) {
    if (e.name == user_part || (numeric_uid && e.uid == *numeric_uid)) {
      out.uid = e.uid;
      out.gid = e.gid;
      out.home = e.home.empty() ? "/" : e.home;
      user_name = e.name;
      found = true;
      break;
    }
  }
  if (!found) {
    if (!numeric_uid) {
      throw Error(ErrorKind::user, "unable to find user " + user_part + ": no matching entries in passwd file");
    }
    out.uid = *numeric_uid;
  }
  std::vector<GroupEntry> groups;
  if (auto text = read_file("/etc/group")) groups = parse_group(*text);
  if (has_group) {
    bool group_found = false;
    for (const GroupEntry& g : groups) {
      if (g.name == group_part || (numeric_gid && g.gid == *numeric_gid)) {
        out.gid = g.gid;
        group_found = true;
        break;
      }
    }
    if (!group_found) {
      if (!numeric_gid) {
        throw Error(ErrorKind::user, "unable to find group " + group_part + ": no matching entries in group file");
      }
      out.gid = *numeric_gid;
    }
    out.groups.push_back(out.gid);
  } else if (!user_name.empty()) {
    for (const GroupEntry& g : groups) {
      for (const std::string& member : g.members) {
        if (member == user_name) out.groups.push_back(g.gid);
      }
    }
  }
  return out;
}

std::optional<LayerEntry> lookup_in_layers(const std::vector<std::string>& lowers, const std::string& path) {
  std::vector<std::string> parts;
  std::istringstream in(path);
  std::string part;
  while (std::getline(in, part, '/')) {
    if (!part.empty() && part != ".") parts.push_back(part);
  }
  if (parts.empty()) return std::nullopt;
  for (const std::string& layer : lowers) {
    UniqueFd dir(::open(layer.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) continue;
    bool opaque = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      struct stat st {};
      if (::fstatat(dir.get(), parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) break;
      if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) return std::nullopt;  // a whiteout
      if (i + 1 == parts.size()) return LayerEntry{std::move(dir), parts[i], st};
      if (!S_ISDIR(st.st_mode)) return std::nullopt;
      UniqueFd next(::openat(dir.get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) break;
      char value[4];
      if (::fgetxattr(next.get(), "trusted.overlay.opaque", value, sizeof value) == 1 && value[0] == 'y') opaque = true;
      dir = std::move(next);
    }
    if (opaque) return std::nullopt;
  }
  return std::nullopt;
}

std::optional<std::string> read_file_from_layers(const std::vector<std::string>& lowers, const std::string& path) {
  std::optional<LayerEntry> entry = lookup_in_layers(lowers, path);
  if (!entry || !S_ISREG(entry->st.st_mode) || entry->st.st_size > (16 << 20)) return std::nullopt;
  UniqueFd file(::openat(entry->dir.get(), entry->name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!file) return std::nullopt;
  std::string content;
  char buffer[8192];
  ssize_t n;
  while ((n = ::read(file.get(), buffer, sizeof buffer)) > 0) content.append(buffer, static_cast<size_t>(n));
  return content;
}

}  // namespace kbuild::solver
