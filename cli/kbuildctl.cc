#include "cli/kbuildctl.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <CLI/CLI.hpp>

#include "cli/build_command.h"
#include "cli/debug_dockerfile.h"
#include "cli/disk_commands.h"
#include "cli/image_commands.h"
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

int run_debug(const DebugDockerfileFlags& flags, bool plan, std::istream& in, std::ostream& out, std::ostream& err) {
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
    out << (plan ? describe_plan(request) : describe_dockerfile(request)).dump(2) << "\n";
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

  std::string host;
  app.add_option("-H,--host", host, "Daemon socket to connect to (unix:///run/kbuild/kbuild.sock; env KBUILD_HOST)");

  BuildFlags build_flags;
  CLI::App* build = app.add_subcommand("build", "Build an image from a Dockerfile");
  build->add_option("PATH", build_flags.context, "Build context directory")->required();
  build->add_option("-f,--file", build_flags.file, "Name of the Dockerfile (default: PATH/Dockerfile)");
  build->add_option("-t,--tag", build_flags.tags, "Name and optionally a tag (format: name:tag)")->allow_extra_args(false);
  build->add_option("--build-arg", build_flags.build_args, "Set build-time variables")->allow_extra_args(false);
  build->add_option("--label", build_flags.labels, "Set metadata for an image")->allow_extra_args(false);
  build->add_option("--target", build_flags.target, "Set the target build stage to build");
  build->add_flag("--no-cache", build_flags.no_cache, "Do not use cache when building the image");
  build->add_option("--no-cache-filter", build_flags.no_cache_filter, "Do not cache specified stages")->allow_extra_args(false);
  build->add_option("--progress", build_flags.progress, "Set type of progress output (auto, plain, tty, rawjson, quiet)");
  build->add_option("-o,--output", build_flags.outputs, "Output destination (format: type=local,dest=path)")->allow_extra_args(false);
  build->add_option("--iidfile", build_flags.iidfile, "Write the image ID to a file");
  build->add_option("--metadata-file", build_flags.metadata_file, "Write build result metadata to a file");
  build->add_flag("-q,--quiet", build_flags.quiet, "Suppress the build output and print image ID on success");
  build->add_option("--platform", build_flags.platform, "Set target platform for build");
  build->add_option("--allow", build_flags.allow,
                    "Allow extra privileged entitlement (e.g., \"network.host\", \"security.insecure\")")
      ->allow_extra_args(false);
  build->add_option("-m,--memory", build_flags.memory, "Memory limit for the build's RUN steps together");
  build->add_option("--cpus", build_flags.cpus, "Number of CPUs the build's RUN steps may use together");
  build->add_option("--pids-limit", build_flags.pids_limit, "Process limit for the build's RUN steps together");
  build->add_flag("--pull", build_flags.pull, "Always attempt to pull all referenced images");
  build->add_flag("--push", build_flags.push, "Shorthand for \"--output=type=registry\"");
  build->add_option("--cache-from", build_flags.cache_from, "External cache sources (e.g. \"user/app:cache\", \"type=local,src=path/to/dir\")")
      ->allow_extra_args(false);
  build->add_option("--cache-to", build_flags.cache_to, "Cache export destinations (e.g. \"user/app:cache\", \"type=local,dest=path/to/dir\")")
      ->allow_extra_args(false);
  build->add_option("--secret", build_flags.secrets, "Secret to expose to the build (format: \"id=mysecret[,src=/local/secret]\")")
      ->allow_extra_args(false);
  build->add_option("--ssh", build_flags.ssh, "SSH agent socket or keys to expose to the build (format: \"default|<id>[=<socket>|<key>[,<key>]]\")")
      ->allow_extra_args(false);

  ImageCommands image_commands;
  add_image_commands(app, image_commands);
  DiskCommands disk_commands;
  add_disk_commands(app, disk_commands);

  CLI::App* debug = app.add_subcommand("debug", "Inspect what a build would do, without building");
  debug->require_subcommand(1);
  DebugDockerfileFlags flags;
  CLI::App* dockerfile = debug->add_subcommand("dockerfile", "Print a Dockerfile's stages and instructions after expansion, as JSON");
  dockerfile->add_option("PATH", flags.context, "Build context directory (the Dockerfile's default location)");
  dockerfile->add_option("-f,--file", flags.file, "Name of the Dockerfile (default: PATH/Dockerfile; - reads stdin)");
  dockerfile->add_option("--target", flags.target, "Set the target build stage");
  dockerfile->add_option("--build-arg", flags.build_args, "Set build-time variables")->allow_extra_args(false);
  dockerfile->add_option("--platform", flags.platform, "Set the target platform");
  CLI::App* plan = debug->add_subcommand("plan", "Print the op graph a Dockerfile converts to, as JSON");
  plan->add_option("PATH", flags.context, "Build context directory (the Dockerfile's default location)");
  plan->add_option("-f,--file", flags.file, "Name of the Dockerfile (default: PATH/Dockerfile; - reads stdin)");
  plan->add_option("--target", flags.target, "Set the target build stage");
  plan->add_option("--build-arg", flags.build_args, "Set build-time variables")->allow_extra_args(false);
  plan->add_option("--platform", flags.platform, "Set the target platform");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e, out, err);
  }
  if (host.empty()) {
    if (const char* env_host = std::getenv("KBUILD_HOST")) host = env_host;
  }
  std::string socket = socket_path_from_host(host);
  try {
    if (dockerfile->parsed() || plan->parsed()) return run_debug(flags, plan->parsed(), in, out, err);
    if (build->parsed()) return run_build(build_flags, socket, out, err);
    if (disk_command_parsed(disk_commands)) return run_disk_commands(disk_commands, socket, in, out);
    return run_image_commands(image_commands, socket, out, err);
  } catch (const Error& e) {
    err << "ERROR: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace kbuild::cli
