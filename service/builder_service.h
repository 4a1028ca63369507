// kbuildd's implementation of org.kbuild.Builder1: D-Bus values converted to and from the
// solver's builds and the engine's ImageStore.
#pragma once

#include "dbus/builder_api.h"
#include "engine/image/image_store.h"
#include "engine/solver/builder.h"
#include "engine/store/store.h"
#include "service/build_monitor.h"
#include "service/daemon_config.h"
#include "service/garbage_collector.h"
#include "service/live_config.h"

namespace kbuild::service {

class BuilderService : public dbus::BuilderApi {
 public:
  // `context_reader` is the kbuild-context-reader program; `certs_dir` replaces
  // /etc/docker/certs.d (tests) when not empty.
  BuilderService(store::Store& store, DaemonConfig config, solver::SandboxConfig sandbox = {},
                 std::string context_reader = KBUILD_CONTEXT_READER, std::string certs_dir = "");

  dbus::Options build(const dbus::CallContext& call, const dbus::Options& options, UniqueFd context,
                      UniqueFd progress, UniqueFd output) override;
  std::vector<dbus::Options> list_images(const dbus::CallContext& call) override;
  std::vector<std::string> remove_image(const dbus::CallContext& call, const std::string& reference,
                                        bool force) override;
  void tag_image(const dbus::CallContext& call, const std::string& source, const std::string& target) override;
  void save_images(const dbus::CallContext& call, const std::vector<std::string>& references,
                   UniqueFd output) override;
  std::vector<std::string> load_images(const dbus::CallContext& call, UniqueFd input) override;
  std::vector<std::string> pull_image(const dbus::CallContext& call, const std::string& reference,
                                      const dbus::Options& options) override;
  std::vector<std::string> push_image(const dbus::CallContext& call, const std::string& reference,
                                      const dbus::Options& options) override;
  dbus::Options check_login(const dbus::CallContext& call, const std::string& server,
                            const dbus::Options& options) override;
  dbus::Options disk_usage(const dbus::CallContext& call, const dbus::Options& options) override;
  dbus::Options prune(const dbus::CallContext& call, const dbus::Options& options) override;
  dbus::Options prune_images(const dbus::CallContext& call, const dbus::Options& options) override;
  dbus::Options info(const dbus::CallContext& call) override;
  dbus::Options reload(const dbus::CallContext& call) override;

  // daemon.json as it is in use, for the daemon's own reload (SIGHUP).
  LiveConfig& config() { return config_; }
  // Its builds as the log and the daemon's status line show them.
  BuildMonitor& monitor() { return monitor_; }

 private:
  store::Store& store_;
  image::ImageStore images_;
  solver::Builder builder_;
  std::string sandbox_backend_;  // for Info: the cgroup backend's name, or "none"
  const sandbox::Emulation* emulation_;  // for Info's platforms; null: none listed
  LiveConfig config_;
  BuildMonitor monitor_;
  GarbageCollector gc_;  // after config_, which it reads
};

}  // namespace kbuild::service
