#include "engine/dockerfile/instructions.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>
#include <regex>

#include "engine/dockerfile/go_values.h"
#include "engine/dockerfile/suggest.h"

namespace kbuild::dockerfile {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trim(std::string_view s) {
  size_t begin = 0, end = s.size();
  while (begin < end && std::isspace(static_cast<unsigned char>(s[begin]))) ++begin;
  while (end > begin && std::isspace(static_cast<unsigned char>(s[end - 1]))) --end;
  return std::string(s.substr(begin, end - begin));
}

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::user, message); }

// The instruction name as the user spelt it: errors quote it that way.
std::string node_keyword_as_written(const Node& node) {
  std::string text = trim(node.original);
  size_t end = 0;
  while (end < text.size() && !std::isspace(static_cast<unsigned char>(text[end]))) ++end;
  return end ? text.substr(0, end) : upper(node.keyword);
}

// Instruction flags ("--name=value"), declared per instruction and checked as BuildKit's BFlags.
class InstructionFlags {
 public:
  enum class Type { boolean, string, strings };
  struct Flag {
    Type type;
    std::string value;                // booleans hold "true"/"false"
    std::vector<std::string> values;  // strings
    bool used = false;
  };

  explicit InstructionFlags(const std::vector<std::string>& args) : args_(args) {}

  Flag& add_bool(const std::string& name, bool def) { return add(name, Type::boolean, def ? "true" : "false"); }
  Flag& add_string(const std::string& name, const std::string& def = "") { return add(name, Type::string, def); }
  Flag& add_strings(const std::string& name) { return add(name, Type::strings, ""); }

  void parse() {
    for (const std::string& arg : args_) {
      if (arg == "--") return;
      if (arg.rfind("--", 0) != 0) fail("arg should start with -- : " + arg);
      size_t eq = arg.find('=');
      bool has_value = eq != std::string::npos;
      std::string flag_name = arg.substr(0, eq);
      std::string value = has_value ? arg.substr(eq + 1) : "";
      std::string name = flag_name.substr(2);
      auto it = flags_.find(name);
      if (it == flags_.end()) {
        std::vector<std::string> names;
        for (const auto& [known, _] : flags_) names.push_back(known);
        fail(with_suggestion("unknown flag: " + flag_name, name, names, true));
      }
      Flag& flag = it->second;
      if (flag.used && flag.type != Type::strings) fail("duplicate flag specified: " + flag_name);
      flag.used = true;
      used_.push_back(name);
      switch (flag.type) {
        case Type::boolean: {
          if (has_value && value.empty()) fail("missing a value on flag: " + flag_name);
          std::string v = lower(value);
          if (v == "true" || v.empty()) {
            flag.value = "true";
          } else if (v == "false") {
            flag.value = "false";
          } else {
            fail("expecting boolean value for flag " + flag_name + ", not: " + value);
          }
          break;
        }
        case Type::string:
          if (!has_value) fail("missing a value on flag: " + flag_name);
          flag.value = value;
          break;
        case Type::strings:
          if (!has_value) fail("missing a value on flag: " + flag_name);
          flag.values.push_back(value);
          break;
      }
    }
  }

  const std::vector<std::string>& used() const { return used_; }

 private:
  Flag& add(const std::string& name, Type type, std::string def) {
    return flags_.emplace(name, Flag{type, std::move(def), {}, false}).first->second;
  }

  const std::vector<std::string>& args_;
  std::map<std::string, Flag> flags_;
  std::vector<std::string> used_;
};

std::string err_at_least_one(const std::string& cmd) { return cmd + " requires at least one argument"; }
std::string err_exactly_one(const std::string& cmd) { return cmd + " requires exactly one argument"; }
std::string err_no_destination(const std::string& cmd) {
  return cmd + " requires at least two arguments, but only one was provided. Destination could not be determined";
}

// The arguments of a node as BuildKit's nodeArgs gives them: ONBUILD's sub-instruction
// contributes its keyword followed by its own arguments.
std::vector<std::string> node_args(const Node& node) {
  if (node.inner.empty()) return node.args;
  std::vector<std::string> out{node.inner.front().keyword};
  std::vector<std::string> rest = node_args(node.inner.front());
  out.insert(out.end(), rest.begin(), rest.end());
  return out;
}

