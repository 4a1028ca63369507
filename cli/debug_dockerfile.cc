#include "cli/debug_dockerfile.h"

#include "engine/dockerfile/convert.h"
#include "engine/dockerfile/instructions.h"
#include "engine/dockerfile/parser.h"
#include "engine/dockerfile/resolve.h"
#include "engine/dockerfile/syntax.h"

namespace kbuild::cli {
namespace {

using nlohmann::json;
namespace df = kbuild::dockerfile;

json command_line_json(const df::CommandLine& line) {
  json out = {{"args", line.args}, {"shell_form", line.prepend_shell}};
  if (!line.files.empty()) {
    json files = json::array();
    for (const auto& f : line.files) files.push_back({{"name", f.name}, {"data", f.data}, {"chomp", f.chomp}});
    out["heredocs"] = files;
  }
  return out;
}

json pairs_json(const std::vector<df::KeyValue>& pairs) {
  json out = json::array();
  for (const auto& kv : pairs) out.push_back({{"key", kv.key}, {"value", kv.value}});
  return out;
}

json mount_json(const df::RunMount& m) {
  json out = {{"type", df::mount_type_name(m.type)}, {"target", m.target}, {"readonly", m.read_only}};
  if (!m.from.empty()) out["from"] = m.from;
  if (!m.source.empty()) out["source"] = m.source;
  if (!m.cache_id.empty()) out["id"] = m.cache_id;
  if (m.sharing) out["sharing"] = df::cache_sharing_name(*m.sharing);
  if (m.size_limit) out["size"] = m.size_limit;
  if (m.required) out["required"] = true;
  if (m.env) out["env"] = *m.env;
  if (m.mode) out["mode"] = *m.mode;
  if (m.uid) out["uid"] = *m.uid;
  if (m.gid) out["gid"] = *m.gid;
  return out;
}

json body_json(const df::InstructionBody& body) {
  return std::visit(
      [](const auto& b) -> json {
        using T = std::decay_t<decltype(b)>;
        if constexpr (std::is_same_v<T, df::FromHeader>) {
          return {{"base", b.base_name}, {"name", b.stage_name}};
        } else if constexpr (std::is_same_v<T, df::RunInstruction>) {
          json mounts = json::array();
          for (const auto& m : b.mounts) mounts.push_back(mount_json(m));
          return {{"command", command_line_json(b.command)}, {"mounts", mounts}, {"network", b.network},
                  {"security", b.security}};
        } else if constexpr (std::is_same_v<T, df::CmdInstruction> || std::is_same_v<T, df::EntrypointInstruction>) {
          return {{"command", command_line_json(b.command)}};
        } else if constexpr (std::is_same_v<T, df::EnvInstruction>) {
          return {{"env", pairs_json(b.env)}};
        } else if constexpr (std::is_same_v<T, df::LabelInstruction>) {
          return {{"labels", pairs_json(b.labels)}};
        } else if constexpr (std::is_same_v<T, df::MaintainerInstruction>) {
          return {{"maintainer", b.maintainer}};
        } else if constexpr (std::is_same_v<T, df::CopyInstruction>) {
          json out = {{"sources", b.sources}, {"dest", b.dest}};
          if (!b.inline_sources.empty()) {
            json inline_sources = json::array();
            for (const auto& s : b.inline_sources) inline_sources.push_back({{"path", s.path}, {"data", s.data}});
            out["heredocs"] = inline_sources;
          }
          if (!b.from.empty()) out["from"] = b.from;
          if (!b.chown.empty()) out["chown"] = b.chown;
          if (!b.chmod.empty()) out["chmod"] = b.chmod;
          if (b.link) out["link"] = true;
          if (b.parents) out["parents"] = true;
          if (!b.excludes.empty()) out["exclude"] = b.excludes;
          if (!b.checksum.empty()) out["checksum"] = b.checksum;
          if (b.keep_git_dir) out["keep_git_dir"] = *b.keep_git_dir;
          if (b.unpack) out["unpack"] = *b.unpack;
          return out;
        } else if constexpr (std::is_same_v<T, df::WorkdirInstruction>) {
          return {{"path", b.path}};
        } else if constexpr (std::is_same_v<T, df::UserInstruction>) {
          return {{"user", b.user}};
        } else if constexpr (std::is_same_v<T, df::VolumeInstruction>) {
          return {{"volumes", b.volumes}};
        } else if constexpr (std::is_same_v<T, df::ExposeInstruction>) {
          return {{"ports", b.ports}};
        } else if constexpr (std::is_same_v<T, df::StopSignalInstruction>) {
          return {{"signal", b.signal}};
        } else if constexpr (std::is_same_v<T, df::ArgInstruction>) {
          json args = json::array();
          for (const auto& a : b.args) {
            args.push_back({{"name", a.key}, {"value", a.value ? json(*a.value) : json(nullptr)}});
          }
          return {{"args", args}};
        } else if constexpr (std::is_same_v<T, df::ShellInstruction>) {
          return {{"shell", b.shell}};
        } else if constexpr (std::is_same_v<T, df::HealthcheckInstruction>) {
          return {{"test", b.test},
                  {"interval_ns", b.interval_ns},
                  {"timeout_ns", b.timeout_ns},
                  {"start_period_ns", b.start_period_ns},
                  {"start_interval_ns", b.start_interval_ns},
                  {"retries", b.retries}};
        } else {
          static_assert(std::is_same_v<T, df::OnbuildInstruction>);
          return {{"trigger", b.expression}};
        }
      },
      body);
}

json instruction_json(const df::Instruction& instruction, bool from_onbuild) {
  json out = {{"instruction", instruction.keyword}, {"line", instruction.lines.start_line},
              {"original", instruction.original}};
  if (from_onbuild) out["onbuild_trigger"] = true;
  out.update(body_json(instruction.body));
  return out;
}

json env_json(const df::EnvList& env) {
  json out = json::array();
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

json stage_json(const df::ResolvedStage& stage) {
  json out = {{"index", stage.index},
              {"name", stage.name},
              {"display_name", stage.display_name},
              {"base", stage.base_name},
              {"platform", stage.platform.format()},
              {"line", stage.lines.start_line},
              {"reachable", stage.reachable},
              {"depends_on", stage.dependencies}};
  if (stage.base_stage) out["base_stage"] = *stage.base_stage;
  if (!stage.image_sources.empty()) out["image_sources"] = stage.image_sources;
  json instructions = json::array();
  for (size_t i = 0; i < stage.commands.size(); ++i) {
    instructions.push_back(instruction_json(stage.commands[i], i < stage.onbuild_count));
  }
  out["instructions"] = instructions;
  if (stage.reachable) out["env"] = env_json(stage.env);
  return out;
}

}  // namespace

json describe_dockerfile(const DebugDockerfileRequest& request) {
  df::ParsedDockerfile parsed = df::parse_dockerfile(request.dockerfile_text);
  df::FrontendChoice frontend = df::choose_frontend(parsed, request.build_args);
  df::Dockerfile dockerfile = df::parse_stages(parsed);
  df::ResolveOptions options;
  options.target = request.target;
  options.build_args = request.build_args;
  if (!request.platform.empty()) options.target_platform = df::Platform::parse(request.platform);
  df::ResolvedDockerfile resolved = df::resolve_dockerfile(parsed, dockerfile, options);

  json directives = json::object();
  for (const auto& d : parsed.directives) directives[d.name] = d.value;
  json warnings = json::array();
  for (const auto& w : parsed.warnings) warnings.push_back({{"message", w.message}, {"line", w.lines.start_line}});
  json stages = json::array();
  for (const auto& stage : resolved.stages) stages.push_back(stage_json(stage));

  json out = {{"frontend", {{"syntax", frontend.requested}, {"version", frontend.version}}},
              {"directives", directives},
              {"escape", resolved.escape_token},
              {"target", resolved.stages[resolved.target].display_name},
              {"target_index", resolved.target},
              {"global_args", env_json(resolved.global_args)},
              {"unused_build_args", resolved.unused_build_args},
              {"stages", stages},
              {"warnings", warnings}};
  return out;
}

json describe_plan(const DebugDockerfileRequest& request) {
  df::ConvertOptions options;
  options.resolve.target = request.target;
  options.resolve.build_args = request.build_args;
  if (!request.platform.empty()) options.resolve.target_platform = df::Platform::parse(request.platform);
  graph::Definition definition = df::convert_dockerfile(request.dockerfile_text, options);
  json out = graph::graph_json(definition.graph, definition.root);
  const graph::ImageConfig& c = definition.config;
  json history = json::array();
  for (const auto& h : c.history) {
    history.push_back({{"created_by", h.created_by}, {"comment", h.comment}, {"empty_layer", h.empty_layer}});
  }
  out["config"] = {{"os", c.os},
                   {"architecture", c.architecture},
                   {"variant", c.variant},
                   {"env", c.env},
                   {"user", c.user},
                   {"working_dir", c.working_dir},
                   {"entrypoint", c.entrypoint ? json(*c.entrypoint) : json(nullptr)},
                   {"cmd", c.cmd ? json(*c.cmd) : json(nullptr)},
                   {"labels", c.labels},
                   {"exposed_ports", c.exposed_ports},
                   {"volumes", c.volumes},
                   {"history", history}};
  return out;
}

std::map<std::string, std::string> parse_build_args(
    const std::vector<std::string>& values, const std::function<std::optional<std::string>(const std::string&)>& getenv) {
  std::map<std::string, std::string> args;
  for (const std::string& value : values) {
    size_t eq = value.find('=');
    if (eq != std::string::npos) {
      args[value.substr(0, eq)] = value.substr(eq + 1);
    } else if (auto from_env = getenv(value)) {
      args[value] = *from_env;
    }
  }
  return args;
}

}  // namespace kbuild::cli
