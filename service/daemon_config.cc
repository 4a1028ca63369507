#include "service/daemon_config.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace kbuild::service {
namespace {

using nlohmann::json;

class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw Error(ErrorKind::user, source_ + ": " + key + " must be " + what);
  }

  const json* find(const json& object, const std::string& path) const {
    const json* node = &object;
    size_t start = 0;
    while (true) {
      size_t dot = path.find('.', start);
      std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (!node->is_object()) fail(path.substr(0, start ? start - 1 : 0), "an object");
      auto it = node->find(part);
      if (it == node->end() || it->is_null()) return nullptr;
      node = &*it;
      if (dot == std::string::npos) return node;
      start = dot + 1;
    }
  }

  void read(const json& root, const std::string& key, bool& out) const {
    if (const json* v = find(root, key)) {
      if (!v->is_boolean()) fail(key, "a boolean");
      out = v->get<bool>();
    }
  }
  void read(const json& root, const std::string& key, std::string& out) const {
    if (const json* v = find(root, key)) {
      if (!v->is_string()) fail(key, "a string");
      out = v->get<std::string>();
    }
  }
  void read(const json& root, const std::string& key, int& out) const {
    if (const json* v = find(root, key)) {
      if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > 1024) {
        fail(key, "a whole number from 0 to 1024");
      }
      out = v->get<int>();
    }
  }
  void read(const json& root, const std::string& key, std::vector<std::string>& out) const {
    if (const json* v = find(root, key)) {
      if (!v->is_array()) fail(key, "a list of strings");
      out.clear();
      for (const json& item : *v) {
        if (!item.is_string()) fail(key, "a list of strings");
        out.push_back(item.get<std::string>());
      }
    }
  }

 private:
  std::string source_;
};

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
  Reader reader(source);
  if (!root.is_object()) reader.fail("the top level", "an object");
  DaemonConfig config;
  reader.read(root, "features.buildkit", config.buildkit);
  reader.read(root, "builder.gc.enabled", config.gc_enabled);
  reader.read(root, "builder.gc.defaultKeepStorage", config.gc_default_keep_storage);
  if (const json* policies = reader.find(root, "builder.gc.policy")) {
    if (!policies->is_array()) reader.fail("builder.gc.policy", "a list");
    for (const json& item : *policies) {
      GcPolicy policy;
      reader.read(item, "keepStorage", policy.keep_storage);
      reader.read(item, "keepDuration", policy.keep_duration);
      reader.read(item, "all", policy.all);
      if (const json* filter = reader.find(item, "filter")) {
        if (!filter->is_array()) reader.fail("builder.gc.policy[].filter", "a list of strings");
        for (const json& f : *filter) {
          if (!f.is_string()) reader.fail("builder.gc.policy[].filter", "a list of strings");
          policy.filters.push_back(f.get<std::string>());
        }
      }
      config.gc_policies.push_back(std::move(policy));
    }
  }
  reader.read(root, "builder.entitlements.network-host", config.entitlement_network_host);
  reader.read(root, "builder.entitlements.security-insecure", config.entitlement_security_insecure);
  reader.read(root, "registry-mirrors", config.registry_mirrors);
  reader.read(root, "insecure-registries", config.insecure_registries);
  reader.read(root, "max-concurrent-downloads", config.max_concurrent_downloads);
  reader.read(root, "max-concurrent-uploads", config.max_concurrent_uploads);
  reader.read(root, "seccomp-profile", config.seccomp_profile);
  reader.read(root, "proxies.http-proxy", config.http_proxy);
  reader.read(root, "proxies.https-proxy", config.https_proxy);
  reader.read(root, "proxies.no-proxy", config.no_proxy);
  return config;
}

DaemonConfig load_daemon_config(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return DaemonConfig{};
  std::ostringstream text;
  text << file.rdbuf();
  return parse_daemon_config(text.str(), path);
}

}  // namespace kbuild::service
