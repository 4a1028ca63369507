#include "engine/dockerfile/convert.h"

// GCC 12 sees a "maybe uninitialized" member when a vector of graph::FileAction variants
// grows; every member has an initializer (GCC bug 105562 and its kin).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "common/go_path.h"
#include "engine/dockerfile/classic_builder.h"
#include "engine/dockerfile/go_values.h"
#include "engine/dockerfile/parser.h"
#include "engine/dockerfile/syntax.h"
#include "engine/image/reference.h"

namespace kbuild::dockerfile {
namespace {

using graph::ImageConfig;
using graph::OpIndex;

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
  return go_clean_path(rel.starts_with("/") ? rel : dir + "/" + rel);
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
      auto n = parse_go_uint(s, 10, 16);
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

// An image a stage is made from or reads (FROM, COPY --from, RUN --mount from=), refused in
// BuildKit's words unless it is a valid reference; `where` is the instruction's lines, when
// BuildKit knows them.
const std::string& check_base_name(const std::string& image, std::optional<SourceRange> where = std::nullopt) {
  try {
    image::parse_reference(image);
  } catch (const Error& e) {
    Error refused = e.with_context("failed to parse stage name \"" + image + "\"");
    throw where ? refused.at(*where) : refused;
  }
  return image;
}

// Every image every stage names, reachable or not, checked as BuildKit checks them before it
// resolves any: a FROM at its line, a COPY --from at the COPY's, a RUN mount's from= without a
// line (BuildKit gives its stage none).
void check_image_names(const ResolvedDockerfile& resolved) {
  for (const ResolvedStage& stage : resolved.stages) {
    if (!stage.base_stage && stage.base_name != "scratch") check_base_name(stage.base_name, stage.lines);
    for (const std::string& image : stage.image_sources) {
      if (image == "scratch") continue;
      std::optional<SourceRange> where;
      for (const Instruction& instruction : stage.commands) {
        auto* copy = std::get_if<CopyInstruction>(&instruction.body);
        if (copy && copy->from == image) {
          where = instruction.lines;
          break;
        }
      }
      check_base_name(image, where);
    }
  }
}

// A RUN mount's target: absolute, or relative to the working directory.
std::string mount_target(const std::string& workdir, const std::string& target) {
  if (!target.empty() && target[0] == '/') return go_clean_path(target);
  return go_clean_path("/" + workdir + "/" + target);
}

graph::ExecMount::Type mount_type(MountType type) {
  switch (type) {
    case MountType::bind: return graph::ExecMount::Type::bind;
    case MountType::cache: return graph::ExecMount::Type::cache;
    case MountType::tmpfs: return graph::ExecMount::Type::tmpfs;
    case MountType::secret: return graph::ExecMount::Type::secret;
    case MountType::ssh: return graph::ExecMount::Type::ssh;
  }
  return graph::ExecMount::Type::bind;
}

graph::ExecMount::Sharing mount_sharing(std::optional<CacheSharing> sharing) {
  switch (sharing.value_or(CacheSharing::shared)) {
    case CacheSharing::shared: return graph::ExecMount::Sharing::shared;
    case CacheSharing::priv: return graph::ExecMount::Sharing::private_;
    case CacheSharing::locked: return graph::ExecMount::Sharing::locked;
  }
  return graph::ExecMount::Sharing::shared;
}

// What converted stages leave for the ones after them.
struct StageOutcome {
  OpIndex state = 0;
  ImageConfig config;
  std::vector<std::string> state_env;
  std::optional<size_t> last_step;  // classic: the index of the stage's last step
};

// Writes ops into one graph for a whole Dockerfile: sources are shared by every stage.
class GraphWriter {
 public:
  explicit GraphWriter(const ConvertOptions& options) : options_(options) {}

  graph::Graph& graph() { return graph_; }

  OpIndex scratch() { return graph_.add(graph::SourceOp{graph::SourceOp::Kind::scratch, "", "", ""}); }
  OpIndex context() { return graph_.add(graph::SourceOp{graph::SourceOp::Kind::local, "context", "", ""}); }

  // The image's config, asked once per reference and platform.
  std::optional<graph::ResolvedImage> resolve(const std::string& image, const Platform& platform) {
    if (!options_.resolve_image) return std::nullopt;
    std::string key = image + "\n" + platform.format();
    auto it = resolved_.find(key);
    if (it == resolved_.end()) it = resolved_.emplace(key, options_.resolve_image(image, platform.format())).first;
    return it->second;
  }

