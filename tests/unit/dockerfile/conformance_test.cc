#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "engine/dockerfile/parser.h"
#include "engine/dockerfile/shell_lexer.h"

namespace {

// The test data directory named by $KBUILD_CONFORMANCE_DIR (set by tests/unit/meson.build).
std::optional<std::filesystem::path> shell_lexer_conformance_file(const char* name) {
  const char* dir = std::getenv("KBUILD_CONFORMANCE_DIR");
  if (dir == nullptr || *dir == '\0') {
    ADD_FAILURE() << "KBUILD_CONFORMANCE_DIR is not set";
    return std::nullopt;
  }
  std::filesystem::path path = std::filesystem::path(dir) / "shell-lexer" / name;
  if (!std::filesystem::is_regular_file(path)) {
    ADD_FAILURE() << path << " is missing";
    return std::nullopt;
  }
  return path;
}

// The file's lines, split as Go's bufio.Scanner does (a trailing \r is dropped).
std::vector<std::string> read_lines(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string_view trim_left(std::string_view s, std::string_view blanks = " \t\n\v\f\r") {
  const std::size_t start = s.find_first_not_of(blanks);
  return start == std::string_view::npos ? std::string_view() : s.substr(start);
}

std::string_view trim(std::string_view s) {
  s = trim_left(s);
  return s.substr(0, s.find_last_not_of(" \t\n\v\f\r") + 1);
}

std::vector<std::string> split(std::string_view s, char separator) {
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const std::size_t end = s.find(separator, start);
    parts.emplace_back(s.substr(start, end - start));
    if (end == std::string_view::npos) return parts;
    start = end + 1;
  }
}

kbuild::dockerfile::VariableLookup lookup_in(const std::map<std::string, std::string>& env) {
  return [&env](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
}

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "[" : ", [") + w + "]";
  return out;
}

}  // namespace

// BuildKit's shell/envVarTest, read as its lex_test.go does: `platform|input|expected`, each
// field trimmed; A and U lines run, W (Windows) lines are skipped.
TEST(ShellLexerConformance, EveryUnixEnvVarTestLineExpandsAsBuildKit) {
  const auto path = shell_lexer_conformance_file("envVarTest");
  ASSERT_TRUE(path);
  const std::map<std::string, std::string> env = {
      {"PWD", "/home"}, {"SHELL", "bash"}, {"KOREAN", "한국어"}, {"NULL", ""}};
  const kbuild::dockerfile::ShellLexer lexer('\\');
  int run = 0;
  int passed = 0;
  int line_number = 0;
  for (const std::string& raw : read_lines(*path)) {
    ++line_number;
    if (raw.starts_with("#")) continue;
    const std::string_view line = trim(raw);
    if (line.empty()) continue;
    const std::vector<std::string> fields = split(line, '|');
    if (fields.size() != 3) {
      ADD_FAILURE() << "envVarTest line " << line_number << " is malformed: " << raw;
      continue;
    }
    const std::string platform(trim(fields[0]));
    const std::string input(trim(fields[1]));
    const std::string expected(trim(fields[2]));
    if (platform == "W") continue;
    if (platform != "A" && platform != "U") {
      ADD_FAILURE() << "envVarTest line " << line_number << " has platform " << platform;
      continue;
    }
    ++run;
    std::string got;
    bool threw = false;
    try {
      got = lexer.expand_word(input, lookup_in(env));
    } catch (const kbuild::Error& e) {
      threw = true;
      got = std::string("error: ") + e.what();
      EXPECT_EQ(e.kind(), kbuild::ErrorKind::user) << "envVarTest line " << line_number << ": " << raw;
    }
    const bool ok = expected == "error" ? threw : (!threw && got == expected);
    if (ok) {
      ++passed;
    } else {
      ADD_FAILURE() << "envVarTest line " << line_number << ": " << raw << "\n  expected: " << expected
                    << "\n  got:      " << got;
    }
  }
  std::cout << "shell-lexer conformance: envVarTest " << passed << "/" << run << std::endl;
  EXPECT_GT(run, 0);
}

