#include "service/daemon_config.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/dockerfile/go_values.h"
#include "engine/gc/prune_policy.h"

namespace kbuild::service {
namespace {

// A proxy URL as Info shows it: a password in it is masked, as dockerd masks it.
std::string without_password(const std::string& url) {
  size_t scheme = url.find("://");
  size_t start = scheme == std::string::npos ? 0 : scheme + 3;
  size_t at = url.find('@', start);
  if (at == std::string::npos) return url;
  size_t colon = url.find(':', start);
  if (colon == std::string::npos || colon > at) return url;
  return url.substr(0, colon + 1) + "xxxxx" + url.substr(at);
}

using nlohmann::json;

std::string line_and_column(std::string_view text, size_t byte) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return std::to_string(line) + ":" + std::to_string(column);
}

// Where each value of a JSON text nlohmann already accepted starts, by key path
// ("builder.gc.policy[0].keepStorage"): nlohmann keeps no positions, and a value of the wrong
// type is reported at its line and column. A repeated key counts where nlohmann takes it, last.
class ValueOffsets {
 public:
  explicit ValueOffsets(std::string_view text) : text_(text) {
    if (text_.starts_with("\xEF\xBB\xBF")) at_ = 3;  // nlohmann skips a UTF-8 BOM too
    value("");
  }
  std::optional<size_t> find(const std::string& path) const {
    auto it = offsets_.find(path);
    return it == offsets_.end() ? std::nullopt : std::optional<size_t>(it->second);
  }

 private:
  char peek() const { return at_ < text_.size() ? text_[at_] : '\0'; }
  void blanks() {
    while (at_ < text_.size() && std::strchr(" \t\r\n", text_[at_]) && text_[at_] != '\0') ++at_;
  }
  std::string string_token() {
    std::string out;
    ++at_;  // the opening quote
    while (at_ < text_.size() && text_[at_] != '"') {
      if (text_[at_] == '\\' && at_ + 1 < text_.size()) out += text_[at_++];
      out += text_[at_++];
    }
    ++at_;
    return out;
  }
  void value(const std::string& path) {
    blanks();
    offsets_[path] = at_;
    char c = peek();
    if (c == '{' || c == '[') {
      ++at_;
      blanks();
      const char close = c == '{' ? '}' : ']';
      for (size_t index = 0; peek() != close && at_ < text_.size(); ++index) {
        if (c == '{') {
          std::string key = string_token();
          blanks();
          ++at_;  // ':'
          value(path.empty() ? key : path + "." + key);
        } else {
          value(path + "[" + std::to_string(index) + "]");
        }
        blanks();
        if (peek() == ',') ++at_;
        blanks();
      }
      ++at_;
    } else if (c == '"') {
      string_token();
    } else {
      while (at_ < text_.size() && !std::strchr(",]} \t\r\n", text_[at_])) ++at_;
    }
  }

  std::string_view text_;
  size_t at_ = 0;
  std::map<std::string, size_t> offsets_;
};

class Reader {
 public:
  Reader(std::string_view text, std::string_view source, DaemonConfig& config)
      : text_(text), offsets_(text), source_(source), config_(config) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    std::optional<size_t> at = offsets_.find(path);
    throw Error(ErrorKind::user, source_ + ":" + line_and_column(text_, at.value_or(0)) + ": " +
                                     (path.empty() ? "the top level" : path) + " must be " + what);
  }

  // The value at `key` (dotted) below `base`, whose path is `base_path`; null when missing
  // or null. Records where the setting `key` names came from.
  const json* find(const json& base, const std::string& base_path, const std::string& key) {
    const json* node = &base;
    std::string path = base_path;
    size_t start = 0;
    while (true) {
      size_t dot = key.find('.', start);
      std::string part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!node->is_object()) fail(path, "an object");
      auto it = node->find(part);
      if (it == node->end() || it->is_null()) return nullptr;
      node = &*it;
      path = path.empty() ? part : path + "." + part;
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    if (base_path.empty()) config_.from_file.insert(key);
    return node;
  }

