#include "engine/graph/build_plan.h"

#include <cmath>
#include <cstdio>

#include "engine/dockerfile/go_values.h"
#include "engine/dockerfile/parser.h"
#include "engine/dockerfile/syntax.h"
#include "engine/image/reference.h"

namespace kbuild::graph {
namespace {

namespace df = kbuild::dockerfile;

constexpr const char* kHistoryComment = "buildkit.dockerfile.v0";

std::string key_of(const std::string& entry) { return entry.substr(0, entry.find('=')); }

void add_env(std::vector<std::string>& env, const std::string& key, const std::string& value) {
  for (std::string& entry : env) {
    if (key_of(entry) == key) {
      entry = key + "=" + value;
      return;
    }
  }
  env.push_back(key + "=" + value);
}

std::optional<std::string> get_env(const std::vector<std::string>& env, std::string_view key) {
  for (auto it = env.rbegin(); it != env.rend(); ++it) {
    if (key_of(*it) == key) return it->substr(key.size() + 1);
  }
  return std::nullopt;
}

// Go's %q of a []string: ["a" "b"].
std::string quoted_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? " " : "") + go_quote(items[i]);
  return out + "]";
}

// Go's %v of a []string: [a b].
std::string plain_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) out += (i ? " " : "") + items[i];
  return out + "]";
}

std::string join_path(const std::string& dir, const std::string& rel) {
  std::string joined = rel.starts_with("/") ? rel : dir + "/" + rel;
  // path.Clean
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= joined.size()) {
    size_t slash = joined.find('/', start);
    std::string part = joined.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
    } else if (!part.empty() && part != ".") {
      parts.push_back(part);
    }
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  std::string out;
  for (const std::string& p : parts) out += "/" + p;
  return out.empty() ? "/" : out;
}

