#include "seccomp/profile.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "common/error.h"
#include "seccomp/seccomp.h"

namespace kbuild::seccomp {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// The message of the kbuild::Error that parsing `json` throws; fails the test when none is thrown.
std::string parse_error(const std::string& json) {
  try {
    parse_profile(json, "/etc/kbuild/seccomp.json");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error for " << json;
  return {};
}

TEST(SeccompProfile, ParsesDockerFields) {
  Profile p = parse_profile(R"({
    "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
    "syscalls": [
      {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
       "includes": {"minKernel": "4.8", "arches": ["amd64"]}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
      {"name": "clone3", "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
    ]})",
                            "test");
  EXPECT_EQ(p.default_action, Action::errno_ret);
  EXPECT_EQ(p.default_errno_ret, 1u);
  ASSERT_EQ(p.arch_map.size(), 1u);
  EXPECT_EQ(p.arch_map[0].sub_architectures, std::vector<std::string>{"SCMP_ARCH_X86"});
  ASSERT_EQ(p.syscalls.size(), 2u);
  const SyscallRule& clone = p.syscalls[0];
  ASSERT_EQ(clone.args.size(), 1u);
  EXPECT_EQ(clone.args[0].op, CompareOp::masked_equal);
  EXPECT_EQ(clone.args[0].value, 2114060288u);
  EXPECT_EQ(clone.includes.min_kernel, (KernelVersion{4, 8}));
  EXPECT_EQ(clone.includes.arches, std::vector<std::string>{"amd64"});
  EXPECT_EQ(clone.excludes.caps, std::vector<std::string>{"CAP_SYS_ADMIN"});
  EXPECT_EQ(p.syscalls[1].names, std::vector<std::string>{"clone3"});
  EXPECT_EQ(p.syscalls[1].errno_ret, 38u);
}

TEST(SeccompProfile, MalformedJsonNamesTheFileLineAndColumn) {
  std::string message = parse_error("{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [,]\n}");
  EXPECT_THAT(message, AllOf(HasSubstr("/etc/kbuild/seccomp.json"), HasSubstr("line 3, column 16")));
}

TEST(SeccompProfile, UnknownActionIsNamedWithItsPlace) {
  std::string message = parse_error(
      R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_MAYBE"}]})");
  EXPECT_THAT(message, AllOf(HasSubstr("/etc/kbuild/seccomp.json"), HasSubstr("syscalls[0].action"),
                             HasSubstr("unknown action \"SCMP_ACT_MAYBE\"")));
}

TEST(SeccompProfile, UnknownOperatorIsNamedWithItsPlace) {
  std::string message = parse_error(R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
      {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]}]})");
  EXPECT_THAT(message, AllOf(HasSubstr("/etc/kbuild/seccomp.json"), HasSubstr("syscalls[0].args[0].op"),
                             HasSubstr("unknown operator \"SCMP_CMP_ABOUT\"")));
}

TEST(SeccompProfile, UnknownDefaultActionIsRefused) {
  EXPECT_THAT(parse_error(R"({"defaultAction": "SCMP_ACT_DENY"})"), HasSubstr("defaultAction"));
}

TEST(SeccompProfile, MissingDefaultActionIsRefused) {
  EXPECT_THAT(parse_error(R"({"syscalls": []})"), HasSubstr("defaultAction"));
}

TEST(SeccompProfile, ArgumentIndexAboveFiveIsRefused) {
  EXPECT_THAT(parse_error(R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
      {"names": ["read"], "action": "SCMP_ACT_ALLOW",
       "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]})"),
              HasSubstr("syscalls[0].args[0].index"));
}

TEST(SeccompProfile, BadMinKernelIsRefused) {
  EXPECT_THAT(parse_error(R"({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
      {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8.1"}}]})"),
              HasSubstr("invalid kernel version \"4.8.1\""));
}

TEST(SeccompProfile, ArchitecturesAndArchMapTogetherAreRefused) {
  EXPECT_THAT(parse_error(R"({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": null}]})"),
              HasSubstr("not both"));
}

TEST(SeccompProfile, WrongTypeIsNamedWithItsPlace) {
  EXPECT_THAT(parse_error(R"({"defaultAction": "SCMP_ACT_ERRNO",
      "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]})"),
              HasSubstr("syscalls[0].names: expected an array"));
}

TEST(SeccompProfile, MissingFileIsReportedWithItsPath) {
  try {
    read_profile("/nonexistent/seccomp.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("/nonexistent/seccomp.json"));
  }
}

TEST(SeccompProfile, DefaultProfileIsParsedOnceAndShared) {
  const Profile& first = default_profile();
  EXPECT_EQ(&first, &default_profile());
  EXPECT_EQ(first.default_action, Action::errno_ret);
  EXPECT_GT(first.syscalls.size(), 10u);
}

}  // namespace
}  // namespace kbuild::seccomp