  OpIndex image(const std::string& reference, const Platform& platform, graph::OpMetadata metadata = {}) {
    std::optional<graph::ResolvedImage> resolved = resolve(reference, platform);
    graph::SourceOp source{graph::SourceOp::Kind::image, image::normalize_reference(reference),
                           resolved ? resolved->digest : "", platform.format()};
    return graph_.add(std::move(source), std::move(metadata));
  }

 private:
  const ConvertOptions& options_;
  graph::Graph graph_;
  std::map<std::string, std::optional<graph::ResolvedImage>> resolved_;
};

class StageConverter {
 public:
  // `steps`: where a classic build's steps are listed (null otherwise).
  StageConverter(GraphWriter& writer, const ResolvedDockerfile& resolved, const std::map<size_t, StageOutcome>& done,
                 const ConvertOptions& options, const ShellLexer& lexer, std::vector<graph::Step>* steps)
      : writer_(writer), resolved_(resolved), done_(done), options_(options), lexer_(lexer), steps_(steps) {}

  StageOutcome convert(const ResolvedStage& stage) {
    StageOutcome out;
    platform_ = stage.platform;
    ignore_cache_ = options_.no_cache ||
                    std::find(options_.no_cache_filter.begin(), options_.no_cache_filter.end(), stage.name) !=
                        options_.no_cache_filter.end();
    total_ = (stage.base_stage || is_scratch(stage.base_name)) ? 0 : 1;
    for (const Instruction& i : stage.commands) {
      if (std::holds_alternative<CopyInstruction>(i.body) || std::holds_alternative<RunInstruction>(i.body) ||
          std::holds_alternative<WorkdirInstruction>(i.body)) {
        ++total_;
      }
    }
    index_ = 0;
    stage_name_ = stage.display_name;
    start(stage, out);
    add_from_step(stage, out);
    for (size_t n = 0; n < stage.commands.size(); ++n) {
      OpIndex before = out.state;
      try {
        if (steps_) refuse_buildkit_only(stage.commands[n]);
        dispatch(out, stage.commands[n], n < stage.onbuild_count);
      } catch (const Error& e) {
        throw e.at(stage.commands[n].lines);
      }
      graph::Step::Kind kind = out.state == before ? graph::Step::Kind::metadata : graph::Step::Kind::op;
      if (n < stage.onbuild_count) {
        add_trigger(kind, stage.commands[n].original, out);
      } else {
        add_step(kind, stage.commands[n].original, out);
      }
    }
    return out;
  }

 private:
  static bool is_scratch(const std::string& image) { return image == "scratch"; }

  void add_step(graph::Step::Kind kind, const std::string& text, StageOutcome& out) {
    if (!steps_) return;
    graph::Step step;
    step.kind = kind;
    step.text = text;
    step.state = out.state;
    steps_->push_back(std::move(step));
    out.last_step = steps_->size() - 1;
  }

  // A base's ONBUILD trigger runs as part of FROM: the classic builder numbers no step for it.
  void add_trigger(graph::Step::Kind kind, const std::string& text, StageOutcome& out) {
    if (!steps_) return;
    graph::Step& from = steps_->back();
    from.triggers.push_back(graph::Step{kind, text, out.state, "", {}, {}});
    from.state = out.state;
  }

  void add_from_step(const ResolvedStage& stage, StageOutcome& out) {
    if (!steps_) return;
    add_step(graph::Step::Kind::from, stage.original, out);
    if (stage.base_stage) {
      steps_->back().base_step = done_stage(*stage.base_stage).last_step;
    } else if (const auto* source = std::get_if<graph::SourceOp>(&writer_.graph().op(out.state).body)) {
      steps_->back().base_image = source->pinned;
    }
  }

  // The stage's base: its tree and the config it starts from.
  void start(const ResolvedStage& stage, StageOutcome& out) {
    if (stage.base_stage) {
      const StageOutcome& base = done_stage(*stage.base_stage);
      out = base;
      out.config.onbuild.clear();  // ONBUILD triggers do not carry over from a base stage
      return;
    }
    if (is_scratch(stage.base_name)) {
      out.state = writer_.scratch();
      out.config.working_dir = "/";  // BuildKit's empty image config
    } else {
      graph::OpMetadata metadata;
      metadata.name = prefix("FROM " + image::normalize_reference(stage.base_name), false);  // checked already
      metadata.lines = stage.lines;
      if (auto resolved = writer_.resolve(stage.base_name, stage.platform)) out.config = resolved->config;
      out.config.onbuild.clear();  // the image's triggers ran first in this stage; they do not carry on
      out.state = writer_.image(stage.base_name, stage.platform, std::move(metadata));
    }
    out.config.os = stage.platform.os;
    out.config.architecture = stage.platform.architecture;
    out.config.variant = stage.platform.variant;
    if (!get_env(out.config.env, "PATH")) out.config.env.push_back(std::string("PATH=") + kDefaultPath);
    out.state_env = out.config.env;
  }