  void read(const json& base, const std::string& base_path, const std::string& key, bool& out) {
    if (const json* v = find(base, base_path, key)) {
      if (!v->is_boolean()) fail(join(base_path, key), "a boolean");
      out = v->get<bool>();
    }
  }
  void read(const json& base, const std::string& base_path, const std::string& key, std::string& out) {
    if (const json* v = find(base, base_path, key)) {
      if (!v->is_string()) fail(join(base_path, key), "a string");
      out = v->get<std::string>();
    }
  }
  void read(const json& base, const std::string& base_path, const std::string& key, int& out) {
    if (const json* v = find(base, base_path, key)) {
      if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > 1024) {
        fail(join(base_path, key), "a whole number from 0 to 1024");
      }
      out = v->get<int>();
    }
  }
  void read(const json& base, const std::string& base_path, const std::string& key, std::vector<std::string>& out) {
    if (const json* v = find(base, base_path, key)) {
      const std::string path = join(base_path, key);
      if (!v->is_array()) fail(path, "a list of strings");
      out.clear();
      for (size_t i = 0; i < v->size(); ++i) {
        if (!(*v)[i].is_string()) fail(path + "[" + std::to_string(i) + "]", "a string");
        out.push_back((*v)[i].get<std::string>());
      }
    }
  }

  static std::string join(const std::string& base_path, const std::string& key) {
    return base_path.empty() ? key : base_path + "." + key;
  }

 private:
  std::string_view text_;
  ValueOffsets offsets_;
  std::string source_;
  DaemonConfig& config_;
};

// Sizes as Docker reads them (go-units RAMInBytes: "10GB", "512m"), refused here when invalid,
// so that a GC pass never meets a setting it cannot apply.
void check_size(const Reader& reader, const std::string& path, const std::string& value) {
  if (!value.empty() && !dockerfile::parse_ram_in_bytes(value)) reader.fail(path, "a size such as \"10GB\"");
}

void check_filters(const Reader& reader, const std::string& path, const std::vector<std::string>& filters) {
  try {
    gc::PruneOptions options;
    gc::parse_filters(filters, options);
  } catch (const Error& e) {
    reader.fail(path, std::string("a list of filters such as \"unused-for=2200h\" or \"type=exec.cachemount\" (") +
                          e.what() + ")");
  }
}

void read_gc_policies(Reader& reader, const json& root, DaemonConfig& config) {
  const json* policies = reader.find(root, "", "builder.gc.policy");
  if (!policies) return;
  if (!policies->is_array()) reader.fail("builder.gc.policy", "a list");
  for (size_t i = 0; i < policies->size(); ++i) {
    const std::string path = "builder.gc.policy[" + std::to_string(i) + "]";
    const json& item = (*policies)[i];
    if (!item.is_object()) reader.fail(path, "an object");
    GcPolicy policy;
    reader.read(item, path, "keepStorage", policy.keep_storage);
    reader.read(item, path, "keepDuration", policy.keep_duration);
    reader.read(item, path, "all", policy.all);
    reader.read(item, path, "filter", policy.filters);
    check_size(reader, path + ".keepStorage", policy.keep_storage);
    check_filters(reader, path + ".filter", policy.filters);
    if (!policy.keep_duration.empty()) check_filters(reader, path + ".keepDuration", {"until=" + policy.keep_duration});
    config.gc_policies.push_back(std::move(policy));
  }
}

json policy_json(const GcPolicy& policy) {
  json out = json::object();
  if (!policy.keep_storage.empty()) out["keepStorage"] = policy.keep_storage;
  if (!policy.keep_duration.empty()) out["keepDuration"] = policy.keep_duration;
  if (!policy.filters.empty()) out["filter"] = policy.filters;
  if (policy.all) out["all"] = true;
  return out;
}

}  // namespace