std::vector<KeyValue> parse_key_values(const std::vector<std::string>& args, const std::string& cmd) {
  if (args.empty()) fail(err_at_least_one(cmd));
  if (args.size() % 3 != 0) fail("Bad input to " + cmd + ", too many arguments");
  std::vector<KeyValue> out;
  for (size_t i = 0; i < args.size(); i += 3) {
    if (args[i].empty()) fail(cmd + " names can not be blank");
    out.push_back(KeyValue{args[i], args[i + 1], args[i + 2].empty()});
  }
  return out;
}

CommandLine command_line(const Node& node, bool empty_as_nil) {
  CommandLine line;
  for (const Heredoc& doc : node.heredocs) line.files.push_back({doc.name, doc.content, doc.chomp});
  line.prepend_shell = !node.json_form;
  if (node.json_form) {
    line.args = node.args;
  } else if (!node.args.empty()) {
    std::string joined;
    for (size_t i = 0; i < node.args.size(); ++i) joined += (i ? " " : "") + node.args[i];
    line.args.push_back(joined);
  }
  (void)empty_as_nil;  // an empty ENTRYPOINT and a missing one are both "no entrypoint" here
  return line;
}

CopyInstruction sources_and_dest(const Node& node, const std::string& cmd) {
  CopyInstruction copy;
  copy.dest = node.args.back();
  if (parse_heredoc_word(copy.dest)) fail(cmd + " cannot accept a heredoc as a destination");
  for (size_t i = 0; i + 1 < node.args.size(); ++i) {
    const std::string& src = node.args[i];
    if (auto doc = parse_heredoc_word(src)) {
      std::string content;
      for (const Heredoc& h : node.heredocs) {
        if (h.name == doc->name) content = h.content;
      }
      if (doc->chomp) content = chomp_heredoc_content(content);
      copy.inline_sources.push_back({doc->name, content, doc->expand});
    } else {
      copy.sources.push_back(src);
    }
  }
  return copy;
}

InstructionBody parse_copy(const Node& node, bool is_add) {
  const std::string cmd = is_add ? "ADD" : "COPY";
  if (node.args.size() < 2) fail(err_no_destination(cmd));
  InstructionFlags flags(node.flags);
  auto& chown = flags.add_string("chown");
  auto& chmod = flags.add_string("chmod");
  auto& link = flags.add_bool("link", false);
  auto& excludes = flags.add_strings("exclude");
  InstructionFlags::Flag* from = nullptr;
  InstructionFlags::Flag* parents = nullptr;
  InstructionFlags::Flag* keep_git_dir = nullptr;
  InstructionFlags::Flag* checksum = nullptr;
  InstructionFlags::Flag* unpack = nullptr;
  if (is_add) {
    keep_git_dir = &flags.add_bool("keep-git-dir", false);
    checksum = &flags.add_string("checksum");
    unpack = &flags.add_bool("unpack", false);
  } else {
    from = &flags.add_string("from");
    parents = &flags.add_bool("parents", false);
  }
  flags.parse();
  CopyInstruction copy = sources_and_dest(node, cmd);
  copy.is_add = is_add;
  copy.chown = chown.value;
  copy.chmod = chmod.value;
  copy.link = link.value == "true";
  copy.excludes = excludes.values;
  if (is_add) {
    copy.checksum = checksum->value;
    if (keep_git_dir->used) copy.keep_git_dir = keep_git_dir->value == "true";
    if (unpack->used) copy.unpack = unpack->value == "true";
  } else {
    copy.from = from->value;
    copy.parents = parents->value == "true";
  }
  return copy;
}

InstructionBody parse_from(const Node& node) {
  const auto& args = node.args;
  FromHeader from;
  if (args.size() == 3 && lower(args[1]) == "as") {
    from.stage_name = lower(args[2]);
    static const std::regex valid("^[a-z][a-z0-9-_.]*$");
    if (!std::regex_match(from.stage_name, valid)) {
      fail("invalid name for build stage: " + go_quote(args[2]) +
           ", name can't start with a number or contain symbols");
    }
  } else if (args.size() != 1) {
    fail("FROM requires either one or three arguments");
  }
  InstructionFlags flags(node.flags);
  auto& platform = flags.add_string("platform");
  flags.parse();
  from.base_name = args[0];
  from.platform = platform.value;
  return from;
}

