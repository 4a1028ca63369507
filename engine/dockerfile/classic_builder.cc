#include "engine/dockerfile/classic_builder.h"

#include <cctype>

namespace kbuild::dockerfile {
namespace {

[[noreturn]] void refuse(const std::string& message) { throw Error(ErrorKind::user, message); }

// Docker 20.10's parser knows no heredoc: the body's first line reads as the next instruction.
[[noreturn]] void refuse_heredoc(const Instruction& instruction, const std::string& body) {
  std::string word = body.substr(0, body.find_first_of(" \t\n"));
  for (char& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  refuse("dockerfile parse error line " + std::to_string(instruction.lines.start_line + 1) +
         ": unknown instruction: " + word);
}

// A flag the classic parser does not define at all.
[[noreturn]] void refuse_unknown_flag(const Instruction& instruction, const std::string& flag) {
  refuse("dockerfile parse error line " + std::to_string(instruction.lines.start_line) + ": Unknown flag: " + flag);
}

}  // namespace

std::string requires_buildkit(const std::string& option) {
  return "the --" + option +
         " option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with "
         "BuildKit enabled";
}

void refuse_unknown_syntax(const Instruction& instruction) {
  if (const auto* run = std::get_if<RunInstruction>(&instruction.body)) {
    // Docker 20.10 parses --mount (and refuses it when the step runs); --network and --security
    // are unknown to it.
    for (const std::string& flag : run->flags_used) {
      if (flag != "mount") refuse_unknown_flag(instruction, flag);
    }
    if (!run->command.files.empty()) refuse_heredoc(instruction, run->command.files.front().data);
  } else if (const auto* copy = std::get_if<CopyInstruction>(&instruction.body)) {
    if (copy->link) refuse_unknown_flag(instruction, "link");
    if (copy->parents) refuse_unknown_flag(instruction, "parents");
    if (!copy->excludes.empty()) refuse_unknown_flag(instruction, "exclude");
    if (!copy->checksum.empty()) refuse_unknown_flag(instruction, "checksum");
    if (copy->keep_git_dir) refuse_unknown_flag(instruction, "keep-git-dir");
    if (copy->unpack) refuse_unknown_flag(instruction, "unpack");
    if (!copy->inline_sources.empty()) refuse_heredoc(instruction, copy->inline_sources.front().data);
  }
}

void refuse_buildkit_only(const Instruction& instruction) {
  if (const auto* run = std::get_if<RunInstruction>(&instruction.body)) {
    if (!run->flags_used.empty()) refuse(requires_buildkit(run->flags_used.front()));
  } else if (const auto* copy = std::get_if<CopyInstruction>(&instruction.body)) {
    if (!copy->chmod.empty()) refuse(requires_buildkit("chmod"));
  }
}

void check_classic_target(const Dockerfile& dockerfile, const std::string& target) {
  if (target.empty()) return;
  std::string wanted = target;
  for (char& c : wanted) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const Stage& stage : dockerfile.stages) {
    if (stage.name == wanted) return;  // stage names are lower-cased when parsed
  }
  refuse("failed to reach build target " + target + " in Dockerfile");
}

}  // namespace kbuild::dockerfile
