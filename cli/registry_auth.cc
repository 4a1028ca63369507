#include "cli/registry_auth.h"

#include <cstdlib>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace kbuild::cli {

std::string docker_config_path() {
  if (const char* dir = std::getenv("DOCKER_CONFIG"); dir && *dir) return std::string(dir) + "/config.json";
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : "/root") + "/.docker/config.json";
}

std::string registry_domain_of_key(const std::string& key) {
  std::string domain = key;
  if (size_t scheme = domain.find("://"); scheme != std::string::npos) domain = domain.substr(scheme + 3);
  domain = domain.substr(0, domain.find('/'));
  if (domain == "index.docker.io" || domain == "registry-1.docker.io") return "docker.io";
  return domain;
}

std::map<std::string, std::string> credentials_for(const std::string& config_text, const std::string& source,
                                                   const std::set<std::string>& domains) {
  std::map<std::string, std::string> out;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::user, "reading " + source + ": " + e.what());
  }
  if (!config.is_object() || !config.contains("auths") || !config["auths"].is_object()) return out;
  for (const auto& [key, entry] : config["auths"].items()) {
    std::string domain = registry_domain_of_key(key);
    if (!domains.count(domain) || !entry.is_object()) continue;
    if (entry.contains("auth") && entry["auth"].is_string() && !entry["auth"].get<std::string>().empty()) {
      out[domain] = entry["auth"].get<std::string>();
    }
  }
  return out;
}

std::map<std::string, std::string> caller_credentials(const std::set<std::string>& domains) {
  if (domains.empty()) return {};
  std::string path = docker_config_path();
  std::ifstream in(path);
  if (!in) return {};
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return credentials_for(text, path, domains);
}

}  // namespace kbuild::cli
