#include "engine/dockerfile/resolve.h"

#include <algorithm>
#include <cctype>
#include <functional>

#include "engine/dockerfile/go_values.h"
#include "engine/dockerfile/suggest.h"

namespace kbuild::dockerfile {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Error located(const std::string& message, SourceRange lines) { return Error(ErrorKind::user, message, lines); }

VariableLookup lookup_in(const EnvList& env) {
  return [&env](std::string_view name) { return env_lookup(env, name); };
}

EnvList default_args(const ResolveOptions& options, const Platform& target, std::string target_stage) {
  const Platform& build = options.build_platform;
  if (target_stage.empty()) target_stage = "default";
  EnvList args = {
      {"BUILDPLATFORM", build.format()},   {"BUILDOS", build.os},
      {"BUILDOSVERSION", ""},              {"BUILDARCH", build.architecture},
      {"BUILDVARIANT", build.variant},     {"TARGETPLATFORM", target.format()},
      {"TARGETOS", target.os},             {"TARGETOSVERSION", ""},
      {"TARGETARCH", target.architecture}, {"TARGETVARIANT", target.variant},
      {"TARGETSTAGE", target_stage},
  };
  for (auto& [key, value] : args) {
    if (auto it = options.build_args.find(key); it != options.build_args.end()) value = it->second;
  }
  return args;
}

// ARGs before the first FROM, with --build-arg values taking precedence over defaults.
void apply_meta_args(const Dockerfile& dockerfile, const ResolveOptions& options, const ShellLexer& lexer,
                     EnvList& global, std::set<std::string>& declared) {
  for (const Instruction& instruction : dockerfile.meta_args) {
    for (const ArgDefinition& def : std::get<ArgInstruction>(instruction.body).args) {
      declared.insert(def.key);
      std::optional<std::string> value;
      if (auto it = options.build_args.find(def.key); it != options.build_args.end()) {
        value = it->second;
      } else if (def.value) {
        try {
          value = lexer.expand_word(*def.value, lookup_in(global));
        } catch (const Error& e) {
          throw e.at(instruction.lines);
        }
      }
      if (value) env_set(global, def.key, *value);
    }
  }
}

// Where a COPY --from or RUN --mount from= reads: a stage index, or an image name.
struct SourceRef {
  std::optional<size_t> stage;
  std::string image;
};

class StageLinker {
 public:
  StageLinker(std::vector<ResolvedStage>& stages) : stages_(stages) {}

  std::optional<size_t> find(std::string_view name) const {
    std::string key = lower(name);
    for (const ResolvedStage& s : stages_) {
      if (!s.name.empty() && s.name == key) return s.index;
    }
    return std::nullopt;
  }

