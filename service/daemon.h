// kbuildd's lifecycle: private mount namespace, configuration, store, listening socket, the
// D-Bus server, sd_notify READY/STATUS/WATCHDOG/STOPPING, SIGTERM/SIGINT, SIGHUP (reloads
// daemon.json) and idle exit.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace kbuild::service {

struct DaemonOptions {
  std::string listen;  // empty: take the socket from systemd
  std::string root = "/var/lib/kbuild";
  std::string config_path = "/etc/docker/daemon.json";
  std::string group = "kbuild";
  std::optional<int> idle_timeout_seconds;
  std::string exec_helper = KBUILD_EXEC_HELPER;  // kbuild-exec
  // kbuild-context-reader; empty: the one beside kbuildd's executable when there is one (a
  // build tree), else KBUILD_CONTEXT_READER (the installed one).
  std::string context_reader;
  std::string sandbox_backend = "auto";          // auto, systemd or direct
  std::optional<uint64_t> step_memory;           // per RUN step, bytes
  std::optional<double> step_cpus;
  std::optional<uint64_t> step_pids = 32768;
  // RUN --network=default's user-mode stacks: names looked up in PATH, or paths; "" for none.
  std::string pasta = "pasta";
  std::string slirp4netns = "slirp4netns";
  // Where registry TLS settings live per host (ca.crt, client.cert/.key), as Docker's.
  std::string certs_dir = "/etc/docker/certs.d";
};

// Runs until stopped or idle; returns the exit code.
int run_daemon(const DaemonOptions& options);

}  // namespace kbuild::service
