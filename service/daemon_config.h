// /etc/docker/daemon.json: the keys kbuildd reads (unknown keys are ignored, as dockerd's
// other settings live in the same file).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
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
  // features.binfmt-install: kbuildd registers the qemu-user-static it finds with binfmt_misc
  // (F flag) for platforms steps cannot run yet, at start and on reload. dockerd reads
  // `features` as a free map of booleans, so the key is harmless to it.
  bool binfmt_install = false;
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
  // The resolv.conf of steps on the build's own network, as dockerd's containers get it:
  // these nameservers, search domains and options replace the host's when given.
  std::vector<std::string> dns, dns_search, dns_opts;

  // Where the values came from: the file read (empty for none), whether it existed, and the
  // keys (as describe_config names them) it set; every other key has its default.
  std::string path;
  bool file_found = false;
  std::set<std::string> from_file;
};

// Parses daemon.json text. Throws kbuild::Error (user) naming `source`, with line and column
// for malformed JSON ("/etc/docker/daemon.json:3:7: invalid JSON: ...") and for a value of
// the wrong type, with its key ("/etc/docker/daemon.json:2:27: features.buildkit must be a
// boolean").
DaemonConfig parse_daemon_config(std::string_view text, std::string_view source);

// Reads the file; a missing file means the defaults. An unreadable file is an error.
DaemonConfig load_daemon_config(const std::string& path);

// Every setting kbuildd reads, by its daemon.json key ("features.buildkit",
// "registry-mirrors", "builder.gc.policy"), as compact JSON ("true", "[\"a\",\"b\"]").
std::map<std::string, std::string> describe_config(const DaemonConfig& config);

// Where a setting of `config` came from: its file's path, or "default".
std::string config_source(const DaemonConfig& config, const std::string& key);

// The keys whose values differ between two configurations, in describe_config's order.
std::vector<std::string> changed_settings(const DaemonConfig& before, const DaemonConfig& after);

}  // namespace kbuild::service