DaemonConfig parse_daemon_config(std::string_view text, std::string_view source) {
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::parse_error& e) {
    // nlohmann's byte is one past the offending character.
    std::string message = e.what();
    size_t colon = message.rfind(": ");
    throw Error(ErrorKind::user, std::string(source) + ":" + line_and_column(text, e.byte ? e.byte - 1 : 0) +
                                     ": invalid JSON: " + (colon == std::string::npos ? message : message.substr(colon + 2)));
  }
  DaemonConfig config;
  config.path = source;
  config.file_found = true;
  Reader reader(text, source, config);
  if (!root.is_object()) reader.fail("", "an object");
  reader.read(root, "", "features.buildkit", config.buildkit);
  reader.read(root, "", "features.binfmt-install", config.binfmt_install);
  reader.read(root, "", "builder.gc.enabled", config.gc_enabled);
  reader.read(root, "", "builder.gc.defaultKeepStorage", config.gc_default_keep_storage);
  check_size(reader, "builder.gc.defaultKeepStorage", config.gc_default_keep_storage);
  read_gc_policies(reader, root, config);
  reader.read(root, "", "builder.entitlements.network-host", config.entitlement_network_host);
  reader.read(root, "", "builder.entitlements.security-insecure", config.entitlement_security_insecure);
  reader.read(root, "", "registry-mirrors", config.registry_mirrors);
  reader.read(root, "", "insecure-registries", config.insecure_registries);
  reader.read(root, "", "max-concurrent-downloads", config.max_concurrent_downloads);
  reader.read(root, "", "max-concurrent-uploads", config.max_concurrent_uploads);
  reader.read(root, "", "seccomp-profile", config.seccomp_profile);
  reader.read(root, "", "proxies.http-proxy", config.http_proxy);
  reader.read(root, "", "proxies.https-proxy", config.https_proxy);
  reader.read(root, "", "proxies.no-proxy", config.no_proxy);
  reader.read(root, "", "dns", config.dns);
  reader.read(root, "", "dns-search", config.dns_search);
  reader.read(root, "", "dns-opts", config.dns_opts);
  return config;
}

DaemonConfig load_daemon_config(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    if (errno == ENOENT) {
      DaemonConfig defaults;
      defaults.path = path;
      return defaults;
    }
    throw Error(ErrorKind::user, "reading " + path + ": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) throw Error(ErrorKind::user, "reading " + path + ": " + std::strerror(errno));
  return parse_daemon_config(text.str(), path);
}

std::map<std::string, std::string> describe_config(const DaemonConfig& c) {
  json policies = json::array();
  for (const GcPolicy& policy : c.gc_policies) policies.push_back(policy_json(policy));
  std::map<std::string, json> values = {
      {"features.buildkit", c.buildkit},
      {"features.binfmt-install", c.binfmt_install},
      {"builder.entitlements.network-host", c.entitlement_network_host},
      {"builder.entitlements.security-insecure", c.entitlement_security_insecure},
      {"builder.gc.enabled", c.gc_enabled},
      {"builder.gc.defaultKeepStorage", c.gc_default_keep_storage},
      {"builder.gc.policy", policies},
      {"registry-mirrors", c.registry_mirrors},
      {"insecure-registries", c.insecure_registries},
      {"max-concurrent-downloads", c.max_concurrent_downloads},
      {"max-concurrent-uploads", c.max_concurrent_uploads},
      {"proxies.http-proxy", without_password(c.http_proxy)},
      {"proxies.https-proxy", without_password(c.https_proxy)},
      {"proxies.no-proxy", c.no_proxy},
      {"seccomp-profile", c.seccomp_profile},
      {"dns", c.dns},
      {"dns-search", c.dns_search},
      {"dns-opts", c.dns_opts},
  };
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : values) out.emplace(key, value.dump());
  return out;
}

std::string config_source(const DaemonConfig& config, const std::string& key) {
  return config.from_file.count(key) ? config.path : "default";
}

std::vector<std::string> changed_settings(const DaemonConfig& before, const DaemonConfig& after) {
  std::map<std::string, std::string> old_values = describe_config(before);
  std::vector<std::string> changed;
  for (const auto& [key, value] : describe_config(after)) {
    if (old_values[key] != value) changed.push_back(key);
  }
  return changed;
}

}  // namespace kbuild::service
