#include "cli/registry_auth.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/unique_fd.h"

extern char** environ;

namespace kbuild::cli {
namespace {

std::string base64_of(std::string_view data) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < data.size(); i += 3) {
    uint32_t n = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) n |= static_cast<unsigned char>(data[i + 1]) << 8;
    if (i + 2 < data.size()) n |= static_cast<unsigned char>(data[i + 2]);
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    out += i + 1 < data.size() ? alphabet[(n >> 6) & 63] : '=';
    out += i + 2 < data.size() ? alphabet[n & 63] : '=';
  }
  return out;
}

}  // namespace

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

std::map<std::string, RegistryCredential> credentials_for(const std::string& config_text, const std::string& source,
                                                          const std::set<std::string>& domains,
                                                          const CredentialHelper& helper) {
  std::map<std::string, RegistryCredential> out;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::user, "reading " + source + ": " + e.what());
  }
  if (!config.is_object()) return out;
  // As docker resolves them: the registry's credHelpers entry, else the credsStore, else auths.
  for (const std::string& domain : domains) {
    std::string name;
    if (config.contains("credHelpers") && config["credHelpers"].is_object()) name = config["credHelpers"].value(domain, "");
    if (name.empty() && config.contains("credsStore") && config["credsStore"].is_string()) {
      name = config["credsStore"].get<std::string>();
    }
    if (name.empty() || !helper) continue;
    std::string server = domain == "docker.io" ? "https://index.docker.io/v1/" : domain;
    if (RegistryCredential found = helper(name, server); !found.empty()) out[domain] = found;
  }
  auto string_of = [](const nlohmann::json& entry, const char* key) {
    return entry.contains(key) && entry[key].is_string() ? entry[key].get<std::string>() : std::string();
  };
  if (config.contains("auths") && config["auths"].is_object()) {
    for (const auto& [key, entry] : config["auths"].items()) {
      std::string domain = registry_domain_of_key(key);
      if (!domains.count(domain) || out.count(domain) || !entry.is_object()) continue;
      RegistryCredential found{string_of(entry, "auth"), string_of(entry, "identitytoken")};
      if (!found.empty()) out[domain] = found;
    }
  }
  return out;
}

void add_registry_credentials(dbus::Options& options, const std::map<std::string, RegistryCredential>& credentials) {
  dbus::StringMap auths, tokens;
  for (const auto& [domain, credential] : credentials) {
    if (!credential.auth.empty()) auths[domain] = credential.auth;
    if (!credential.identity_token.empty()) tokens[domain] = credential.identity_token;
  }
  if (!auths.empty()) options["registry-auth"] = dbus::Value(std::move(auths));
  if (!tokens.empty()) options["registry-identity-tokens"] = dbus::Value(std::move(tokens));
}

namespace {

struct HelperResult {
  int status = 0;  // exit status; -1 when it did not exit
  std::string out;
};

// docker-credential-HELPER ACTION with `input` on stdin, run as the caller.
HelperResult run_helper(const std::string& helper, const char* action, const std::string& input) {
  for (char c : helper) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') {
      throw Error(ErrorKind::user, "credential helper name \"" + helper + "\" is not a plain name");
    }
  }
  std::string program = "docker-credential-" + helper;
  int to_child[2], from_child[2];
  check(::pipe2(to_child, O_CLOEXEC), "pipe2");
  check(::pipe2(from_child, O_CLOEXEC), "pipe2");
  UniqueFd child_in(to_child[0]), parent_out(to_child[1]), parent_in(from_child[0]), child_out(from_child[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_in.get(), STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, child_out.get(), STDOUT_FILENO);
  const char* argv[] = {program.c_str(), action, nullptr};
  pid_t pid = 0;
  int spawned = posix_spawnp(&pid, program.c_str(), &actions, nullptr, const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) throw Error(ErrorKind::user, "running " + program + ": " + std::strerror(spawned));
  child_in.reset();
  child_out.reset();
  write_all(parent_out.get(), input, program);
  parent_out.reset();
  HelperResult result;
  result.out = read_all(parent_in.get(), program);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

}  // namespace