// EXPOSE's port specs, as BuildKit normalizes them: "80" → "80/tcp", ranges expanded,
// "[ip:][host:]container[/proto]" keeps the container port.
std::vector<std::string> parse_ports(const std::vector<std::string>& specs) {
  std::vector<std::string> out;
  for (const std::string& spec : specs) {
    std::string raw = spec, proto = "tcp";
    if (size_t slash = raw.rfind('/'); slash != std::string::npos) {
      proto = raw.substr(slash + 1);
      raw = raw.substr(0, slash);
      for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    if (size_t colon = raw.rfind(':'); colon != std::string::npos) raw = raw.substr(colon + 1);
    if (proto != "tcp" && proto != "udp" && proto != "sctp") throw_user_error("invalid proto: " + proto);
    size_t dash = raw.find('-');
    auto number = [&](const std::string& s) {
      auto n = df::parse_go_uint(s, 10, 16);
      if (!n || s.empty()) throw_user_error("invalid containerPort: " + raw);
      return *n;
    };
    uint64_t first = number(raw.substr(0, dash));
    uint64_t last = dash == std::string::npos ? first : number(raw.substr(dash + 1));
    if (last < first) throw_user_error("invalid range specified for container port: " + raw);
    for (uint64_t p = first; p <= last; ++p) out.push_back(std::to_string(p) + "/" + proto);
  }
  return out;
}

std::string format_duration_go(int64_t ns) {
  // Go's time.Duration String(), as HEALTHCHECK's history prints it ("5s", "1m30s", "0s").
  if (ns == 0) return "0s";
  std::string out;
  bool negative = ns < 0;
  uint64_t u = negative ? static_cast<uint64_t>(-ns) : static_cast<uint64_t>(ns);
  if (u < 1000000000ULL) {
    char buf[64];
    if (u < 1000) std::snprintf(buf, sizeof buf, "%lluns", static_cast<unsigned long long>(u));
    else if (u < 1000000) std::snprintf(buf, sizeof buf, "%gµs", static_cast<double>(u) / 1e3);
    else std::snprintf(buf, sizeof buf, "%gms", static_cast<double>(u) / 1e6);
    return (negative ? "-" : "") + std::string(buf);
  }
  uint64_t hours = u / 3600000000000ULL;
  u %= 3600000000000ULL;
  uint64_t minutes = u / 60000000000ULL;
  u %= 60000000000ULL;
  char seconds[64];
  std::snprintf(seconds, sizeof seconds, "%.9f", static_cast<double>(u) / 1e9);
  std::string s = seconds;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  if (hours) out += std::to_string(hours) + "h";
  if (hours || minutes) out += std::to_string(minutes) + "m";
  out += s + "s";
  return (negative ? "-" : "") + out;
}

// A FROM's image name, refused in BuildKit's words unless it is a valid reference.
const std::string& check_base_name(const std::string& image) {
  try {
    image::parse_reference(image);
  } catch (const Error& e) {
    throw e.with_context("failed to parse stage name \"" + image + "\"");
  }
  return image;
}

class StageConverter {
 public:
  StageConverter(const df::ResolvedDockerfile& resolved, const std::vector<StagePlan>& done,
                 const std::vector<std::vector<std::string>>& done_state_env, const PlanOptions& options,
                 const df::ShellLexer& lexer)
      : resolved_(resolved), done_(done), done_state_env_(done_state_env), options_(options), lexer_(lexer) {}

  StagePlan convert(const df::ResolvedStage& stage, std::vector<std::string>& state_env) {
    StagePlan plan;
    plan.index = stage.index;
    plan.name = stage.name;
    plan.display_name = stage.display_name;
    plan.base_image = stage.base_name;
    plan.base_stage = stage.base_stage;
    plan.platform = stage.platform;
    plan.lines = stage.lines;
    plan.depends_on = stage.dependencies;
    start_config(stage, plan, state_env);
    build_args_.clear();

    total_ = (plan.base_stage || is_scratch(plan.base_image)) ? 0 : 1;
    for (const df::Instruction& i : stage.commands) {
      if (std::holds_alternative<df::CopyInstruction>(i.body) || std::holds_alternative<df::RunInstruction>(i.body) ||
          std::holds_alternative<df::WorkdirInstruction>(i.body)) {
        ++total_;
      }
    }
    index_ = 0;
    stage_name_ = plan.display_name;
    if (!plan.base_stage && !is_scratch(plan.base_image)) {
      try {
        plan.from_vertex_name = prefix("FROM " + image::normalize_reference(plan.base_image), false);
      } catch (const Error& e) {
        throw e.with_context("failed to parse stage name \"" + plan.base_image + "\"").at(stage.lines);
      }
    }
    for (size_t n = 0; n < stage.commands.size(); ++n) {
      try {
        dispatch(plan, state_env, stage.commands[n], n < stage.onbuild_count);
      } catch (const Error& e) {
        throw e.at(stage.commands[n].lines);
      }
    }
    return plan;
  }

 private:
  static bool is_scratch(const std::string& image) { return image == "scratch"; }

  void start_config(const df::ResolvedStage& stage, StagePlan& plan, std::vector<std::string>& state_env) {
    if (stage.base_stage) {
      const StagePlan& base = find_done(*stage.base_stage);
      plan.config = base.config;
      plan.config.onbuild.clear();  // ONBUILD triggers do not carry over from a base stage
      state_env = done_state_env_[&base - done_.data()];
      return;
    }
    if (is_scratch(stage.base_name)) {
      plan.config.working_dir = "/";  // BuildKit's empty image config
    } else if (options_.image_config) {
      if (auto config = options_.image_config(stage.base_name, stage.platform)) plan.config = *config;
      plan.config.onbuild.clear();  // the image's triggers ran first in this stage; they do not carry on
    }
    plan.config.os = stage.platform.os;
    plan.config.architecture = stage.platform.architecture;
    plan.config.variant = stage.platform.variant;
    if (!get_env(plan.config.env, "PATH")) plan.config.env.push_back(std::string("PATH=") + df::kDefaultPath);
    state_env = plan.config.env;
  }

  const StagePlan& find_done(size_t index) const {
    for (const StagePlan& p : done_) {
      if (p.index == index) return p;
    }
    throw Error(ErrorKind::internal, "stage " + std::to_string(index) + " planned out of order");
  }

  // BuildKit's prefixCommand: "[name i/total] text" for steps that make vertices.
  std::string prefix(const std::string& text, bool onbuild) {
    if (total_ == 0) return text;
    std::string out = "[";
    if (!stage_name_.empty()) out += stage_name_ + " ";
    ++index_;
    int width = static_cast<int>(1 + std::log10(static_cast<double>(total_)));
    char counter[32];
    std::snprintf(counter, sizeof counter, "%*zu/%zu] ", width, index_, total_);
    out += counter;
    if (onbuild) out += "ONBUILD ";
    return out + text;
  }

  // The instruction as written with variables expanded and the keyword upper-cased.
  std::string display_text(const df::Instruction& instruction, const std::vector<std::string>& state_env) const {
    std::string text = instruction.original;
    try {
      text = lexer_.expand_word(text, [&](std::string_view name) { return get_env(state_env, name); });
    } catch (const Error&) {
      // BuildKit shows the text unexpanded when it does not expand.
    }
    size_t space = text.find(' ');
    for (size_t i = 0; i < std::min(space, text.size()); ++i) {
      text[i] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[i])));
    }
    return text;
  }

  // BuildKit's runCommandString: "|N K=V ..." for the stage's ARGs so far (their values as
  // the step sees them), then the argv joined by spaces.
  std::string run_command_string(const std::vector<std::string>& argv, const std::vector<std::string>& state_env) const {
    std::string out;
    if (!build_args_.empty()) {
      out = "|" + std::to_string(build_args_.size());
      for (const auto& [key, value] : build_args_) out += " " + key + "=" + get_env(state_env, key).value_or(value);
    }
    for (const std::string& word : argv) out += (out.empty() ? "" : " ") + word;
    return out;
  }

  void history(StagePlan& plan, const std::string& created_by, bool layer) {
    plan.config.history.push_back({created_by, kHistoryComment, !layer});
  }

  std::vector<std::string> with_shell(const ImageConfig& config, const std::vector<std::string>& args) const {
    std::vector<std::string> out = config.shell.empty() ? std::vector<std::string>{"/bin/sh", "-c"} : config.shell;
    std::string joined;
    for (size_t i = 0; i < args.size(); ++i) joined += (i ? " " : "") + args[i];
    out.push_back(joined);
    return out;
  }

  void dispatch(StagePlan& plan, std::vector<std::string>& state_env, const df::Instruction& instruction, bool onbuild) {
    ImageConfig& config = plan.config;
    std::visit(
        [&](const auto& body) {
          using T = std::decay_t<decltype(body)>;
          if constexpr (std::is_same_v<T, df::EnvInstruction>) {
            std::string message = "ENV";
            for (const auto& kv : body.env) {
              message += " " + kv.key + "=" + kv.value;
              add_env(state_env, kv.key, kv.value);
              add_env(config.env, kv.key, kv.value);
            }
            history(plan, message, false);
          } else if constexpr (std::is_same_v<T, df::ArgInstruction>) {
            std::string message = "ARG";
            for (const auto& arg : body.args) {
              build_args_.emplace_back(arg.key, arg.value.value_or(""));
              message += " " + arg.key + (arg.value ? "=" + *arg.value : "");
              if (arg.value) add_env(state_env, arg.key, *arg.value);
            }
            history(plan, message, false);
          } else if constexpr (std::is_same_v<T, df::LabelInstruction>) {
            std::string message = "LABEL";
            for (const auto& kv : body.labels) {
              config.labels[kv.key] = kv.value;
              message += " " + kv.key + "=" + kv.value;
            }
            history(plan, message, false);
          } else if constexpr (std::is_same_v<T, df::MaintainerInstruction>) {
            config.author = body.maintainer;
            history(plan, "MAINTAINER " + body.maintainer, false);
          } else if constexpr (std::is_same_v<T, df::CmdInstruction>) {
            std::vector<std::string> args = body.command.prepend_shell ? with_shell(config, body.command.args) : body.command.args;
            config.cmd = args;
            config.args_escaped = true;
            cmd_set_ = true;
            history(plan, "CMD " + quoted_list(args), false);
          } else if constexpr (std::is_same_v<T, df::EntrypointInstruction>) {
            std::vector<std::string> args = body.command.prepend_shell ? with_shell(config, body.command.args) : body.command.args;
            config.entrypoint = args;
            if (!cmd_set_) config.cmd.reset();
            history(plan, "ENTRYPOINT " + quoted_list(args), false);
          } else if constexpr (std::is_same_v<T, df::HealthcheckInstruction>) {
            config.healthcheck = Healthcheck{body.test, body.interval_ns, body.timeout_ns, body.start_period_ns,
                                             body.start_interval_ns, body.retries};
            history(plan,
                    "HEALTHCHECK {Test:" + plain_list(body.test) + " Interval:" + format_duration_go(body.interval_ns) +
                        " Timeout:" + format_duration_go(body.timeout_ns) + " StartPeriod:" +
                        format_duration_go(body.start_period_ns) + " StartInterval:" +
                        format_duration_go(body.start_interval_ns) + " Retries:" + std::to_string(body.retries) + "}",
                    false);
          } else if constexpr (std::is_same_v<T, df::UserInstruction>) {
            config.user = body.user;
            history(plan, "USER " + body.user, false);
          } else if constexpr (std::is_same_v<T, df::VolumeInstruction>) {
            for (const auto& v : body.volumes) config.volumes.insert(v);
            history(plan, "VOLUME " + plain_list(body.volumes), false);
          } else if constexpr (std::is_same_v<T, df::StopSignalInstruction>) {
            config.stop_signal = body.signal;
            history(plan, "STOPSIGNAL " + body.signal, false);
          } else if constexpr (std::is_same_v<T, df::ShellInstruction>) {
            config.shell = body.shell;
            history(plan, "SHELL " + plain_list(body.shell), false);
          } else if constexpr (std::is_same_v<T, df::ExposeInstruction>) {
            std::vector<std::string> ports = parse_ports(body.ports);
            for (const auto& p : ports) config.exposed_ports.insert(p);
            history(plan, "EXPOSE " + plain_list(ports), false);
          } else if constexpr (std::is_same_v<T, df::OnbuildInstruction>) {
            config.onbuild.push_back(body.expression);
          } else if constexpr (std::is_same_v<T, df::WorkdirInstruction>) {
            config.working_dir = join_path(config.working_dir.empty() ? "/" : config.working_dir, body.path);
            if (config.working_dir != "/") {
              Step step{StepKind::workdir, prefix(display_text(instruction, state_env), onbuild), "",
                        instruction, {}, config.working_dir, config.user, state_env, config.shell, onbuild, {}};
              plan.steps.push_back(std::move(step));
              history(plan, "WORKDIR " + config.working_dir, true);
            } else {
              history(plan, "WORKDIR /", false);
            }
          } else if constexpr (std::is_same_v<T, df::CopyInstruction>) {
            dispatch_copy(plan, state_env, instruction, body, onbuild);
          } else if constexpr (std::is_same_v<T, df::RunInstruction>) {
            Step step{StepKind::run, prefix(display_text(instruction, state_env), onbuild), "", instruction, {},
                      config.working_dir.empty() ? "/" : config.working_dir, config.user, state_env, config.shell, onbuild, {}};
            for (const auto& mount : body.mounts) {
              step.mount_sources.push_back(mount.from.empty() ? CopySource{} : source_named(mount.from));
            }
            plan.steps.push_back(std::move(step));
            history(plan, "RUN " + run_command_string(df::run_command(body.command, config.shell).argv, state_env) +
                              " # buildkit",
                    true);
          } else {
            static_assert(std::is_same_v<T, df::FromHeader>);
          }
        },
        instruction.body);
  }

  void dispatch_copy(StagePlan& plan, const std::vector<std::string>& state_env, const df::Instruction& instruction,
                     const df::CopyInstruction& copy, bool onbuild) {
    Step step{StepKind::copy, prefix(display_text(instruction, state_env), onbuild), "", instruction, {},
              plan.config.working_dir.empty() ? "/" : plan.config.working_dir, plan.config.user, state_env,
              plan.config.shell, onbuild, {}};
    if (!copy.from.empty()) step.source = source_named(copy.from);
    std::string message = copy.is_add ? "ADD" : "COPY";
    if (copy.parents) message += " --parents";
    if (!copy.chown.empty()) message += " --chown=" + copy.chown;
    if (!copy.chmod.empty()) message += " --chmod=" + copy.chmod;
    for (const auto& src : copy.sources) message += " " + src;
    for (const auto& src : copy.inline_sources) message += " <<" + src.path;
    message += " " + copy.dest;
    step.created_by = message + " # buildkit";
    history(plan, step.created_by, true);
    plan.steps.push_back(std::move(step));
  }

  // What a --from= (of COPY, or of a RUN mount) names: a stage, by index or name, else an image.
  CopySource source_named(const std::string& from) const {
    bool numeric = std::all_of(from.begin(), from.end(), [](char c) { return c >= '0' && c <= '9'; });
    std::optional<size_t> stage;
    for (const auto& s : resolved_.stages) {
      if ((numeric && std::to_string(s.index) == from) || (!s.name.empty() && s.name == lower(from))) stage = s.index;
    }
    if (stage) return CopySource{CopySource::Kind::stage, *stage, ""};
    return CopySource{CopySource::Kind::image, 0, from};
  }

  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

  const df::ResolvedDockerfile& resolved_;
  const std::vector<StagePlan>& done_;
  const std::vector<std::vector<std::string>>& done_state_env_;
  const PlanOptions& options_;
  const df::ShellLexer& lexer_;
  size_t total_ = 0;
  size_t index_ = 0;
  std::string stage_name_;
  std::vector<std::pair<std::string, std::string>> build_args_;  // the stage's ARGs, in order
  bool cmd_set_ = false;
};

}  // namespace

