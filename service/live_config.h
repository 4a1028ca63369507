// daemon.json as kbuildd uses it now: read at start, read again on reload (SIGHUP, `systemctl
// reload kbuild`, the Reload method) and applied to the Builder whole. A reload that fails
// keeps the configuration in use; a build keeps the one it started with.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/solver/builder.h"
#include "service/daemon_config.h"

namespace kbuild::service {

// What a reload did: the file it read and the settings whose values changed.
struct ReloadResult {
  std::string path;
  std::vector<std::string> changed;
};

class LiveConfig {
 public:
  // `base` holds the step settings daemon.json does not give (helper, cgroups, limits, stacks);
  // `certs_dir` replaces /etc/docker/certs.d when not empty. Applies `initial` to `builder`,
  // throwing when it cannot (a seccomp-profile that does not compile).
  LiveConfig(solver::Builder& builder, solver::SandboxConfig base, std::string certs_dir, DaemonConfig initial);
  LiveConfig(const LiveConfig&) = delete;
  LiveConfig& operator=(const LiveConfig&) = delete;

  // The configuration in use; immutable, so a caller may keep it as long as it likes.
  std::shared_ptr<const DaemonConfig> current() const;
  // Reads the file the configuration in use came from again and applies it, telling systemd
  // (RELOADING=1 ... READY=1). Throws, keeping the configuration in use, when the file is
  // invalid; the error names the file, line, column and key.
  ReloadResult reload();
  // Applies `config` to builds that start from now on; returns the settings that changed.
  std::vector<std::string> apply(DaemonConfig config);

 private:
  solver::Builder& builder_;
  const solver::SandboxConfig base_;
  const std::string certs_dir_;
  std::mutex reload_mutex_;  // one reload at a time: SIGHUP and Reload may come together
  mutable std::mutex current_mutex_;
  std::shared_ptr<const DaemonConfig> current_;  // guarded by current_mutex_
};

}  // namespace kbuild::service
