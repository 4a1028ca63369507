#include <CLI/CLI.hpp>

#include "common/version.h"

// The per-step helper that kbuildd spawns to enter a step's sandbox. This version only reports
// itself; the sandbox comes with the RUN support.
int main(int argc, char** argv) {
  CLI::App app{"kbuild-exec: runs one build step inside its sandbox (started by kbuildd, not by hand)"};
  app.set_version_flag("--version", std::string("kbuild-exec version ") + kbuild::kVersion);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