InstructionBody parse_onbuild(const Node& node) {
  std::vector<std::string> args = node_args(node);
  if (args.empty()) fail(err_at_least_one("ONBUILD"));
  InstructionFlags(node.flags).parse();
  std::string trigger = upper(trim(args[0]));
  if (trigger == "ONBUILD") fail("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
  if (trigger == "MAINTAINER" || trigger == "FROM") fail(trigger + " isn't allowed as an ONBUILD trigger");
  static const std::regex prefix(R"(^\s*ONBUILD\s*)", std::regex::icase);
  std::string expression = std::regex_replace(node.original, prefix, "", std::regex_constants::format_first_only);
  for (const Heredoc& doc : node.inner.empty() ? node.heredocs : node.inner.front().heredocs) {
    expression += "\n" + doc.content + doc.name;
  }
  return OnbuildInstruction{expression};
}

InstructionBody parse_run(const Node& node) {
  InstructionFlags flags(node.flags);
  auto& mount = flags.add_strings("mount");
  auto& network = flags.add_string("network", "default");
  auto& security = flags.add_string("security", "sandbox");
  flags.parse();
  RunInstruction run;
  run.flags_used = flags.used();
  run.command = command_line(node, false);
  run.mount_specs = mount.values;
  for (const std::string& spec : run.mount_specs) run.mounts.push_back(parse_run_mount(spec, nullptr));
  if (network.value != "default" && network.value != "none" && network.value != "host") {
    fail("invalid network mode " + go_quote(network.value));
  }
  if (security.value != "sandbox" && security.value != "insecure") {
    fail("security " + go_quote(security.value) + " is not valid");
  }
  run.network = network.value;
  run.security = security.value;
  return run;
}

int64_t parse_interval(const InstructionFlags::Flag& flag, const std::string& name) {
  if (flag.value.empty()) return 0;
  int64_t ns = parse_go_duration(flag.value);
  if (ns == 0) return 0;
  if (ns < 1000000) fail("Interval \"" + name + "\" cannot be less than 1ms");
  return ns;
}

InstructionBody parse_healthcheck(const Node& node) {
  if (node.args.empty()) fail(err_at_least_one("HEALTHCHECK"));
  HealthcheckInstruction health;
  std::string type = upper(node.args[0]);
  std::vector<std::string> rest(node.args.begin() + 1, node.args.end());
  if (type == "NONE") {
    if (!rest.empty()) fail("HEALTHCHECK NONE takes no arguments");
    health.test = {type};
    return health;
  }
  InstructionFlags flags(node.flags);
  auto& interval = flags.add_string("interval");
  auto& timeout = flags.add_string("timeout");
  auto& start_period = flags.add_string("start-period");
  auto& start_interval = flags.add_string("start-interval");
  auto& retries = flags.add_string("retries");
  flags.parse();
  if (type != "CMD") fail("Unknown type " + go_quote(type) + " in HEALTHCHECK (try CMD)");
  std::vector<std::string> command;
  if (node.json_form) {
    command = rest;
  } else if (!rest.empty()) {
    std::string joined;
    for (size_t i = 0; i < rest.size(); ++i) joined += (i ? " " : "") + rest[i];
    command.push_back(joined);
  }
  if (command.empty()) fail("Missing command after HEALTHCHECK CMD");
  health.test.push_back(node.json_form ? "CMD" : "CMD-SHELL");
  health.test.insert(health.test.end(), command.begin(), command.end());
  health.interval_ns = parse_interval(interval, "interval");
  health.timeout_ns = parse_interval(timeout, "timeout");
  health.start_period_ns = parse_interval(start_period, "start-period");
  health.start_interval_ns = parse_interval(start_interval, "start-interval");
  if (!retries.value.empty()) {
    int64_t n = parse_go_int(retries.value, 32);
    if (n < 0) fail("--retries cannot be negative (" + std::to_string(n) + ")");
    health.retries = static_cast<int>(n);
  }
  return health;
}

InstructionBody parse_arg(const Node& node) {
  if (node.args.empty()) fail(err_at_least_one("ARG"));
  ArgInstruction arg;
  for (const std::string& word : node.args) {
    ArgDefinition def;
    size_t eq = word.find('=');
    if (eq != std::string::npos) {
      if (eq == 0) fail("ARG names can not be blank");
      def.key = word.substr(0, eq);
      def.value = word.substr(eq + 1);
    } else {
      def.key = word;
    }
    arg.args.push_back(std::move(def));
  }
  return arg;
}

InstructionBody parse_body(const Node& node) {
  const std::string& k = node.keyword;
  auto exactly_one = [&](const char* name) {
    if (node.args.size() != 1) fail(err_exactly_one(name));
    InstructionFlags(node.flags).parse();
    return node.args[0];
  };
  if (k == "env") {
    InstructionFlags(node.flags).parse();
    return EnvInstruction{parse_key_values(node.args, "ENV")};
  }
  if (k == "maintainer") return MaintainerInstruction{exactly_one("MAINTAINER")};
  if (k == "label") {
    InstructionFlags(node.flags).parse();
    return LabelInstruction{parse_key_values(node.args, "LABEL")};
  }
  if (k == "add") return parse_copy(node, true);
  if (k == "copy") return parse_copy(node, false);
  if (k == "from") return parse_from(node);
  if (k == "onbuild") return parse_onbuild(node);
  if (k == "workdir") return WorkdirInstruction{exactly_one("WORKDIR")};
  if (k == "run") return parse_run(node);
  if (k == "cmd") {
    InstructionFlags(node.flags).parse();
    return CmdInstruction{command_line(node, false)};
  }
  if (k == "entrypoint") {
    InstructionFlags(node.flags).parse();
    return EntrypointInstruction{command_line(node, true)};
  }
  if (k == "healthcheck") return parse_healthcheck(node);
  if (k == "expose") {
    if (node.args.empty()) fail(err_at_least_one("EXPOSE"));
    InstructionFlags(node.flags).parse();
    std::vector<std::string> ports = node.args;
    std::sort(ports.begin(), ports.end());
    return ExposeInstruction{ports};
  }
  if (k == "user") return UserInstruction{exactly_one("USER")};
  if (k == "volume") {
    if (node.args.empty()) fail(err_at_least_one("VOLUME"));
    InstructionFlags(node.flags).parse();
    VolumeInstruction volume;
    for (const std::string& v : node.args) {
      std::string trimmed = trim(v);
      if (trimmed.empty()) fail("VOLUME specified can not be an empty string");
      volume.volumes.push_back(trimmed);
    }
    return volume;
  }
  if (k == "stopsignal") {
    if (node.args.size() != 1) fail(err_exactly_one("STOPSIGNAL"));
    return StopSignalInstruction{node.args[0]};
  }
  if (k == "arg") return parse_arg(node);
  if (k == "shell") {
    InstructionFlags(node.flags).parse();
    if (node.args.empty()) fail(err_at_least_one("SHELL"));
    if (!node.json_form) fail("SHELL requires the arguments to be in JSON form");
    return ShellInstruction{node.args};
  }
  fail(with_suggestion("unknown instruction: " + node_keyword_as_written(node), node_keyword_as_written(node),
                       instruction_names(), false));
}

}  // namespace