  SourceRef copy_source(const std::string& from, SourceRange lines) const {
    ShellLexer plain;
    if (plain.expand_word(from, [](std::string_view) { return std::nullopt; }) != from) {
      throw located("variable expansion is not supported for --from, define a new stage with FROM using ARG "
                    "from global scope as a workaround", lines);
    }
    if (!from.empty() && std::all_of(from.begin(), from.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      size_t index = from.size() > 9 ? stages_.size() : std::stoul(from);
      if (index >= stages_.size()) throw located("invalid stage index " + from, lines);
      return {index, ""};
    }
    if (auto stage = find(from)) return {stage, ""};
    return {std::nullopt, from};
  }

  SourceRef mount_source(const std::string& from) const {
    if (auto stage = find(from)) return {stage, ""};
    return {std::nullopt, from};
  }

  // The sources an instruction reads besides its own stage.
  std::vector<SourceRef> sources_of(const Instruction& instruction) const {
    std::vector<SourceRef> refs;
    if (auto* copy = std::get_if<CopyInstruction>(&instruction.body); copy && !copy->from.empty()) {
      refs.push_back(copy_source(copy->from, instruction.lines));
    } else if (auto* run = std::get_if<RunInstruction>(&instruction.body)) {
      for (const RunMount& m : run->mounts) {
        if (!m.from.empty()) refs.push_back(mount_source(m.from));
      }
    }
    return refs;
  }

  void link(ResolvedStage& stage, const Instruction& instruction) const {
    for (const SourceRef& ref : sources_of(instruction)) {
      if (ref.stage) {
        if (std::find(stage.dependencies.begin(), stage.dependencies.end(), *ref.stage) == stage.dependencies.end()) {
          stage.dependencies.push_back(*ref.stage);
        }
      } else if (std::find(stage.image_sources.begin(), stage.image_sources.end(), ref.image) ==
                 stage.image_sources.end()) {
        stage.image_sources.push_back(ref.image);
      }
    }
  }

 private:
  std::vector<ResolvedStage>& stages_;
};

void check_no_cycles(const std::vector<ResolvedStage>& stages) {
  enum class Mark { none, visiting, done };
  std::vector<Mark> marks(stages.size(), Mark::none);
  std::function<void(size_t)> visit = [&](size_t i) {
    if (marks[i] == Mark::done) return;
    if (marks[i] == Mark::visiting) {
      const ResolvedStage& s = stages[i];
      throw located("circular dependency detected on stage: " + (s.name.empty() ? s.display_name : s.name), s.lines);
    }
    marks[i] = Mark::visiting;
    for (size_t dep : stages[i].dependencies) visit(dep);
    marks[i] = Mark::done;
  };
  for (size_t i = 0; i < stages.size(); ++i) visit(i);
}

void mark_reachable_from(std::vector<ResolvedStage>& stages, size_t index) {
  if (stages[index].reachable) return;
  stages[index].reachable = true;
  for (size_t dep : stages[index].dependencies) mark_reachable_from(stages, dep);
}

void mark_reachable(std::vector<ResolvedStage>& stages, size_t target, bool every_stage_to_target) {
  for (ResolvedStage& stage : stages) stage.reachable = false;
  mark_reachable_from(stages, target);
  for (size_t i = 0; every_stage_to_target && i < target; ++i) mark_reachable_from(stages, i);
}

// A base's ONBUILD triggers run first in a stage built FROM it.
void insert_onbuild_triggers(ResolvedStage& stage, const std::vector<std::string>& expressions,
                             const StageLinker& linker) {
  std::vector<Instruction> triggers;
  for (const std::string& expression : expressions) {
    ParsedDockerfile parsed = parse_dockerfile(expression);
    if (parsed.nodes.size() != 1) throw located("onbuild trigger should be a single expression", stage.lines);
    Node node = parsed.nodes.front();
    node.lines = stage.lines;
    Instruction trigger = parse_instruction(node);
    linker.link(stage, trigger);
    triggers.push_back(std::move(trigger));
  }
  stage.onbuild_count = triggers.size();
  stage.commands.insert(stage.commands.begin(), std::make_move_iterator(triggers.begin()),
                        std::make_move_iterator(triggers.end()));
}

class StageDispatcher {
 public:
  StageDispatcher(const ResolveOptions& options, const ShellLexer& lexer, const EnvList& global,
                  std::set<std::string>& declared)
      : options_(options), lexer_(lexer), global_(global), declared_(declared) {}

  void dispatch(std::vector<ResolvedStage>& stages, ResolvedStage& stage) {
    start_environment(stages, stage);
    for (Instruction& instruction : stage.commands) {
      check_sources_dispatched(stages, stage, instruction);
      if (auto* arg = std::get_if<ArgInstruction>(&instruction.body)) {
        dispatch_arg(stage, *arg, instruction.lines);
        continue;
      }
      expand_instruction(instruction, lexer_, lookup_in(stage.env));
      if (auto* env = std::get_if<EnvInstruction>(&instruction.body)) {
        for (const KeyValue& kv : env->env) env_set(stage.env, kv.key, kv.value);
      }
    }
    dispatched_.insert(stage.index);
  }

