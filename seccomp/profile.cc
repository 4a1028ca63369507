#include "seccomp/profile.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"
#include "common/syscall.h"

namespace kbuild::seccomp {
namespace {

using nlohmann::json;

// A field that is wrong, as "syscalls[3].action: unknown action \"X\""; the origin is added once,
// where parse_profile catches it.
struct FieldError {
  std::string message;
};

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw FieldError{where + ": " + what};
}

const std::map<std::string, Action, std::less<>> kActions = {
    {"SCMP_ACT_KILL", Action::kill_thread},          {"SCMP_ACT_KILL_THREAD", Action::kill_thread},
    {"SCMP_ACT_KILL_PROCESS", Action::kill_process}, {"SCMP_ACT_TRAP", Action::trap},
    {"SCMP_ACT_ERRNO", Action::errno_ret},           {"SCMP_ACT_TRACE", Action::trace},
    {"SCMP_ACT_ALLOW", Action::allow},               {"SCMP_ACT_LOG", Action::log},
    {"SCMP_ACT_NOTIFY", Action::notify},
};

const std::map<std::string, CompareOp, std::less<>> kOps = {
    {"SCMP_CMP_NE", CompareOp::not_equal},       {"SCMP_CMP_LT", CompareOp::less},
    {"SCMP_CMP_LE", CompareOp::less_equal},      {"SCMP_CMP_EQ", CompareOp::equal},
    {"SCMP_CMP_GE", CompareOp::greater_equal},   {"SCMP_CMP_GT", CompareOp::greater},
    {"SCMP_CMP_MASKED_EQ", CompareOp::masked_equal},
};

// Go's encoding/json treats null like an absent field; so do we.
const json* member(const json& object, const char* key) {
  auto it = object.find(key);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

std::string string_of(const json& value, const std::string& where) {
  if (!value.is_string()) fail(where, "expected a string, got " + value.dump());
  return value.get<std::string>();
}

uint64_t unsigned_of(const json& value, const std::string& where, uint64_t max) {
  if (!value.is_number_unsigned() || value.get<uint64_t>() > max)
    fail(where, "expected an integer from 0 to " + std::to_string(max) + ", got " + value.dump());
  return value.get<uint64_t>();
}

std::vector<std::string> strings_of(const json* value, const std::string& where) {
  std::vector<std::string> out;
  if (!value) return out;
  if (!value->is_array()) fail(where, "expected an array of strings, got " + value->dump());
  for (size_t i = 0; i < value->size(); ++i)
    out.push_back(string_of((*value)[i], where + "[" + std::to_string(i) + "]"));
  return out;
}

void expect_object(const json& value, const std::string& where) {
  if (!value.is_object()) fail(where, "expected an object, got " + value.dump());
}

template <typename T>
T lookup(const std::map<std::string, T, std::less<>>& table, const json& value,
         const std::string& where, const char* kind) {
  std::string name = string_of(value, where);
  auto it = table.find(name);
  if (it == table.end()) fail(where, std::string("unknown ") + kind + " \"" + name + "\"");
  return it->second;
}

std::optional<uint32_t> errno_of(const json* value, const std::string& where) {
  if (!value) return std::nullopt;
  return static_cast<uint32_t>(unsigned_of(*value, where, 0xffff));
}

// "<kernel>.<major>", as moby's KernelVersion.UnmarshalJSON accepts it.
std::optional<KernelVersion> kernel_version_of(const json* value, const std::string& where) {
  if (!value) return std::nullopt;
  std::string text = string_of(*value, where);
  if (text.empty()) return std::nullopt;
  unsigned kernel = 0, major = 0;
  char rest = 0;
  if (std::sscanf(text.c_str(), "%u.%u%c", &kernel, &major, &rest) != 2 || kernel > 255 ||
      major > 255 || (kernel == 0 && major == 0) || text.find_first_not_of("0123456789.") != text.npos)
    fail(where, "invalid kernel version \"" + text + "\", expected \"<kernel>.<major>\"");
  return KernelVersion{kernel, major};
}

RuleCondition condition_of(const json* value, const std::string& where) {
  RuleCondition condition;
  if (!value) return condition;
  expect_object(*value, where);
  condition.caps = strings_of(member(*value, "caps"), where + ".caps");
  condition.arches = strings_of(member(*value, "arches"), where + ".arches");
  condition.min_kernel = kernel_version_of(member(*value, "minKernel"), where + ".minKernel");
  return condition;
}

ArgCondition arg_of(const json& value, const std::string& where) {
  expect_object(value, where);
  ArgCondition arg;
  const json* index = member(value, "index");
  const json* op = member(value, "op");
  if (!index) fail(where, "missing \"index\"");
  if (!op) fail(where, "missing \"op\"");
  arg.index = static_cast<unsigned>(unsigned_of(*index, where + ".index", 5));
  if (const json* v = member(value, "value")) arg.value = unsigned_of(*v, where + ".value", UINT64_MAX);
  if (const json* v = member(value, "valueTwo"))
    arg.value_two = unsigned_of(*v, where + ".valueTwo", UINT64_MAX);
  arg.op = lookup(kOps, *op, where + ".op", "operator");
  return arg;
}

std::vector<std::string> names_of(const json& value, const std::string& where) {
  const json* name = member(value, "name");  // the single-name form older profiles use
  const json* names = member(value, "names");
  if (name && names && !names->empty()) fail(where, "has both \"name\" and \"names\"");
  if (name) return {string_of(*name, where + ".name")};
  return strings_of(names, where + ".names");
}

SyscallRule rule_of(const json& value, const std::string& where) {
  expect_object(value, where);
  SyscallRule rule;
  rule.names = names_of(value, where);
  const json* action = member(value, "action");
  if (!action) fail(where, "missing \"action\"");
  rule.action = lookup(kActions, *action, where + ".action", "action");
  rule.errno_ret = errno_of(member(value, "errnoRet"), where + ".errnoRet");
  if (const json* args = member(value, "args")) {
    if (!args->is_array()) fail(where + ".args", "expected an array");
    for (size_t i = 0; i < args->size(); ++i)
      rule.args.push_back(arg_of((*args)[i], where + ".args[" + std::to_string(i) + "]"));
  }
  rule.includes = condition_of(member(value, "includes"), where + ".includes");
  rule.excludes = condition_of(member(value, "excludes"), where + ".excludes");
  return rule;
}

std::vector<ArchMapEntry> arch_map_of(const json* value) {
  std::vector<ArchMapEntry> out;
  if (!value) return out;
  if (!value->is_array()) fail("archMap", "expected an array");
  for (size_t i = 0; i < value->size(); ++i) {
    std::string where = "archMap[" + std::to_string(i) + "]";
    const json& entry = (*value)[i];
    expect_object(entry, where);
    const json* arch = member(entry, "architecture");
    if (!arch) fail(where, "missing \"architecture\"");
    out.push_back({string_of(*arch, where + ".architecture"),
                   strings_of(member(entry, "subArchitectures"), where + ".subArchitectures")});
  }
  return out;
}

Profile profile_of(const json& root) {
  expect_object(root, "profile");
  Profile profile;
  const json* default_action = member(root, "defaultAction");
  if (!default_action) fail("defaultAction", "missing; a profile needs a default action");
  profile.default_action = lookup(kActions, *default_action, "defaultAction", "action");
  profile.default_errno_ret = errno_of(member(root, "defaultErrnoRet"), "defaultErrnoRet");
  profile.architectures = strings_of(member(root, "architectures"), "architectures");
  profile.arch_map = arch_map_of(member(root, "archMap"));
  if (!profile.architectures.empty() && !profile.arch_map.empty())
    fail("archMap", "a profile has either \"architectures\" or \"archMap\", not both");
  if (const json* syscalls = member(root, "syscalls")) {
    if (!syscalls->is_array()) fail("syscalls", "expected an array");
    for (size_t i = 0; i < syscalls->size(); ++i)
      profile.syscalls.push_back(rule_of((*syscalls)[i], "syscalls[" + std::to_string(i) + "]"));
  }
  return profile;
}

// 1-based line and column of byte `offset`; nlohmann reports the byte after the bad token.
std::string position_of(std::string_view text, size_t offset) {
  offset = std::min(offset > 0 ? offset - 1 : 0, text.size());
  size_t line = 1, column = 1;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// nlohmann's message without its "[json.exception.parse_error.101] parse error at ...: " prefix.
std::string syntax_detail(const json::parse_error& e) {
  std::string_view what = e.what();
  size_t colon = what.find(": ");
  return std::string(colon == what.npos ? what : what.substr(colon + 2));
}

}  // namespace

Profile parse_profile(std::string_view text, std::string_view origin) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(ErrorKind::user, "seccomp profile " + std::string(origin) + ": invalid JSON at " +
                                     position_of(text, e.byte) + ": " + syntax_detail(e));
  }
  try {
    return profile_of(root);
  } catch (const FieldError& e) {
    throw Error(ErrorKind::user, "seccomp profile " + std::string(origin) + ": " + e.message);
  }
}

Profile read_profile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_errno("opening seccomp profile", path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw_errno("reading seccomp profile", path);
  return parse_profile(text.str(), path);
}

}  // namespace kbuild::seccomp
