#include "service/daemon.h"

#include <signal.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include <cstdio>

#include "dbus/listener.h"
#include "dbus/server.h"
#include "engine/sandbox/cgroup.h"
#include "engine/sandbox/emulation.h"
#include "engine/store/digest.h"
#include "engine/store/mount.h"
#include "engine/store/store.h"
#include "service/builder_service.h"
#include "service/daemon_config.h"

namespace kbuild::service {
namespace {

dbus::Listener open_listener(const DaemonOptions& options) {
  if (!options.listen.empty()) {
    dbus::Listener::BindOptions bind;
    bind.group = options.group;
    return dbus::Listener::bind(options.listen, bind);
  }
  if (auto listener = dbus::Listener::from_systemd()) return std::move(*listener);
  throw Error(ErrorKind::user, "no listening socket: start kbuildd through kbuild.socket or pass --listen PATH");
}

// What the signal handler acts on.
struct SignalTargets {
  dbus::Server& server;
  LiveConfig& config;
};

int on_signal(sd_event_source*, const signalfd_siginfo* info, void* userdata) {
  auto* targets = static_cast<SignalTargets*>(userdata);
  if (info->ssi_signo == SIGHUP) {
    try {
      targets->config.reload();
    } catch (const std::exception&) {
      // reload() logged why; the configuration in use stays.
    }
    return 0;
  }
  sd_notify(0, "STOPPING=1");
  targets->server.stop();
  return 0;
}

// How often the STATUS= line may change: builds and steps come and go faster than anyone reads.
constexpr uint64_t kStatusInterval = 1000000;  // µs

// Sends the status line when it changed, and comes back in kStatusInterval.
int on_status_timer(sd_event_source* source, uint64_t, void* userdata) {
  if (auto status = static_cast<BuildMonitor*>(userdata)->take_status()) {
    sd_notifyf(0, "STATUS=%s", status->c_str());
  }
  sd_event_source_set_time_relative(source, kStatusInterval);
  sd_event_source_set_enabled(source, SD_EVENT_ONESHOT);
  return 0;
}

// The direct backend's group: "kbuild" for the default store, one of its own for any other
// (tests run several daemons at once, and each sweeps its group at start). Builds' groups
// inside are kbuild-<build>; the daemon's own is not named like them.
std::string direct_cgroup_parent(const std::string& root) {
  if (root == "/var/lib/kbuild") return "kbuild";
  return "kbuild_" + std::string(store::Digest::of(root).hex().substr(0, 12));
}

// The context reader that goes with this kbuildd: the one built beside it, else the installed one.
std::string context_reader_program(const DaemonOptions& options) {
  if (!options.context_reader.empty()) return options.context_reader;
  char self[4096];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    std::string path(self, static_cast<size_t>(n));
    path = path.substr(0, path.rfind('/') + 1) + "kbuild-context-reader";
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return KBUILD_CONTEXT_READER;
}

}  // namespace

int run_daemon(const DaemonOptions& options) {
  // Mounts of layers stay in the daemon's own namespace and vanish with it.
  store::enter_private_mount_namespace();
  // Without a valid daemon.json there is nothing to run with: start-up refuses.
  DaemonConfig config = load_daemon_config(options.config_path);
  std::unique_ptr<store::Store> store = store::Store::open(options.root);
  for (const std::string& note : store->recovery_notes()) std::fprintf(stderr, "kbuildd: store: %s\n", note.c_str());
  dbus::Listener listener = open_listener(options);
  bool socket_activated = options.listen.empty();

  sigset_t signals;
  sigemptyset(&signals);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&signals, s);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Without a place for steps' processes the daemon still serves everything but RUN.
  solver::SandboxConfig sandbox_config;
  std::unique_ptr<sandbox::CgroupBackend> cgroups;
  try {
    cgroups = sandbox::make_cgroup_backend(options.sandbox_backend, direct_cgroup_parent(options.root));
    cgroups->sweep();
  } catch (const Error& e) {
    if (options.sandbox_backend != "auto") throw;
    cgroups.reset();
    sandbox_config.unavailable_reason = e.what();
    std::fprintf(stderr, "kbuildd: RUN steps are disabled: %s\n", e.what());
  }
  sandbox_config.helper_path = options.exec_helper;
  sandbox_config.cgroups = cgroups.get();
  sandbox_config.step_limits = {options.step_memory, options.step_cpus, options.step_pids};
  sandbox_config.network.pasta = options.pasta;
  sandbox_config.network.slirp4netns = options.slirp4netns;
  // binfmt_misc, where the system has not mounted it, in kbuildd's own mount namespace: its
  // handlers are the kernel's, wherever it is mounted. A failure shows in Info's platforms.
  const sandbox::EmulationPaths emulation_paths;
  sandbox::mount_binfmt_misc(emulation_paths.binfmt_misc);
  sandbox::Emulation emulation(sandbox::native_platforms(), emulation_paths);
  sandbox_config.emulation = &emulation;
  BuilderService service(*store, config, std::move(sandbox_config), context_reader_program(options),
                         options.certs_dir);
  dbus::ServerOptions server_options;
  server_options.group = options.group;
  server_options.idle_timeout =
      std::chrono::seconds(options.idle_timeout_seconds.value_or(socket_activated ? 300 : 0));
  dbus::Server server(std::move(listener), service, server_options);
  SignalTargets targets{server, service.config()};
  for (int s : {SIGTERM, SIGINT, SIGHUP}) {
    sd_event_add_signal(server.event(), nullptr, s, on_signal, &targets);
  }
  // WATCHDOG=1 from the loop, at half of the unit's WatchdogSec (none without one): a loop that
  // hangs stops answering systemd as it stops answering callers.
  sd_event_set_watchdog(server.event(), 1);
  sd_event_add_time_relative(server.event(), nullptr, CLOCK_MONOTONIC, kStatusInterval, kStatusInterval / 10,
                             on_status_timer, &service.monitor());
  sd_notifyf(0, "READY=1\nSTATUS=%s", service.monitor().take_status().value_or("").c_str());
  dbus::Server::Exit exit = server.run();
  // Cache entries of builds that ended without an export become durable too.
  store->snapshots().sync();
  sd_notify(0, exit == dbus::Server::Exit::idle ? "STOPPING=1\nSTATUS=idle, exiting" : "STOPPING=1");
  return 0;
}

}  // namespace kbuild::service
