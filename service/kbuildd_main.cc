#include <CLI/CLI.hpp>

#include "common/version.h"

// The build service. This version only reports itself; the D-Bus endpoint comes with the service
// layer.
int main(int argc, char** argv) {
  CLI::App app{"kbuildd: the kbuild build service (socket-activated by kbuild.socket)"};
  app.set_version_flag("--version", std::string("kbuildd version ") + kbuild::kVersion);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