const StagePlan& BuildPlan::stage(size_t dockerfile_index) const {
  for (const StagePlan& s : stages) {
    if (s.index == dockerfile_index) return s;
  }
  throw Error(ErrorKind::internal, "stage " + std::to_string(dockerfile_index) + " is not in the build plan");
}

BuildPlan plan_build(std::string_view dockerfile_text, const PlanOptions& options) {
  if (dockerfile_text.empty()) throw Error(ErrorKind::user, "the Dockerfile cannot be empty");
  df::ParsedDockerfile parsed = df::parse_dockerfile(dockerfile_text);
  df::choose_frontend(parsed, options.resolve.build_args);
  df::Dockerfile dockerfile = df::parse_stages(parsed);
  df::ResolveOptions resolve = options.resolve;
  if (options.image_config && !resolve.image_env) {
    resolve.image_env = [&](const std::string& image, const df::Platform& platform) {
      auto config = options.image_config(check_base_name(image), platform);
      return config ? config->env : std::vector<std::string>{};
    };
  }
  if (options.image_config && !resolve.image_onbuild) {
    resolve.image_onbuild = [&](const std::string& image, const df::Platform& platform) {
      auto config = options.image_config(check_base_name(image), platform);
      return config ? config->onbuild : std::vector<std::string>{};
    };
  }
  df::ResolvedDockerfile resolved = df::resolve_dockerfile(parsed, dockerfile, resolve);

  BuildPlan plan;
  plan.target = resolved.stages[resolved.target].index;
  plan.proxy_args = resolved.proxy_args;
  plan.unused_build_args = resolved.unused_build_args;
  std::vector<std::vector<std::string>> state_envs;
  df::ShellLexer lexer(parsed.escape_token);
  plan.stages.reserve(resolved.stages.size());
  state_envs.reserve(resolved.stages.size());
  for (const df::ResolvedStage& stage : resolved.stages) {
    if (!stage.reachable) continue;
    std::vector<std::string> state_env;
    StageConverter converter(resolved, plan.stages, state_envs, options, lexer);
    plan.stages.push_back(converter.convert(stage, state_env));
    state_envs.push_back(std::move(state_env));
  }
  return plan;
}


}  // namespace kbuild::graph