RegistryCredential run_credential_helper(const std::string& helper, const std::string& server) {
  std::string program = "docker-credential-" + helper;
  HelperResult result = run_helper(helper, "get", server);
  // A helper that knows nothing of the server says so and exits non-zero: no credentials.
  if (result.status != 0) return {};
  try {
    nlohmann::json doc = nlohmann::json::parse(result.out);
    std::string user = doc.value("Username", ""), secret = doc.value("Secret", "");
    if (secret.empty()) return {};
    if (user == kIdentityTokenUsername) return RegistryCredential{"", secret};
    return RegistryCredential{base64_of(user + ":" + secret), ""};
  } catch (const nlohmann::json::exception&) {
    throw Error(ErrorKind::user, program + " get: its answer for " + server + " is not JSON");
  }
}

void store_in_credential_helper(const std::string& helper, const std::string& server, const std::string& username,
                                const std::string& secret) {
  nlohmann::json entry = {{"ServerURL", server}, {"Username", username}, {"Secret", secret}};
  HelperResult result = run_helper(helper, "store", entry.dump());
  if (result.status != 0) {
    throw Error(ErrorKind::user, "docker-credential-" + helper + " store failed for " + server + ": " + result.out);
  }
}

void erase_from_credential_helper(const std::string& helper, const std::string& server) {
  HelperResult result = run_helper(helper, "erase", server);
  if (result.status != 0) {
    throw Error(ErrorKind::user, "docker-credential-" + helper + " erase failed for " + server + ": " + result.out);
  }
}

std::string credential_helper_of(const std::string& config_text, const std::string& domain) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(config_text.empty() ? "{}" : config_text);
  } catch (const nlohmann::json::exception&) {
    return "";  // with_login reports it
  }
  if (!config.is_object()) return "";
  std::string helper;
  if (config.contains("credHelpers") && config["credHelpers"].is_object()) helper = config["credHelpers"].value(domain, "");
  if (helper.empty() && config.contains("credsStore") && config["credsStore"].is_string()) {
    helper = config["credsStore"].get<std::string>();
  }
  return helper;
}

std::string base64_credentials(const std::string& username, const std::string& password) {
  return base64_of(username + ":" + password);
}

std::string auths_key(const std::string& domain) {
  return domain == "docker.io" ? "https://index.docker.io/v1/" : domain;
}

std::string with_login(const std::string& config_text, const std::string& source, const std::string& domain,
                       const RegistryCredential& credential, bool* removed, bool helper_keeps_it) {
  nlohmann::json config = nlohmann::json::object();
  if (!config_text.empty()) {
    try {
      config = nlohmann::json::parse(config_text);
    } catch (const nlohmann::json::exception& e) {
      throw Error(ErrorKind::user, "reading " + source + ": " + e.what());
    }
    if (!config.is_object()) throw Error(ErrorKind::user, "reading " + source + ": not a JSON object");
  }
  if (!config.contains("auths") || !config["auths"].is_object()) config["auths"] = nlohmann::json::object();
  bool had = false;
  for (auto it = config["auths"].begin(); it != config["auths"].end();) {
    if (registry_domain_of_key(it.key()) == domain) {
      had = true;
      it = config["auths"].erase(it);
    } else {
      ++it;
    }
  }
  if (removed) *removed = had;
  if (helper_keeps_it && !credential.empty()) {
    config["auths"][auths_key(domain)] = nlohmann::json::object();  // docker's mark: the helper has it
  } else if (!credential.empty()) {
    nlohmann::json entry = nlohmann::json::object();
    if (!credential.auth.empty()) entry["auth"] = credential.auth;
    if (!credential.identity_token.empty()) entry["identitytoken"] = credential.identity_token;
    config["auths"][auths_key(domain)] = entry;
  }
  return config.dump(1, '\t') + "\n";
}

void write_docker_config(const std::string& path, const std::string& text) {
  std::string dir = path.substr(0, path.rfind('/'));
  if (!dir.empty() && ::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir", dir);
  std::string temp = path + ".tmp" + std::to_string(::getpid());
  UniqueFd fd(check(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), "create", temp));
  try {
    write_all(fd.get(), text, temp);
    check(::fsync(fd.get()), "fsync", temp);
    check(::rename(temp.c_str(), path.c_str()), "rename", path);
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
}

std::map<std::string, RegistryCredential> caller_credentials(const std::set<std::string>& domains) {
  if (domains.empty()) return {};
  std::string path = docker_config_path();
  std::ifstream in(path);
  if (!in) return {};
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return credentials_for(text, path, domains, run_credential_helper);
}

}  // namespace kbuild::cli