const std::vector<std::string>& instruction_names() {
  static const std::vector<std::string> names = {
      "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
      "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"};
  return names;
}

Instruction parse_instruction(const Node& node) {
  try {
    Instruction instruction{parse_body(node), node.keyword, trim(node.original), node.lines, node.comments_before};
    return instruction;
  } catch (const Error& e) {
    throw e.at(node.lines);
  }
}

Dockerfile parse_stages(const ParsedDockerfile& parsed) {
  Dockerfile dockerfile;
  for (const Node& node : parsed.nodes) {
    auto located = [&](const std::string& message) {
      return Error(ErrorKind::user, "dockerfile parse error on line " + std::to_string(node.lines.start_line) +
                                        ": " + message, node.lines);
    };
    Instruction instruction;
    try {
      instruction = parse_instruction(node);
    } catch (const Error& e) {
      throw located(e.what());
    }
    if (auto* from = std::get_if<FromHeader>(&instruction.body)) {
      dockerfile.stages.push_back(Stage{from->stage_name, from->base_name, from->platform, instruction.original,
                                        instruction.lines, {}});
      continue;
    }
    if (dockerfile.stages.empty()) {
      if (std::holds_alternative<ArgInstruction>(instruction.body)) {
        dockerfile.meta_args.push_back(std::move(instruction));
        continue;
      }
      throw Error(ErrorKind::user, "no build stage in current context", node.lines);
    }
    dockerfile.stages.back().commands.push_back(std::move(instruction));
  }
  return dockerfile;
}

