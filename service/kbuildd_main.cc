#include <CLI/CLI.hpp>

#include "common/error.h"
#include "common/version.h"
#include "service/daemon.h"

int main(int argc, char** argv) {
  CLI::App app{"kbuildd: the kbuild build service (socket-activated by kbuild.socket)"};
  app.set_version_flag("--version", std::string("kbuildd version ") + kbuild::kVersion);
  kbuild::service::DaemonOptions options;
  app.add_option("--listen", options.listen, "Bind this unix socket instead of taking one from systemd");
  app.add_option("--root", options.root, "Store root")->capture_default_str();
  app.add_option("--config", options.config_path, "daemon.json to read")->capture_default_str();
  app.add_option("--group", options.group, "Group whose members may call, besides root")->capture_default_str();
  app.add_option("--idle-timeout", options.idle_timeout_seconds,
                 "Exit after this many idle seconds (0: never; default 300 when socket-activated)");
  app.add_option("--exec-helper", options.exec_helper, "The kbuild-exec helper that runs RUN steps")
      ->capture_default_str();
  app.add_option("--context-reader", options.context_reader,
                 "The kbuild-context-reader program that reads build contexts as their caller (default: the one "
                 "beside kbuildd, else " KBUILD_CONTEXT_READER ")");
  app.add_option("--sandbox-backend", options.sandbox_backend,
                 "Where RUN steps' processes live: systemd (transient units), direct (cgroups kbuildd makes) or auto")
      ->check(CLI::IsMember({"auto", "systemd", "direct"}))
      ->capture_default_str();
  app.add_option("--step-memory", options.step_memory, "Memory limit of each RUN step, in bytes");
  app.add_option("--step-cpus", options.step_cpus, "CPU limit of each RUN step, in cores");
  app.add_option("--step-pids", options.step_pids, "Process limit of each RUN step")->capture_default_str();
  app.add_option("--pasta", options.pasta,
                 "pasta (Debian package passt), the network stack of RUN --network=default; \"\" for none")
      ->capture_default_str();
  app.add_option("--slirp4netns", options.slirp4netns, "The network stack used where pasta is missing; \"\" for none")
      ->capture_default_str();
  app.add_option("--certs-dir", options.certs_dir,
                 "Per-registry TLS settings: DIR/<host[:port]>/*.crt (CAs), *.cert and *.key (client), as Docker reads them")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    return kbuild::service::run_daemon(options);
  } catch (const kbuild::Error& e) {
    std::fprintf(stderr, "kbuildd: %s\n", e.what());
    return 1;
  }
}
