#include "engine/fileops/chown.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "tests/unit/fileops/test_tree.h"

namespace kbuild::fileops {
namespace {

using ::testing::HasSubstr;
using testing::Tree;

class Chown : public ::testing::Test {
 protected:
  void SetUp() override {
    root.file("etc/passwd",
              "root:x:0:0:root:/root:/bin/sh\n"
              "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
              "  user:x:1000:1001::/home/user:/bin/sh  \n"
              "\n"
              "user:x:2000:2000::/dup:/bin/sh\n"
              "weird:x:notanumber:7\n");
    root.file("etc/group",
              "root:x:0:\n"
              "daemon:x:1:\n"
              "# nobody:x:1:\n"
              "nobody:x:65534:\n"
              "staff:x:50:user\n");
  }
  std::string error(const std::string& spec, ChownStyle style = ChownStyle::buildkit) {
    try {
      resolve_chown(spec, root.fd(), style);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  Tree root;
};

TEST_F(Chown, BuildKitForms) {
  EXPECT_EQ(resolve_chown("daemon", root.fd()), (Owner{1, 1}));
  EXPECT_EQ(resolve_chown("user", root.fd()), (Owner{1000, 1001}));  // first match, trimmed
  EXPECT_EQ(resolve_chown("1000", root.fd()), (Owner{1000, 1000}));
  EXPECT_EQ(resolve_chown("10:11", root.fd()), (Owner{10, 11}));
  EXPECT_EQ(resolve_chown("1000:nobody", root.fd()), (Owner{1000, 65534}));
  EXPECT_EQ(resolve_chown("user:staff", root.fd()), (Owner{1000, 50}));
  EXPECT_EQ(resolve_chown("55:staff", root.fd()), (Owner{55, 50}));
  EXPECT_EQ(resolve_chown("root", root.fd()), (Owner{0, 0}));
  EXPECT_EQ(resolve_chown(":staff", root.fd()), (Owner{0, 50}));
  EXPECT_EQ(resolve_chown("1000:", root.fd()), (Owner{1000, 0}));
  EXPECT_EQ(resolve_chown("weird", root.fd()), (Owner{0, 7}));
}

TEST_F(Chown, BuildKitIgnoresUnknownNames) {
  // readUser leaves the ids at 0 when a name is not in the files.
  EXPECT_EQ(resolve_chown("nosuchuser", root.fd()), (Owner{0, 0}));
  EXPECT_EQ(resolve_chown("daemon:nosuchgroup", root.fd()), (Owner{1, 1}));
  EXPECT_EQ(resolve_chown("2:nosuchgroup", root.fd()), (Owner{2, 2}));
  Tree empty;
  EXPECT_EQ(resolve_chown("daemon:staff", empty.fd()), (Owner{0, 0}));
}

TEST_F(Chown, PasswdIsFoundInsideTheRootOnly) {
  Tree t;
  t.file("real/passwd", "app:x:42:43::/:/bin/sh\n");
  t.symlink("/real", "etc");
  EXPECT_EQ(resolve_chown("app", t.fd()), (Owner{42, 43}));
  // Links to host paths are read inside the root: never the host's passwd.
  Tree host_link;
  host_link.symlink("../../../../../../etc/shadow", "etc/passwd");
  EXPECT_EQ(resolve_chown("daemon", host_link.fd()), (Owner{0, 0}));
  Tree climbing;
  climbing.file("real/passwd", "app:x:42:43::/:/bin/sh\n");
  climbing.symlink("../../../../../../real/passwd", "etc/passwd");
  EXPECT_EQ(resolve_chown("app", climbing.fd()), (Owner{42, 43}));
  // A link to itself loops, which fs.RootPath reports.
  Tree loop;
  loop.symlink("/etc/passwd", "etc/passwd");
  EXPECT_THROW(resolve_chown("app", loop.fd()), Error);
}

TEST_F(Chown, PasswdMustBeARegularFile) {
  Tree t;
  t.mkdir("etc/passwd");
  EXPECT_EQ([&] {
    try {
      resolve_chown("app", t.fd());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), "/etc/passwd is not a regular file");
}

TEST_F(Chown, ClassicBuilderForms) {
  EXPECT_EQ(resolve_chown("daemon", root.fd(), ChownStyle::classic), (Owner{1, 1}));
  EXPECT_EQ(resolve_chown("user:staff", root.fd(), ChownStyle::classic), (Owner{1000, 50}));
  EXPECT_EQ(resolve_chown("1000", root.fd(), ChownStyle::classic), (Owner{1000, 1000}));
  EXPECT_EQ(error("bob:1:555", ChownStyle::classic), "invalid chown string format: bob:1:555");
  EXPECT_EQ(error("bob", ChownStyle::classic), "can't find uid for user bob: no such user: bob");
  EXPECT_EQ(error("root:bob", ChownStyle::classic), "can't find gid for group bob: no such group: bob");
  Tree empty;
  EXPECT_THAT([&] {
    try {
      resolve_chown("app", empty.fd(), ChownStyle::classic);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), HasSubstr("can't find uid for user app: open /etc/passwd: no such file or directory"));
}

TEST_F(Chown, OversizedFilesAreRefused) {
  Tree t;
  t.file("etc/passwd", std::string((10 << 20) + 1, '\n'));
  EXPECT_EQ([&] {
    try {
      resolve_chown("app", t.fd());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  }(), "\"/etc/passwd\" exceeds 10485760 bytes");
}

}  // namespace
}  // namespace kbuild::fileops
