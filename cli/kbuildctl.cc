#include "cli/kbuildctl.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "cli/debug_dockerfile.h"
#include "cli/error_excerpt.h"
#include "common/error.h"
#include "common/version.h"

namespace kbuild::cli {
namespace {

struct DebugDockerfileFlags {
  std::string context = ".";
  std::string file;
  std::string target;
  std::vector<std::string> build_args;
  std::string platform;
};

std::string read_dockerfile(const DebugDockerfileFlags& flags, std::istream& in) {
  std::ostringstream text;
  if (flags.file == "-") {
    text << in.rdbuf();
    return text.str();
  }
  std::string path = flags.file.empty() ? flags.context + "/Dockerfile" : flags.file;
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw Error(ErrorKind::not_found, "failed to read dockerfile: open " + path + ": no such file or directory");
  }
  text << file.rdbuf();
  return text.str();
}

std::string dockerfile_display_name(const DebugDockerfileFlags& flags) {
  if (flags.file.empty() || flags.file == "-") return "Dockerfile";
  size_t slash = flags.file.rfind('/');
  return slash == std::string::npos ? flags.file : flags.file.substr(slash + 1);
}

int run_debug_dockerfile(const DebugDockerfileFlags& flags, std::istream& in, std::ostream& out, std::ostream& err) {
  DebugDockerfileRequest request;
  request.dockerfile_text = read_dockerfile(flags, in);
  try {
    request.target = flags.target;
    request.platform = flags.platform;
    request.build_args = parse_build_args(flags.build_args, [](const std::string& name) -> std::optional<std::string> {
      const char* value = std::getenv(name.c_str());
      if (!value) return std::nullopt;
      return std::string(value);
    });
    out << describe_dockerfile(request).dump(2) << "\n";
  } catch (const Error& e) {
    if (e.where()) err << dockerfile_excerpt(dockerfile_display_name(flags), request.dockerfile_text, *e.where());
    throw;
  }
  return 0;
}

}  // namespace

int run_kbuildctl(int argc, const char* const* argv, std::istream& in, std::ostream& out, std::ostream& err) {
  CLI::App app{"kbuildctl: build container images from Dockerfiles with the kbuild daemon"};
  app.set_version_flag("--version", std::string("kbuildctl version ") + kVersion);
  app.require_subcommand(1);

  CLI::App* debug = app.add_subcommand("debug", "Inspect what a build would do, without building");
  debug->require_subcommand(1);
  DebugDockerfileFlags flags;
  CLI::App* dockerfile = debug->add_subcommand("dockerfile", "Print a Dockerfile's stages and instructions after expansion, as JSON");
  dockerfile->add_option("PATH", flags.context, "Build context directory (the Dockerfile's default location)");
  dockerfile->add_option("-f,--file", flags.file, "Name of the Dockerfile (default: PATH/Dockerfile; - reads stdin)");
  dockerfile->add_option("--target", flags.target, "Set the target build stage");
  dockerfile->add_option("--build-arg", flags.build_args, "Set build-time variables")->allow_extra_args(false);
  dockerfile->add_option("--platform", flags.platform, "Set the target platform");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  try {
    if (dockerfile->parsed()) return run_debug_dockerfile(flags, in, out, err);
  } catch (const Error& e) {
    err << "ERROR: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kbuild::cli
