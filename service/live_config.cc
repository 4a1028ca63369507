#include "service/live_config.h"

#include <systemd/sd-daemon.h>
#include <time.h>

#include <cstdio>

#include "common/error.h"
#include "seccomp/seccomp.h"

namespace kbuild::service {
namespace {

// The seccomp program default RUN steps get, compiled once per configuration: daemon.json's
// seccomp-profile or the built-in default; "unconfined" turns it off.
std::string seccomp_program(const DaemonConfig& config) {
  if (config.seccomp_profile == "unconfined") return {};
  try {
    seccomp::Profile profile =
        config.seccomp_profile.empty() ? seccomp::default_profile() : seccomp::read_profile(config.seccomp_profile);
    return seccomp::serialize(seccomp::compile(profile, seccomp::docker_default_capabilities()));
  } catch (const Error& e) {
    throw e.with_context(config.path + ": seccomp-profile");
  }
}

solver::RegistrySettings registry_settings(const DaemonConfig& config, const std::string& certs_dir) {
  solver::RegistrySettings registry;
  registry.hosts.insecure_registries = config.insecure_registries;
  registry.hosts.mirrors = config.registry_mirrors;
  if (!certs_dir.empty()) registry.hosts.certs_dir = certs_dir;
  registry.proxies = registry::ProxyConfig{config.http_proxy, config.https_proxy, config.no_proxy};
  registry.max_concurrent_downloads = config.max_concurrent_downloads;
  registry.max_concurrent_uploads = config.max_concurrent_uploads;
  return registry;
}

uint64_t monotonic_usec() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<uint64_t>(now.tv_sec) * 1'000'000 + static_cast<uint64_t>(now.tv_nsec) / 1000;
}

}  // namespace

LiveConfig::LiveConfig(solver::Builder& builder, solver::SandboxConfig base, std::string certs_dir,
                       DaemonConfig initial)
    : builder_(builder), base_(std::move(base)), certs_dir_(std::move(certs_dir)) {
  apply(std::move(initial));
}

std::shared_ptr<const DaemonConfig> LiveConfig::current() const {
  std::lock_guard lock(current_mutex_);
  return current_;
}

std::vector<std::string> LiveConfig::apply(DaemonConfig config) {
  std::lock_guard reloading(reload_mutex_);
  // Everything that can fail comes before anything changes.
  solver::SandboxConfig sandbox = base_;
  sandbox.seccomp_program = seccomp_program(config);
  sandbox.allow_insecure = config.entitlement_security_insecure;
  sandbox.allow_network_host = config.entitlement_network_host;
  sandbox.network.dns = network::DnsSettings{config.dns, config.dns_search, config.dns_opts};
  sandbox.binfmt_install = config.binfmt_install;
  solver::RegistrySettings registry = registry_settings(config, certs_dir_);
  auto next = std::make_shared<const DaemonConfig>(std::move(config));
  std::shared_ptr<const DaemonConfig> before = current();
  builder_.set_settings(std::move(sandbox), std::move(registry));
  {
    std::lock_guard lock(current_mutex_);
    current_ = next;
  }
  if (next->binfmt_install && base_.emulation) {
    for (const std::string& line : base_.emulation->install()) std::fprintf(stderr, "kbuildd: %s\n", line.c_str());
  }
  return before ? changed_settings(*before, *next) : std::vector<std::string>{};
}

ReloadResult LiveConfig::reload() {
  const std::string path = current()->path;
  // systemd's reload protocol (Type=notify-reload): RELOADING=1 with the time, READY=1 after.
  sd_notifyf(0, "RELOADING=1\nSTATUS=reloading %s\nMONOTONIC_USEC=%llu", path.c_str(),
             static_cast<unsigned long long>(monotonic_usec()));
  try {
    ReloadResult result{path, apply(load_daemon_config(path))};
    std::string changed;
    for (const std::string& key : result.changed) changed += (changed.empty() ? "" : ", ") + key;
    std::fprintf(stderr, "kbuildd: reloaded %s: %s\n", path.c_str(),
                 changed.empty() ? "nothing changed" : ("changed " + changed).c_str());
    sd_notify(0, "READY=1\nSTATUS=configuration reloaded");
    return result;
  } catch (const Error& e) {
    std::fprintf(stderr, "kbuildd: not reloaded, keeping the configuration in use: %s\n", e.what());
    sd_notifyf(0, "READY=1\nSTATUS=reload failed, keeping the configuration in use: %s", e.what());
    throw;
  }
}

}  // namespace kbuild::service