 private:
  void start_environment(const std::vector<ResolvedStage>& stages, ResolvedStage& stage) {
    if (stage.base_stage) {
      const ResolvedStage& base = stages[*stage.base_stage];
      stage.env = base.env;
      stage.args = base.args;
      stage.used_args = base.used_args;
      if (!stage.platform_set) stage.platform = base.platform;
      return;
    }
    if (lower(stage.base_name) != "scratch" && options_.image_env) {
      std::vector<std::string> image_env;
      try {
        image_env = options_.image_env(stage.base_name, stage.platform);
      } catch (const Error& e) {
        throw e.at(stage.lines);  // a base image that cannot be named or found: its FROM line
      }
      for (const std::string& entry : image_env) {
        size_t eq = entry.find('=');
        env_set(stage.env, entry.substr(0, eq), eq == std::string::npos ? "" : entry.substr(eq + 1));
      }
    }
    if (!env_lookup(stage.env, "PATH")) env_set(stage.env, "PATH", kDefaultPath);
  }

  void check_sources_dispatched(const std::vector<ResolvedStage>& stages, const ResolvedStage& stage,
                                const Instruction& instruction) const {
    auto* copy = std::get_if<CopyInstruction>(&instruction.body);
    if (!copy || copy->from.empty()) return;
    StageLinker linker(const_cast<std::vector<ResolvedStage>&>(stages));
    SourceRef ref = linker.copy_source(copy->from, instruction.lines);
    if (ref.stage && !dispatched_.count(*ref.stage)) {
      throw located("cannot copy from stage " + go_quote(copy->from) + ", it needs to be defined before current stage " +
                        go_quote(stage.display_name),
                    instruction.lines);
    }
  }

  void dispatch_arg(ResolvedStage& stage, ArgInstruction& arg, SourceRange lines) {
    for (ArgDefinition& def : arg.args) {
      declared_.insert(def.key);
      auto given = options_.build_args.find(def.key);
      bool has_given = given != options_.build_args.end();
      if (!def.value && !has_given) {
        if (auto global = env_lookup(global_, def.key)) def.value = global;
      }
      if (has_given) {
        def.value = given->second;
      } else if (def.value) {
        try {
          def.value = lexer_.expand_word(*def.value, lookup_in(stage.env));
        } catch (const Error& e) {
          throw e.at(lines);
        }
      }
      if (def.value) env_set(stage.env, def.key, *def.value);
      stage.used_args.insert(def.key);
      auto existing = std::find_if(stage.args.begin(), stage.args.end(),
                                   [&](const ArgDefinition& a) { return a.key == def.key; });
      if (existing != stage.args.end()) stage.args.erase(existing);
      stage.args.push_back(def);
    }
  }

