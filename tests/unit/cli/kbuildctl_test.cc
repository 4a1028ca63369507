// The kbuildctl command line, run in-process against a socket that does not exist: what it
// refuses by itself, it refuses before it reads a file or asks the daemon.
#include "cli/kbuildctl.h"

#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

namespace kbuild::cli {
namespace {

struct Outcome {
  int status;
  std::string out, err;
};

Outcome kbuildctl(std::vector<std::string> args) {
  args.insert(args.begin(), {"kbuildctl", "-H", "unix:///nonexistent/kbuild.sock"});
  std::vector<const char*> argv;
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  std::istringstream in;
  std::ostringstream out, err;
  int status = run_kbuildctl(static_cast<int>(argv.size()), argv.data(), in, out, err);
  return {status, out.str(), err.str()};
}

const std::string kLower = "invalid reference format: repository name (library/Bad) must be lowercase";

TEST(Kbuildctl, BuildRefusesBadNamesBeforeReadingTheContext) {
  // The context does not exist either: the name is refused first, in buildx's words.
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"build", "-t", "Bad", "/nonexistent"}, "ERROR: invalid tag \"Bad\": repository name must be lowercase\n"},
      {{"build", "-t", "ok", "-t", "Bad Tag", "/nonexistent"}, "ERROR: invalid tag \"Bad Tag\": invalid reference format\n"},
      {{"build", "-o", "type=image,name=a//b", "/nonexistent"}, "ERROR: invalid tag \"a//b\": invalid reference format\n"},
      {{"build", "-o", "type=docker,dest=/nonexistent/x.tar,name=x@sha256:abc", "/nonexistent"},
       "ERROR: invalid tag \"x@sha256:abc\": invalid reference format\n"},
      {{"build", "--cache-to", "type=registry,ref=Bad", "/nonexistent"}, "ERROR: cache-to: invalid ref \"Bad\": " + kLower + "\n"},
      {{"build", "--cache-from", "Bad", "/nonexistent"}, "ERROR: cache-from: invalid ref \"Bad\": " + kLower + "\n"},
  };
  for (const auto& [args, expected] : cases) {
    Outcome o = kbuildctl(args);
    EXPECT_EQ(o.status, 1) << args.back();
    EXPECT_EQ(o.err, expected);
  }
}

TEST(Kbuildctl, ImageCommandsRefuseBadNamesWithoutAskingTheDaemon) {
  const std::string digest = "sha256:" + std::string(64, 'a');
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"tag", "app", "Bad"}, "ERROR: error parsing reference: \"Bad\" is not a valid repository/tag: " + kLower + "\n"},
      {{"tag", "Bad", "app"}, "ERROR: error parsing reference: \"Bad\" is not a valid repository/tag: " + kLower + "\n"},
      {{"tag", "app", "app@" + digest}, "ERROR: refusing to create a tag with a digest reference\n"},
      {{"rmi", "Bad"}, "Error response from daemon: " + kLower + "\n"},
      {{"save", "-o", "/nonexistent/out.tar", "Bad"}, "ERROR: " + kLower + "\n"},
      {{"pull", "Bad"}, "ERROR: " + kLower + "\n"},
      {{"push", "Bad"}, "ERROR: " + kLower + "\n"},
      {{"push", "app@" + digest}, "ERROR: cannot push a digest reference\n"},
  };
  for (const auto& [args, expected] : cases) {
    Outcome o = kbuildctl(args);
    EXPECT_EQ(o.status, 1) << args.front();
    EXPECT_EQ(o.err, expected);
    EXPECT_EQ(o.out, "");
  }
  // An image ID, a digest and an upper-case registry name are names: those go to the daemon.
  for (const std::string& name : {std::string(64, 'a'), digest, std::string("UPPER/x:1")}) {
    Outcome o = kbuildctl({"rmi", name});
    EXPECT_NE(o.err.find("cannot connect to kbuildd"), std::string::npos) << name << ": " << o.err;
  }
}

}  // namespace
}  // namespace kbuild::cli
