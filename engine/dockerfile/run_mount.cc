#include "engine/dockerfile/run_mount.h"

#include <cctype>
#include <vector>

#include "common/error.h"
#include "engine/dockerfile/go_values.h"
#include "engine/dockerfile/suggest.h"

namespace kbuild::dockerfile {
namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::user, message); }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<MountType> mount_type_from(std::string_view name) {
  if (name == "bind") return MountType::bind;
  if (name == "cache") return MountType::cache;
  if (name == "tmpfs") return MountType::tmpfs;
  if (name == "secret") return MountType::secret;
  if (name == "ssh") return MountType::ssh;
  return std::nullopt;
}

std::optional<CacheSharing> sharing_from(std::string_view name) {
  if (name == "shared") return CacheSharing::shared;
  if (name == "private") return CacheSharing::priv;
  if (name == "locked") return CacheSharing::locked;
  return std::nullopt;
}

bool parse_bool_value(const std::string& key, const std::string& value) {
  auto b = parse_go_bool(value);
  if (!b) fail("invalid value for " + key + ": " + value);
  return *b;
}

uint32_t parse_id_value(const std::string& what, const std::string& value, int base) {
  auto n = parse_go_uint(value, base, 32);
  if (!n) fail("invalid value " + value + " for " + what);
  return static_cast<uint32_t>(*n);
}

void require_secret_or_ssh(const RunMount& m, const std::string& key) {
  if (m.type != MountType::secret && m.type != MountType::ssh) {
    fail("unexpected key '" + key + "' for mount type '" + mount_type_name(m.type) + "'");
  }
}

void check_mount(const RunMount& m) {
  bool file_info_allowed = m.type == MountType::secret || m.type == MountType::ssh || m.type == MountType::cache;
  const std::string type = std::string("\"") + mount_type_name(m.type) + "\"";
  if (!file_info_allowed) {
    if (m.mode) fail("mode not allowed for " + type + " type mounts");
    if (m.uid) fail("uid not allowed for " + type + " type mounts");
    if (m.gid) fail("gid not allowed for " + type + " type mounts");
  }
  if (m.type == MountType::secret) {
    if (!m.from.empty()) fail("secret mount should not have a from");
    if (m.sharing) fail("secret mount should not define sharing");
    if (m.source.empty() && m.target.empty() && m.cache_id.empty()) {
      fail("invalid secret mount. one of source, target required");
    }
    if (!m.source.empty() && !m.cache_id.empty()) fail("both source and id can't be set");
  }
  if (m.sharing && m.type != MountType::cache) {
    fail(std::string("invalid cache sharing set for ") + mount_type_name(m.type) + " mount");
  }
}

}  // namespace

const char* mount_type_name(MountType type) {
  switch (type) {
    case MountType::bind: return "bind";
    case MountType::cache: return "cache";
    case MountType::tmpfs: return "tmpfs";
    case MountType::secret: return "secret";
    case MountType::ssh: return "ssh";
  }
  return "bind";
}

const char* cache_sharing_name(CacheSharing sharing) {
  switch (sharing) {
    case CacheSharing::shared: return "shared";
    case CacheSharing::priv: return "private";
    case CacheSharing::locked: return "locked";
  }
  return "shared";
}

RunMount parse_run_mount(std::string_view spec, const WordExpander* expand) {
  std::vector<std::string> fields;
  try {
    fields = parse_csv_fields(spec);
  } catch (const Error& e) {
    fail(std::string("failed to parse csv mounts: ") + e.what());
  }
  RunMount m;
  bool read_only_auto = true;
  for (const std::string& field : fields) {
    size_t eq = field.find('=');
    std::string key = lower(field.substr(0, eq));
    std::string value = eq == std::string::npos ? "" : field.substr(eq + 1);
    if (eq == std::string::npos) {
      if (!expand) continue;  // bare words are judged in the second pass
      if (key == "readonly" || key == "ro") {
        m.read_only = true;
        read_only_auto = false;
      } else if (key == "readwrite" || key == "rw") {
        m.read_only = false;
        read_only_auto = false;
      } else if (key == "required") {
        require_secret_or_ssh(m, key);
        m.required = true;
      } else {
        fail("invalid field '" + field + "' must be a key=value pair");
      }
      continue;
    }
    if (expand) {
      value = (*expand)(value);
    } else if (key == "from") {
      size_t dollar = value.find('$');
      if (dollar != std::string::npos && dollar != value.size() - 1) {
        fail("'" + key + "' doesn't support variable expansion, define alias stage instead");
      }
    } else {
      continue;
    }

    if (key == "type") {
      auto type = mount_type_from(lower(value));
      if (!type) {
        fail(with_suggestion("unsupported mount type " + go_quote(value), value,
                             {"bind", "cache", "tmpfs", "secret", "ssh"}, true));
      }
      m.type = *type;
    } else if (key == "from") {
      m.from = value;
    } else if (key == "source" || key == "src") {
      m.source = value;
    } else if (key == "target" || key == "dst" || key == "destination") {
      m.target = value;
    } else if (key == "readonly" || key == "ro") {
      m.read_only = parse_bool_value(key, value);
      read_only_auto = false;
    } else if (key == "readwrite" || key == "rw") {
      m.read_only = !parse_bool_value(key, value);
      read_only_auto = false;
    } else if (key == "required") {
      require_secret_or_ssh(m, key);
      m.required = parse_bool_value(key, value);
    } else if (key == "size") {
      if (m.type != MountType::tmpfs) {
        fail("unexpected key '" + key + "' for mount type '" + mount_type_name(m.type) + "'");
      }
      auto size = parse_ram_in_bytes(value);
      if (!size) fail("invalid value for " + key + ": " + value);
      m.size_limit = *size;
    } else if (key == "id") {
      m.cache_id = value;
    } else if (key == "sharing") {
      auto sharing = sharing_from(lower(value));
      if (!sharing) {
        fail(with_suggestion("unsupported sharing value " + go_quote(value), value,
                             {"shared", "private", "locked"}, true));
      }
      m.sharing = sharing;
    } else if (key == "mode") {
      m.mode = parse_id_value("mode", value, 8);
    } else if (key == "uid") {
      m.uid = parse_id_value("uid", value, 10);
    } else if (key == "gid") {
      m.gid = parse_id_value("gid", value, 10);
    } else if (key == "env") {
      m.env = value;
    } else {
      static const std::vector<std::string> keys = {
          "type", "from", "source", "target", "readonly", "id", "sharing", "required", "size", "mode",
          "uid", "gid", "src", "dst", "destination", "ro", "rw", "readwrite", "env"};
      fail(with_suggestion("unexpected key '" + key + "' in '" + field + "'", key, keys, true));
    }
  }
  check_mount(m);
  if (read_only_auto) m.read_only = !(m.type == MountType::cache || m.type == MountType::tmpfs);
  return m;
}

}  // namespace kbuild::dockerfile