  const ResolveOptions& options_;
  const ShellLexer& lexer_;
  const EnvList& global_;
  std::set<std::string>& declared_;
  std::set<size_t> dispatched_;
};

std::vector<ResolvedStage> make_stages(const Dockerfile& dockerfile, const ShellLexer& lexer, const EnvList& global,
                                       const Platform& target_platform) {
  std::vector<ResolvedStage> stages;
  for (size_t i = 0; i < dockerfile.stages.size(); ++i) {
    const Stage& source = dockerfile.stages[i];
    ResolvedStage stage;
    stage.index = i;
    stage.name = source.name;
    stage.display_name = source.name.empty() ? "stage-" + std::to_string(i) : source.name;
    stage.lines = source.lines;
    stage.original = source.original;
    stage.commands = source.commands;
    try {
      stage.base_name = lexer.expand_word(source.base_name, lookup_in(global));
    } catch (const Error& e) {
      throw e.at(source.lines);
    }
    if (stage.base_name.empty()) throw located("base name (" + source.base_name + ") should not be blank", source.lines);
    stage.platform = target_platform;
    if (!source.platform.empty()) {
      std::string spec = lexer.expand_word(source.platform, lookup_in(global));
      if (spec.empty()) throw located("empty platform value from expression " + source.platform, source.lines);
      try {
        stage.platform = Platform::parse(spec);
      } catch (const Error& e) {
        throw located("failed to parse platform " + source.platform + ": " + e.what(), source.lines);
      }
      stage.platform_set = true;
    }
    // FROM refers to a stage only when one of that name is defined above it.
    for (const ResolvedStage& earlier : stages) {
      if (!earlier.name.empty() && earlier.name == stage.base_name) stage.base_stage = earlier.index;
    }
    if (stage.base_stage) stage.dependencies.push_back(*stage.base_stage);
    stages.push_back(std::move(stage));
  }
  return stages;
}

size_t resolve_target(const std::vector<ResolvedStage>& stages, const std::string& target) {
  if (target.empty()) return stages.size() - 1;
  std::string key = lower(target);
  for (const ResolvedStage& s : stages) {
    if (!s.name.empty() && s.name == key) return s.index;
  }
  std::vector<std::string> names;
  for (const ResolvedStage& s : stages) names.push_back(s.display_name);
  throw Error(ErrorKind::not_found,
              with_suggestion("target stage " + go_quote(target) + " could not be found", target, names, true));
}

}  // namespace

std::optional<std::string> env_lookup(const EnvList& env, std::string_view name) {
  for (auto it = env.rbegin(); it != env.rend(); ++it) {
    if (it->first == name) return it->second;
  }
  return std::nullopt;
}

void env_set(EnvList& env, const std::string& name, const std::string& value) {
  for (auto& entry : env) {
    if (entry.first == name) {
      entry.second = value;
      return;
    }
  }
  env.emplace_back(name, value);
}

bool is_frontend_arg(std::string_view name) {
  return name.rfind("BUILDKIT_", 0) == 0 || name == "SOURCE_DATE_EPOCH";
}

bool is_predefined_proxy_arg(std::string_view name) {
  static const std::set<std::string> names = {"http_proxy", "https_proxy", "ftp_proxy", "no_proxy", "all_proxy"};
  return names.count(lower(name)) > 0;
}

ResolvedDockerfile resolve_dockerfile(const ParsedDockerfile& parsed, const Dockerfile& dockerfile,
                                      const ResolveOptions& options) {
  if (dockerfile.stages.empty()) throw Error(ErrorKind::user, "dockerfile contains no stages to build");
  ResolvedDockerfile result;
  result.escape_token = std::string(1, parsed.escape_token);
  ShellLexer lexer(parsed.escape_token);
  Platform target_platform = options.target_platform.value_or(options.build_platform);
  std::string target_stage_name = options.target.empty() ? dockerfile.stages.back().name : lower(options.target);
  result.global_args = default_args(options, target_platform, target_stage_name);
  std::set<std::string> declared;
  apply_meta_args(dockerfile, options, lexer, result.global_args, declared);

  result.stages = make_stages(dockerfile, lexer, result.global_args, target_platform);
  StageLinker linker(result.stages);
  for (ResolvedStage& stage : result.stages) {
    for (const Instruction& instruction : stage.commands) linker.link(stage, instruction);
  }
  check_no_cycles(result.stages);
  if (result.stages.size() == 1) result.stages.front().display_name.clear();
  result.target = resolve_target(result.stages, options.target);

  mark_reachable(result.stages, result.target, options.every_stage_to_target);
  for (ResolvedStage& stage : result.stages) {
    if (!stage.reachable) continue;
    std::vector<std::string> triggers;
    if (stage.base_stage) {
      for (const Instruction& parent : result.stages[*stage.base_stage].commands) {
        if (auto* onbuild = std::get_if<OnbuildInstruction>(&parent.body)) triggers.push_back(onbuild->expression);
      }
    } else if (lower(stage.base_name) != "scratch" && options.image_onbuild) {
      try {
        triggers = options.image_onbuild(stage.base_name, stage.platform);
      } catch (const Error& e) {
        throw e.at(stage.lines);  // a base image that cannot be named or found: its FROM line
      }
    }
    if (!triggers.empty()) insert_onbuild_triggers(stage, triggers, linker);
  }
  check_no_cycles(result.stages);
  mark_reachable(result.stages, result.target, options.every_stage_to_target);  // triggers may have added dependencies

  StageDispatcher dispatcher(options, lexer, result.global_args, declared);
  for (ResolvedStage& stage : result.stages) {
    if (stage.reachable) dispatcher.dispatch(result.stages, stage);
  }

  const EnvList platform_args = default_args(options, target_platform, "");
  for (const auto& [key, value] : options.build_args) {
    if (is_predefined_proxy_arg(key)) {
      result.proxy_args[key] = value;
    } else if (!declared.count(key) && !env_lookup(platform_args, key) && !is_frontend_arg(key)) {
      result.unused_build_args.push_back(key);
    }
  }
  return result;
}

}  // namespace kbuild::dockerfile
