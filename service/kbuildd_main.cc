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
  CLI11_PARSE(app, argc, argv);
  try {
    return kbuild::service::run_daemon(options);
  } catch (const kbuild::Error& e) {
    std::fprintf(stderr, "kbuildd: %s\n", e.what());
    return 1;
  }
}
