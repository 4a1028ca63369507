// From typed stages to what a build will run: global ARGs merged with --build-arg, base names
// and platforms expanded, stages named and linked (FROM, COPY --from, RUN --mount from=),
// --target resolved, the stages it needs marked, ONBUILD triggers of parent stages inserted,
// and each needed stage's instructions expanded with the ARG/ENV scope BuildKit gives them.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "engine/dockerfile/instructions.h"
#include "engine/dockerfile/platform.h"

namespace kbuild::dockerfile {

using EnvList = std::vector<std::pair<std::string, std::string>>;

// The default PATH that every stage gets unless its image sets one.
inline constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct ResolveOptions {
  std::string target;                             // --target; empty = the last stage
  // The classic builder's way: every stage up to the target is built, needed or not.
  bool every_stage_to_target = false;
  std::map<std::string, std::string> build_args;  // --build-arg
  Platform build_platform = Platform::native();
  std::optional<Platform> target_platform;  // --platform; empty = the build platform
  // The Env of a base image's config, as "K=V" strings; unset means "not known yet" (empty).
  std::function<std::vector<std::string>(const std::string& image, const Platform& platform)> image_env;
  // The ONBUILD triggers of a base image's config, run first in a stage built FROM it.
  std::function<std::vector<std::string>(const std::string& image, const Platform& platform)> image_onbuild;
};

struct ResolvedStage {
  size_t index = 0;
  std::string name;          // the AS name; empty when there is none
  std::string display_name;  // name, or "stage-N"; empty when the file has a single stage
  std::string base_name;     // FROM, expanded
  std::optional<size_t> base_stage;  // FROM names an earlier stage
  Platform platform;
  bool platform_set = false;  // FROM --platform was given
  SourceRange lines;
  std::string original;
  std::vector<Instruction> commands;  // expanded when reachable; ONBUILD triggers of the base first
  size_t onbuild_count = 0;           // how many of `commands` came from the base's ONBUILD
  std::vector<size_t> dependencies;   // stages read by FROM, COPY --from, RUN --mount from=
  std::vector<std::string> image_sources;  // images named by COPY --from / --mount from=
  EnvList env;                        // environment at the end of the stage (image env, ENV, ARG)
  std::vector<ArgDefinition> args;    // ARGs in scope at the end, with their values
  std::set<std::string> used_args;    // build args this stage's result depends on
  bool reachable = false;
};

struct ResolvedDockerfile {
  std::vector<ResolvedStage> stages;
  size_t target = 0;
  EnvList global_args;                     // platform ARGs and ARGs before the first FROM
  std::vector<std::string> unused_build_args;  // --build-arg names no ARG declares
  std::map<std::string, std::string> proxy_args;  // HTTP_PROXY & co: given to RUN, kept out of history
  std::string escape_token = "\\";
};

// Throws kbuild::Error with BuildKit's texts, located at the Dockerfile line where there is one.
ResolvedDockerfile resolve_dockerfile(const ParsedDockerfile& parsed, const Dockerfile& dockerfile,
                                      const ResolveOptions& options);

// Looks a name up in an EnvList: the last entry wins.
std::optional<std::string> env_lookup(const EnvList& env, std::string_view name);
// Sets a name in an EnvList, replacing an existing entry in place.
void env_set(EnvList& env, const std::string& name, const std::string& value);

// Build args that need no ARG: the proxy variables, in either case.
bool is_predefined_proxy_arg(std::string_view name);
// Build args read by the frontend itself (BUILDKIT_SYNTAX, SOURCE_DATE_EPOCH, ...).
bool is_frontend_arg(std::string_view name);

}  // namespace kbuild::dockerfile
