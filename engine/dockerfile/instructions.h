// Typed Dockerfile instructions: what each parsed line means, with its flags checked the way
// BuildKit's instructions package checks them. Expansion of variables happens later, per stage.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/error.h"
#include "engine/dockerfile/parser.h"
#include "engine/dockerfile/run_mount.h"
#include "engine/dockerfile/shell_lexer.h"

namespace kbuild::dockerfile {

// ENV and LABEL pairs. `legacy_form` is "ENV key value" (no '=').
struct KeyValue {
  std::string key;
  std::string value;
  bool legacy_form = false;
  bool operator==(const KeyValue&) const = default;
};

// One name of an ARG line, with its default if it has one.
struct ArgDefinition {
  std::string key;
  std::optional<std::string> value;
  bool operator==(const ArgDefinition&) const = default;
};

// A RUN/CMD/ENTRYPOINT command line: exec form, or shell form to run through SHELL.
struct CommandLine {
  std::vector<std::string> args;  // shell form: one element, the whole line
  bool prepend_shell = true;      // false for the JSON (exec) form
  struct InlineFile {             // heredoc bodies of a RUN
    std::string name;
    std::string data;
    bool chomp = false;
  };
  std::vector<InlineFile> files;
};

struct FromHeader {  // FROM: starts a stage
  std::string base_name;
  std::string stage_name;  // lower-cased; empty when there is no AS
  std::string platform;    // --platform, unexpanded
};
struct RunInstruction {
  CommandLine command;
  std::vector<std::string> mount_specs;  // --mount values as written; parsed after expansion
  std::vector<RunMount> mounts;
  std::string network = "default";  // default | none | host
  std::string security = "sandbox";  // sandbox | insecure
  std::vector<std::string> flags_used;
};
struct CmdInstruction {
  CommandLine command;
};
struct EntrypointInstruction {
  CommandLine command;
};
struct EnvInstruction {
  std::vector<KeyValue> env;
};
struct LabelInstruction {
  std::vector<KeyValue> labels;
};
struct MaintainerInstruction {
  std::string maintainer;
};
// COPY and ADD.
struct CopyInstruction {
  bool is_add = false;
  std::vector<std::string> sources;
  struct InlineSource {  // a heredoc used as a source file
    std::string path;
    std::string data;
    bool expand = true;
  };
  std::vector<InlineSource> inline_sources;
  std::string dest;
  std::string from;  // COPY --from
  std::string chown;
  std::string chmod;
  bool link = false;
  bool parents = false;  // COPY --parents
  std::vector<std::string> excludes;
  std::string checksum;               // ADD --checksum
  std::optional<bool> keep_git_dir;   // ADD --keep-git-dir
  std::optional<bool> unpack;         // ADD --unpack
};
struct WorkdirInstruction {
  std::string path;
};
struct UserInstruction {
  std::string user;
};
struct VolumeInstruction {
  std::vector<std::string> volumes;
};
struct ExposeInstruction {
  std::vector<std::string> ports;
};
struct StopSignalInstruction {
  std::string signal;
};
struct ArgInstruction {
  std::vector<ArgDefinition> args;
};
struct ShellInstruction {
  std::vector<std::string> shell;
};
struct HealthcheckInstruction {
  std::vector<std::string> test;  // {"NONE"}, {"CMD", ...} or {"CMD-SHELL", line}
  int64_t interval_ns = 0, timeout_ns = 0, start_period_ns = 0, start_interval_ns = 0;
  int retries = 0;
};
struct OnbuildInstruction {
  std::string expression;  // the trigger as written, without "ONBUILD"
};

using InstructionBody =
    std::variant<FromHeader, RunInstruction, CmdInstruction, EntrypointInstruction, EnvInstruction,
                 LabelInstruction, MaintainerInstruction, CopyInstruction, WorkdirInstruction,
                 UserInstruction, VolumeInstruction, ExposeInstruction, StopSignalInstruction,
                 ArgInstruction, ShellInstruction, HealthcheckInstruction, OnbuildInstruction>;

struct Instruction {
  InstructionBody body;
  std::string keyword;   // lower-case
  std::string original;  // the source text, for history and progress ("RUN echo hi")
  SourceRange lines;
  std::vector<std::string> comments;
};

struct Stage {
  std::string name;       // lower-cased AS name, or empty
  std::string base_name;  // unexpanded
  std::string platform;   // unexpanded --platform
  std::string original;   // the FROM line
  SourceRange lines;
  std::vector<Instruction> commands;
};

// A whole Dockerfile in typed form: the ARGs before the first FROM, then the stages.
struct Dockerfile {
  std::vector<Instruction> meta_args;  // each holds an ArgInstruction
  std::vector<Stage> stages;
};

// Converts one parsed line. Throws kbuild::Error located at the line.
Instruction parse_instruction(const Node& node);

// Converts a parsed file into stages. Errors read like BuildKit's:
// "dockerfile parse error on line 3: unknown instruction: RNU (did you mean RUN?)".
Dockerfile parse_stages(const ParsedDockerfile& parsed);

// Expands variables in the fields BuildKit expands for this instruction (COPY/ADD paths and
// flags, ENV, LABEL, WORKDIR, USER, VOLUME, EXPOSE, STOPSIGNAL, RUN --mount; not ARG, whose
// defaults expand when the stage dispatches it). `lookup` reads the stage's environment.
void expand_instruction(Instruction& instruction, const ShellLexer& lexer, const VariableLookup& lookup);

// Names of all instructions, upper-case, for suggestions.
const std::vector<std::string>& instruction_names();

// What a RUN executes, as BuildKit's dispatchRun builds it. The shell form gets `shell`
// prepended (its words joined). A lone heredoc runs its body as the shell's script, or, when
// the body starts with "#!", as the file /dev/pipes/<name> holding `script`; a heredoc inside
// a longer command line runs the line with the bodies put back. Throws kbuild::Error for a
// heredoc name that cannot be a file name.
struct RunCommand {
  std::vector<std::string> argv;
  struct Script {
    std::string name;     // the file under /dev/pipes
    std::string content;  // chomped when the heredoc asked for it
  };
  std::optional<Script> script;
};
RunCommand run_command(const CommandLine& line, const std::vector<std::string>& shell);

}  // namespace kbuild::dockerfile