// BuildKit's shell/wordsTest: `ENV name=value` lines add to the environment of the lines after
// them; other lines are `input | word1,word2`, the input trimmed, the words only left-trimmed of
// spaces (their trailing spaces count), and "error" when the input must be rejected.
TEST(ShellLexerConformance, EveryWordsTestLineSplitsAsBuildKit) {
  const auto path = shell_lexer_conformance_file("wordsTest");
  ASSERT_TRUE(path);
  std::map<std::string, std::string> env;
  const kbuild::dockerfile::ShellLexer lexer('\\');
  int run = 0;
  int passed = 0;
  int line_number = 0;
  for (const std::string& line : read_lines(*path)) {
    ++line_number;
    if (line.starts_with("#")) continue;
    if (line.starts_with("ENV ")) {
      const std::string_view assignment = trim_left(std::string_view(line).substr(3), " ");
      const std::size_t eq = assignment.find('=');
      env[std::string(assignment.substr(0, eq))] =
          eq == std::string_view::npos ? std::string() : std::string(assignment.substr(eq + 1));
      continue;
    }
    const std::vector<std::string> fields = split(line, '|');
    if (fields.size() != 2) {
      ADD_FAILURE() << "wordsTest line " << line_number << " is malformed: " << line;
      continue;
    }
    const std::string input(trim(fields[0]));
    const std::vector<std::string> expected = split(trim_left(fields[1], " "), ',');
    ++run;
    std::vector<std::string> got;
    try {
      got = lexer.expand_words(input, lookup_in(env));
    } catch (const kbuild::Error&) {
      got = {"error"};
    }
    if (got == expected) {
      ++passed;
    } else {
      ADD_FAILURE() << "wordsTest line " << line_number << ": " << line << "\n  expected: " << join_words(expected)
                    << "\n  got:      " << join_words(got);
    }
  }
  std::cout << "shell-lexer conformance: wordsTest " << passed << "/" << run << std::endl;
  EXPECT_GT(run, 0);
}

// ---------------------------------------------------------------------------------------------
// Parser conformance: BuildKit's frontend/dockerfile/parser testfiles and testfiles-negative.

namespace parser_conformance {

// $KBUILD_CONFORMANCE_DIR/dockerfile-parser/<name>, or nullopt after reporting a failure.
std::optional<std::filesystem::path> data_dir(const char* name) {
  const char* dir = std::getenv("KBUILD_CONFORMANCE_DIR");
  if (dir == nullptr || *dir == '\0') {
    ADD_FAILURE() << "KBUILD_CONFORMANCE_DIR is not set";
    return std::nullopt;
  }
  std::filesystem::path path = std::filesystem::path(dir) / "dockerfile-parser" / name;
  if (!std::filesystem::is_directory(path)) {
    ADD_FAILURE() << path << " is missing";
    return std::nullopt;
  }
  return path;
}

std::vector<std::filesystem::path> case_dirs(const std::filesystem::path& root) {
  std::vector<std::filesystem::path> dirs;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    if (entry.is_directory()) dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  return dirs;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }
  return lines;
}

// As BuildKit's TestParseCases compares: the root's Dump(), one "(instruction)" a line.
std::string dump_all(const kbuild::dockerfile::ParsedDockerfile& parsed) {
  std::string out;
  for (const auto& node : parsed.nodes) out += "(" + kbuild::dockerfile::dump_node(node) + ")\n";
  return out;
}

}  // namespace parser_conformance

TEST(ParserConformance, EveryTestfileParsesToBuildKitsResultAndEveryNegativeOneIsRejected) {
  namespace pc = parser_conformance;
  const auto positive = pc::data_dir("testfiles");
  const auto negative = pc::data_dir("testfiles-negative");
  ASSERT_TRUE(positive && negative);

  int cases = 0;
  int matched = 0;
  for (const auto& dir : pc::case_dirs(*positive)) {
    ++cases;
    const std::string name = dir.filename().string();
    const std::string expected = pc::read_file(dir / "result");
    std::string got;
    try {
      got = pc::dump_all(kbuild::dockerfile::parse_dockerfile(pc::read_file(dir / "Dockerfile")));
    } catch (const kbuild::Error& e) {
      ADD_FAILURE() << name << ": parse failed: " << e.what();
      continue;
    }
    if (got == expected) {
      ++matched;
      continue;
    }
    const auto want_lines = pc::lines_of(expected);
    const auto got_lines = pc::lines_of(got);
    std::size_t i = 0;
    while (i < want_lines.size() && i < got_lines.size() && want_lines[i] == got_lines[i]) ++i;
    ADD_FAILURE() << name << ": result line " << i + 1 << " differs\n  expected: "
                  << (i < want_lines.size() ? want_lines[i] : "<end>")
                  << "\n  got:      " << (i < got_lines.size() ? got_lines[i] : "<end>");
  }

  int negative_cases = 0;
  int rejected = 0;
  for (const auto& dir : pc::case_dirs(*negative)) {
    ++negative_cases;
    try {
      kbuild::dockerfile::parse_dockerfile(pc::read_file(dir / "Dockerfile"));
      ADD_FAILURE() << dir.filename().string() << ": parsed, but BuildKit rejects it";
    } catch (const kbuild::Error& e) {
      ++rejected;
      EXPECT_EQ(e.kind(), kbuild::ErrorKind::user) << dir.filename().string();
      EXPECT_TRUE(e.where().has_value()) << dir.filename().string();
    }
  }

  std::cout << "parser conformance: " << matched << "/" << cases << " cases match, " << rejected << "/"
            << negative_cases << " negative cases rejected" << std::endl;
  EXPECT_GT(cases, 0);
  EXPECT_GT(negative_cases, 0);
}