void expand_instruction(Instruction& instruction, const ShellLexer& lexer, const VariableLookup& lookup) {
  auto word = [&](std::string& s) { s = lexer.expand_word(s, lookup); };
  auto words = [&](std::vector<std::string>& list) {
    for (std::string& s : list) word(s);
  };
  auto pairs = [&](std::vector<KeyValue>& list) {
    for (KeyValue& kv : list) {
      word(kv.key);
      word(kv.value);
    }
  };
  try {
    std::visit(
        [&](auto& body) {
          using T = std::decay_t<decltype(body)>;
          if constexpr (std::is_same_v<T, EnvInstruction>) {
            pairs(body.env);
          } else if constexpr (std::is_same_v<T, LabelInstruction>) {
            pairs(body.labels);
          } else if constexpr (std::is_same_v<T, CopyInstruction>) {
            word(body.chown);
            word(body.chmod);
            if (body.is_add) word(body.checksum);
            words(body.sources);
            word(body.dest);
            // Heredoc sources expand with quotes left alone, as a shell here-document does.
            ShellLexer raw('\\');
            raw.set_skip_process_quotes(true);
            for (auto& inline_source : body.inline_sources) {
              if (inline_source.expand) inline_source.data = raw.expand_word(inline_source.data, lookup);
            }
          } else if constexpr (std::is_same_v<T, WorkdirInstruction>) {
            word(body.path);
          } else if constexpr (std::is_same_v<T, UserInstruction>) {
            word(body.user);
          } else if constexpr (std::is_same_v<T, VolumeInstruction>) {
            words(body.volumes);
          } else if constexpr (std::is_same_v<T, StopSignalInstruction>) {
            word(body.signal);
          } else if constexpr (std::is_same_v<T, ExposeInstruction>) {
            std::vector<std::string> ports;
            for (const std::string& p : body.ports) {
              for (std::string& split : lexer.expand_words(p, lookup)) ports.push_back(std::move(split));
            }
            body.ports = std::move(ports);
          } else if constexpr (std::is_same_v<T, RunInstruction>) {
            WordExpander expander = [&](const std::string& s) { return lexer.expand_word(s, lookup); };
            body.mounts.clear();
            for (const std::string& spec : body.mount_specs) body.mounts.push_back(parse_run_mount(spec, &expander));
          }
        },
        instruction.body);
  } catch (const Error& e) {
    throw e.at(instruction.lines);
  }
}

RunCommand run_command(const CommandLine& line, const std::vector<std::string>& shell) {
  RunCommand command;
  std::vector<std::string> args = line.args;
  if (!line.files.empty()) {
    if (args.size() != 1 || !line.prepend_shell) {
      throw Error(ErrorKind::user, "parsing produced an invalid run command: " + (args.empty() ? "" : args[0]));
    }
    const CommandLine::InlineFile& first = line.files.front();
    if (parse_heredoc_word(args[0])) {
      std::string data = first.chomp ? chomp_heredoc_content(first.data) : first.data;
      if (data.rfind("#!", 0) == 0) {
        if (first.name.empty() || first.name.find('/') != std::string::npos || first.name == "." ||
            first.name == "..") {
          throw Error(ErrorKind::user, "invalid heredoc name " + first.name);
        }
        command.script = RunCommand::Script{first.name, std::move(data)};
        args = {"/dev/pipes/" + first.name};
      } else {
        args = {std::move(data)};
      }
    } else {
      std::string full = args[0];
      for (const auto& file : line.files) full += "\n" + file.data + file.name;
      args = {std::move(full)};
    }
  }
  if (!line.prepend_shell) {
    command.argv = std::move(args);
    return command;
  }
  command.argv = shell.empty() ? std::vector<std::string>{"/bin/sh", "-c"} : shell;
  std::string joined;
  for (size_t i = 0; i < args.size(); ++i) joined += (i ? " " : "") + args[i];
  command.argv.push_back(std::move(joined));
  return command;
}

}  // namespace kbuild::dockerfile
