// /etc/docker/daemon.json: the keys kbuildd reads (unknown keys are ignored, as dockerd's
// other settings live in the same file).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::service {

struct GcPolicy {
  std::string keep_storage;  // "10GB"
  std::vector<std::string> filters;
  bool all = false;
  std::string keep_duration;
};

struct DaemonConfig {
  bool buildkit = true;  // features.buildkit; false selects the legacy builder's behaviour
  bool gc_enabled = true;
  std::string gc_default_keep_storage;  // builder.gc.defaultKeepStorage
  std::vector<GcPolicy> gc_policies;
  bool entitlement_network_host = true;       // builder.entitlements.network-host
  bool entitlement_security_insecure = false;  // builder.entitlements.security-insecure
  std::vector<std::string> registry_mirrors;
  std::vector<std::string> insecure_registries;
  int max_concurrent_downloads = 3;
  int max_concurrent_uploads = 5;
  std::string seccomp_profile;  // a path, "unconfined", or empty for the built-in default
  std::string http_proxy, https_proxy, no_proxy;  // proxies.http-proxy & co
};

// Parses daemon.json text. Throws kbuild::Error (user) naming `source`, with line and column
// for malformed JSON ("/etc/docker/daemon.json:3:7: syntax error ...") and the key for a value
// of the wrong type ("/etc/docker/daemon.json: features.buildkit must be a boolean").
DaemonConfig parse_daemon_config(std::string_view text, std::string_view source);

// Reads the file; a missing file means the defaults.
DaemonConfig load_daemon_config(const std::string& path);

}  // namespace kbuild::service
