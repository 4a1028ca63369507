#include "dbus/authorization.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/unique_fd.h"

namespace kbuild::dbus {
namespace {

TEST(Authorization, RootMayCall) {
  EXPECT_EQ(access_refusal(Caller{1, 0, 0, {}}, "kbuild"), "");
  EXPECT_EQ(access_refusal(Caller{1, 0, 0, {}}, "no-such-group-kbuild-test"), "");
}

TEST(Authorization, MembersOfTheGroupMayCall) {
  std::optional<gid_t> group = find_group("nogroup");
  if (!group) GTEST_SKIP() << "no group nogroup";
  EXPECT_EQ(access_refusal(Caller{1, 1000, *group, {}}, "nogroup"), "") << "primary group";
  EXPECT_EQ(access_refusal(Caller{1, 1000, 1000, {4, *group, 27}}, "nogroup"), "") << "supplementary group";
}

TEST(Authorization, OthersAreRefusedWithTheirUid) {
  EXPECT_EQ(access_refusal(Caller{1, 1000, 1000, {4, 27}}, "nogroup"),
            "access denied: uid 1000 is not root or a member of group nogroup");
  EXPECT_EQ(access_refusal(Caller{1, 1000, 1000, {}}, "no-such-group-kbuild-test"),
            "access denied: uid 1000 is not root or a member of group no-such-group-kbuild-test");
}

TEST(Authorization, FindsGroupsByName) {
  EXPECT_EQ(find_group("root"), std::optional<gid_t>(0));
  EXPECT_EQ(find_group("no-such-group-kbuild-test"), std::nullopt);
  EXPECT_EQ(find_group(""), std::nullopt);
}

TEST(Authorization, PeerCallerIsTheProcessAtTheOtherEnd) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd a(fds[0]), b(fds[1]);
  Caller caller = peer_caller(a.get());
  EXPECT_EQ(caller.pid, getpid());
  EXPECT_EQ(caller.uid, geteuid());
  EXPECT_EQ(caller.gid, getegid());
  std::vector<gid_t> groups(static_cast<size_t>(getgroups(0, nullptr)));
  groups.resize(static_cast<size_t>(getgroups(static_cast<int>(groups.size()), groups.data())));
  std::sort(groups.begin(), groups.end());
  std::sort(caller.groups.begin(), caller.groups.end());
  EXPECT_EQ(caller.groups, groups);
}

}  // namespace
}  // namespace kbuild::dbus