  const StageOutcome& done_stage(size_t index) const {
    auto it = done_.find(index);
    if (it == done_.end()) throw Error(ErrorKind::internal, "stage " + std::to_string(index) + " converted out of order");
    return it->second;
  }

  // BuildKit's prefixCommand: "[name i/total] text" for steps that make vertices.
  std::string prefix(const std::string& text, bool onbuild) {
    if (total_ == 0) return text;
    std::string out = "[";
    if (options_.multi_platform) out += platform_.format() + " ";
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
  std::string display_text(const Instruction& instruction, const std::vector<std::string>& state_env) const {
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

  static void history(ImageConfig& config, const std::string& created_by, bool layer) {
    config.history.push_back({created_by, kHistoryComment, !layer});
  }

  std::vector<std::string> with_shell(const ImageConfig& config, const std::vector<std::string>& args) const {
    std::vector<std::string> out = config.shell.empty() ? std::vector<std::string>{"/bin/sh", "-c"} : config.shell;
    std::string joined;
    for (size_t i = 0; i < args.size(); ++i) joined += (i ? " " : "") + args[i];
    out.push_back(joined);
    return out;
  }

  // The metadata of the op a step makes.
  graph::OpMetadata step_metadata(const Instruction& instruction, const std::vector<std::string>& state_env, bool onbuild) {
    return graph::OpMetadata{prefix(display_text(instruction, state_env), onbuild), instruction.lines, ignore_cache_};
  }

  // Ops a step makes besides its own: part of its vertex.
  graph::OpMetadata helper_metadata() const { return graph::OpMetadata{"", std::nullopt, ignore_cache_}; }

  static std::string working_dir(const ImageConfig& config) {
    return config.working_dir.empty() ? "/" : config.working_dir;
  }

  void dispatch(StageOutcome& out, const Instruction& instruction, bool onbuild) {
    ImageConfig& config = out.config;
    std::vector<std::string>& state_env = out.state_env;
    std::visit(
        [&](const auto& body) {
          using T = std::decay_t<decltype(body)>;
          if constexpr (std::is_same_v<T, EnvInstruction>) {
            std::string message = "ENV";
            for (const auto& kv : body.env) {
              message += " " + kv.key + "=" + kv.value;
              add_env(state_env, kv.key, kv.value);
              add_env(config.env, kv.key, kv.value);
            }
            history(config, message, false);
          } else if constexpr (std::is_same_v<T, ArgInstruction>) {
            std::string message = "ARG";
            for (const auto& arg : body.args) {
              build_args_.emplace_back(arg.key, arg.value.value_or(""));
              message += " " + arg.key + (arg.value ? "=" + *arg.value : "");
              if (arg.value) add_env(state_env, arg.key, *arg.value);
            }
            history(config, message, false);
          } else if constexpr (std::is_same_v<T, LabelInstruction>) {
            std::string message = "LABEL";
            for (const auto& kv : body.labels) {
              config.labels[kv.key] = kv.value;
              message += " " + kv.key + "=" + kv.value;
            }
            history(config, message, false);
          } else if constexpr (std::is_same_v<T, MaintainerInstruction>) {
            config.author = body.maintainer;
            history(config, "MAINTAINER " + body.maintainer, false);
          } else if constexpr (std::is_same_v<T, CmdInstruction>) {
            std::vector<std::string> args = body.command.prepend_shell ? with_shell(config, body.command.args) : body.command.args;
            config.cmd = args;
            config.args_escaped = true;
            cmd_set_ = true;
            history(config, "CMD " + quoted_list(args), false);
          } else if constexpr (std::is_same_v<T, EntrypointInstruction>) {
            std::vector<std::string> args = body.command.prepend_shell ? with_shell(config, body.command.args) : body.command.args;
            config.entrypoint = args;
            if (!cmd_set_) config.cmd.reset();
            history(config, "ENTRYPOINT " + quoted_list(args), false);
          } else if constexpr (std::is_same_v<T, HealthcheckInstruction>) {
            config.healthcheck = graph::Healthcheck{body.test, body.interval_ns, body.timeout_ns, body.start_period_ns,
                                                    body.start_interval_ns, body.retries};
            history(config,
                    "HEALTHCHECK {Test:" + plain_list(body.test) + " Interval:" + format_duration_go(body.interval_ns) +
                        " Timeout:" + format_duration_go(body.timeout_ns) + " StartPeriod:" +
                        format_duration_go(body.start_period_ns) + " StartInterval:" +
                        format_duration_go(body.start_interval_ns) + " Retries:" + std::to_string(body.retries) + "}",
                    false);
          } else if constexpr (std::is_same_v<T, UserInstruction>) {
            config.user = body.user;
            history(config, "USER " + body.user, false);
          } else if constexpr (std::is_same_v<T, VolumeInstruction>) {
            for (const auto& v : body.volumes) config.volumes.insert(v);
            history(config, "VOLUME " + plain_list(body.volumes), false);
          } else if constexpr (std::is_same_v<T, StopSignalInstruction>) {
            config.stop_signal = body.signal;
            history(config, "STOPSIGNAL " + body.signal, false);
          } else if constexpr (std::is_same_v<T, ShellInstruction>) {
            config.shell = body.shell;
            history(config, "SHELL " + plain_list(body.shell), false);
          } else if constexpr (std::is_same_v<T, ExposeInstruction>) {
            std::vector<std::string> ports = parse_ports(body.ports);
            for (const auto& p : ports) config.exposed_ports.insert(p);
            history(config, "EXPOSE " + plain_list(ports), false);
          } else if constexpr (std::is_same_v<T, OnbuildInstruction>) {
            config.onbuild.push_back(body.expression);
          } else if constexpr (std::is_same_v<T, WorkdirInstruction>) {
            config.working_dir = join_path(working_dir(config), body.path);
            if (config.working_dir != "/") {
              graph::MkdirAction mkdir{config.working_dir, 0755, config.user, true};
              out.state = writer_.graph().add(graph::FileOp{out.state, {mkdir}},
                                              step_metadata(instruction, state_env, onbuild));
              history(config, "WORKDIR " + config.working_dir, true);
            } else {
              history(config, "WORKDIR /", false);
            }
          } else if constexpr (std::is_same_v<T, CopyInstruction>) {
            dispatch_copy(out, instruction, body, onbuild);
          } else if constexpr (std::is_same_v<T, RunInstruction>) {
            dispatch_run(out, instruction, body, onbuild);
          } else {
            static_assert(std::is_same_v<T, FromHeader>);
          }
        },
        instruction.body);
  }

  void dispatch_copy(StageOutcome& out, const Instruction& instruction, const CopyInstruction& copy, bool onbuild) {
    if (!copy.checksum.empty()) throw Error(ErrorKind::user, "ADD --checksum needs a URL source, which is not supported yet");
    graph::OpMetadata metadata = step_metadata(instruction, out.state_env, onbuild);
    auto copy_action = [&](OpIndex source, std::vector<std::string> paths, bool unpack) {
      graph::CopyAction action;
      action.source = source;
      action.paths = std::move(paths);
      action.dest = copy.dest;
      action.cwd = working_dir(out.config);
      action.chown = copy.chown;
      action.chmod = copy.chmod;
      action.parents = copy.parents;
      action.excludes = copy.excludes;
      action.unpack = unpack;
      action.verb = copy.is_add ? "ADD" : "COPY";
      action.classic = options_.classic;
      return graph::FileAction(std::move(action));
    };
    std::vector<graph::FileAction> actions;
    if (!copy.sources.empty()) {
      OpIndex source = copy.from.empty() ? writer_.context() : source_named(copy.from);
      actions.push_back(copy_action(source, copy.sources, copy.is_add && copy.unpack.value_or(true)));
    }
    if (!copy.inline_sources.empty()) {
      // Heredocs become files of a tree of their own, copied like any source.
      graph::FileOp files{writer_.scratch(), {}};
      std::vector<std::string> names;
      for (const auto& source : copy.inline_sources) {
        if (source.path.find('/') != std::string::npos || source.path == "." || source.path == "..") {
          throw Error(ErrorKind::user, "invalid heredoc name " + source.path);
        }
        files.actions.push_back(graph::MkfileAction{"/" + source.path, source.data, 0644});
        names.push_back(source.path);
      }
      actions.push_back(copy_action(writer_.graph().add(std::move(files), helper_metadata()), names, false));
    }
    std::string message = copy.is_add ? "ADD" : "COPY";
    if (copy.parents) message += " --parents";
    if (!copy.chown.empty()) message += " --chown=" + copy.chown;
    if (!copy.chmod.empty()) message += " --chmod=" + copy.chmod;
    for (const auto& src : copy.sources) message += " " + src;
    for (const auto& src : copy.inline_sources) message += " <<" + src.path;
    message += " " + copy.dest;
    history(out.config, message + " # buildkit", true);

    if (!copy.link) {
      out.state = writer_.graph().add(graph::FileOp{out.state, std::move(actions)}, std::move(metadata));
      return;
    }
    // --link: the copy is made on nothing and merged onto the stage, so that it does not
    // depend on what is below it; --chown names still come from the stage.
    for (graph::FileAction& action : actions) std::get<graph::CopyAction>(action).names = out.state;
    OpIndex layer = writer_.graph().add(graph::FileOp{writer_.scratch(), std::move(actions)}, helper_metadata());
    out.state = writer_.graph().add(graph::MergeOp{{out.state, layer}}, std::move(metadata));
  }

  void dispatch_run(StageOutcome& out, const Instruction& instruction, const RunInstruction& run, bool onbuild) {
    ImageConfig& config = out.config;
    graph::OpMetadata metadata = step_metadata(instruction, out.state_env, onbuild);
    RunCommand command = run_command(run.command, config.shell);
    graph::ExecOp exec;
    exec.rootfs = out.state;
    exec.argv = command.argv;
    exec.env = out.state_env;
    exec.cwd = working_dir(config);
    exec.user = config.user;
    exec.network = run.network == "host"   ? graph::ExecOp::Network::host
                   : run.network == "none" ? graph::ExecOp::Network::none
                                           : graph::ExecOp::Network::sandbox;
    exec.insecure = run.security == "insecure";
    if (command.script) {
      // A heredoc with a shebang runs as a file, from a tree of its own at /dev/pipes.
      graph::FileOp script{writer_.scratch(), {graph::MkfileAction{"/" + command.script->name, command.script->content, 0755}}};
      graph::ExecMount mount;
      mount.input = writer_.graph().add(std::move(script), helper_metadata());
      mount.target = "/dev/pipes";
      exec.mounts.push_back(std::move(mount));
    }
    int ssh_mounts = 0;
    for (const RunMount& m : run.mounts) {
      graph::ExecMount mount = exec_mount(m, exec.cwd);
      if (m.type == MountType::ssh && mount.target.empty()) {
        mount.target = "/run/buildkit/ssh_agent." + std::to_string(ssh_mounts);
      }
      // As BuildKit's llb does: the first agent socket is SSH_AUTH_SOCK unless one is set.
      if (m.type == MountType::ssh && ssh_mounts++ == 0 && !get_env(exec.env, "SSH_AUTH_SOCK")) {
        exec.env.push_back("SSH_AUTH_SOCK=" + mount.target);
      }
      exec.mounts.push_back(std::move(mount));
    }
    out.state = writer_.graph().add(std::move(exec), std::move(metadata));
    history(config, "RUN " + run_command_string(command.argv, out.state_env) + " # buildkit", true);
  }

  graph::ExecMount exec_mount(const RunMount& m, const std::string& cwd) {
    graph::ExecMount mount;
    mount.type = mount_type(m.type);
    mount.target = mount_target(cwd, m.target);
    mount.selector = m.source;
    mount.read_only = m.read_only;
    mount.tmpfs_size = m.size_limit;
    mount.cache_id = m.cache_id;
    mount.sharing = mount_sharing(m.sharing);
    mount.mode = m.mode;
    mount.uid = m.uid;
    mount.gid = m.gid;
    if (m.type == MountType::cache && !m.from.empty()) {
      throw Error(ErrorKind::user, "RUN --mount=type=cache,from= is not supported by this version of kbuild");
    }
    if (m.type == MountType::bind) mount.input = m.from.empty() ? writer_.context() : source_named(m.from);
    if (m.type == MountType::secret) secret_mount(m, cwd, mount);
    if (m.type == MountType::ssh) {
      mount.cache_id = m.cache_id.empty() ? "default" : m.cache_id;
      mount.target = m.target.empty() ? "" : mount_target(cwd, m.target);
      mount.required = m.required;
    }
    return mount;
  }

  // BuildKit's defaults: the id is source= or id=, else the target's base name; the target is
  // /run/secrets/<id> unless env= alone asks for a variable.
  static void secret_mount(const RunMount& m, const std::string& cwd, graph::ExecMount& mount) {
    std::string id = !m.source.empty() ? m.source : m.cache_id;
    if (id.empty()) id = go_path_base(m.target);
    std::string target = m.target;
    if (target.empty() && !m.env) target = "/run/secrets/" + go_path_base(id);
    mount.cache_id = id;
    mount.selector.clear();
    mount.target = target.empty() ? "" : mount_target(cwd, target);
    mount.required = m.required;
    mount.env = m.env;
  }

  // What a --from= (of COPY, or of a RUN mount) names: a stage, by index or name, else an image.
  OpIndex source_named(const std::string& from) {
    bool numeric = std::all_of(from.begin(), from.end(), [](char c) { return c >= '0' && c <= '9'; });
    for (const auto& s : resolved_.stages) {
      if ((numeric && std::to_string(s.index) == from) || (!s.name.empty() && s.name == lower(from))) {
        return done_stage(s.index).state;
      }
    }
    return writer_.image(from, platform_);
  }

  static std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

  GraphWriter& writer_;
  const ResolvedDockerfile& resolved_;
  const std::map<size_t, StageOutcome>& done_;
  const ConvertOptions& options_;
  const ShellLexer& lexer_;
  std::vector<graph::Step>* steps_;
  Platform platform_;
  bool ignore_cache_ = false;
  size_t total_ = 0;
  size_t index_ = 0;
  std::string stage_name_;
  std::vector<std::pair<std::string, std::string>> build_args_;  // the stage's ARGs, in order
  bool cmd_set_ = false;
};

}  // namespace

graph::Definition convert_dockerfile(std::string_view dockerfile_text, const ConvertOptions& options) {
  if (dockerfile_text.empty()) throw Error(ErrorKind::user, "the Dockerfile cannot be empty");
  ParsedDockerfile parsed = parse_dockerfile(dockerfile_text);
  choose_frontend(parsed, options.resolve.build_args);
  Dockerfile dockerfile = parse_stages(parsed);
  if (options.classic) {
    for (const Stage& stage : dockerfile.stages) {
      for (const Instruction& instruction : stage.commands) refuse_unknown_syntax(instruction);
    }
    check_classic_target(dockerfile, options.resolve.target);
  }
  GraphWriter writer(options);
  ResolveOptions resolve = options.resolve;
  resolve.every_stage_to_target = options.classic;
  if (options.resolve_image && !resolve.image_env) {
    resolve.image_env = [&](const std::string& image, const Platform& platform) {
      auto resolved = writer.resolve(check_base_name(image), platform);
      return resolved ? resolved->config.env : std::vector<std::string>{};
    };
  }
  if (options.resolve_image && !resolve.image_onbuild) {
    resolve.image_onbuild = [&](const std::string& image, const Platform& platform) {
      auto resolved = writer.resolve(check_base_name(image), platform);
      return resolved ? resolved->config.onbuild : std::vector<std::string>{};
    };
  }
  ResolvedDockerfile resolved = resolve_dockerfile(parsed, dockerfile, resolve);
  check_image_names(resolved);

  ShellLexer lexer(parsed.escape_token);
  graph::Definition definition;
  std::vector<graph::Step>* steps = options.classic ? &definition.steps : nullptr;
  if (steps) {
    for (const Instruction& arg : dockerfile.meta_args) {
      steps->push_back({graph::Step::Kind::global_arg, arg.original, 0, "", {}, {}});
    }
  }
  std::map<size_t, StageOutcome> done;
  for (const ResolvedStage& stage : resolved.stages) {
    if (!stage.reachable) continue;
    StageConverter converter(writer, resolved, done, options, lexer, steps);
    done[stage.index] = converter.convert(stage);
  }
  StageOutcome& target = done.at(resolved.stages[resolved.target].index);
  if (steps) {
    for (const auto& [key, value] : options.labels) {
      target.config.labels[key] = value;
      steps->push_back({graph::Step::Kind::metadata, "LABEL " + key + "=" + value, target.state, "", {}, {}});
    }
  }
  definition.unused_build_args = resolved.unused_build_args;
  definition.root = target.state;
  definition.config = target.config;
  definition.graph = std::move(writer.graph());
  return definition;
}

}  // namespace kbuild::dockerfile
