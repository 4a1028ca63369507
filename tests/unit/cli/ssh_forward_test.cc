// --ssh values parsed and checked as buildx and BuildKit's sshprovider do.
#include "cli/ssh_forward.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace kbuild::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user) << e.what();
    return e.what();
  }
  return "(no error)";
}

TEST(ParseSshFlag, IdAloneHasNoPaths) {
  EXPECT_EQ(parse_ssh_flag("default"), (SshSpec{"default", {}}));
}

TEST(ParseSshFlag, PathsAfterTheFirstEqualsSplitAtCommas) {
  EXPECT_EQ(parse_ssh_flag("key=/a/id_ed25519,/b/id=rsa"), (SshSpec{"key", {"/a/id_ed25519", "/b/id=rsa"}}));
}

TEST(ParseSshFlag, AnEmptyValueIsOneEmptyPath) {
  EXPECT_EQ(parse_ssh_flag("default="), (SshSpec{"default", {""}}));
}

TEST(ParseSshFlag, AnEmptyIdStaysEmptyUntilResolved) {
  EXPECT_EQ(parse_ssh_flag("=/run/agent.sock"), (SshSpec{"", {"/run/agent.sock"}}));
}

TEST(ResolveSshSpec, NoPathIsTheDefaultAgent) {
  EXPECT_EQ(resolve_ssh_spec(parse_ssh_flag("default"), "/tmp/ssh-x/agent.1"),
            (SshSpec{"default", {"/tmp/ssh-x/agent.1"}}));
  EXPECT_EQ(resolve_ssh_spec(parse_ssh_flag("other="), "/s"), (SshSpec{"other", {"/s"}}));
}

TEST(ResolveSshSpec, AnEmptyIdIsDefault) {
  EXPECT_EQ(resolve_ssh_spec(parse_ssh_flag("=/s"), nullptr), (SshSpec{"default", {"/s"}}));
}

TEST(ResolveSshSpec, WithoutSshAuthSockTheDefaultAgentIsAnError) {
  EXPECT_EQ(error_of([] { resolve_ssh_spec(parse_ssh_flag("default"), nullptr); }),
            "invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set");
  EXPECT_EQ(error_of([] { resolve_ssh_spec(parse_ssh_flag("default"), ""); }),
            "invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set");
}

TEST(ResolveSshSpec, AnEmptyFirstPathAmongSeveralIsAnError) {
  EXPECT_THAT(error_of([] { resolve_ssh_spec(parse_ssh_flag("default=,/key"), "/s"); }),
              HasSubstr("invalid empty ssh agent socket"));
}

TEST(ParseSshFlags, KeepsOrder) {
  const std::vector<SshSpec> specs = parse_ssh_flags({"default", "deploy=/k1,/k2"}, "/agent");
  EXPECT_THAT(specs, ElementsAre(SshSpec{"default", {"/agent"}}, SshSpec{"deploy", {"/k1", "/k2"}}));
}

TEST(ParseSshFlags, ADuplicateIdIsAnError) {
  EXPECT_EQ(error_of([] { parse_ssh_flags({"default", "=/other"}, "/agent"); }), "invalid duplicate ID default");
  EXPECT_EQ(error_of([] { parse_ssh_flags({"a=/x", "a=/y"}, nullptr); }), "invalid duplicate ID a");
}

}  // namespace
}  // namespace kbuild::cli
