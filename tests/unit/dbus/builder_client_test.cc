#include "dbus/builder_client.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "tests/unit/dbus/dbus_test_support.h"

namespace kbuild::dbus {
namespace {

using testing::FakeBuilder;
using testing::run_as;
using testing::TestServer;

std::string connect_error(const std::string& path, ErrorKind* kind = nullptr) {
  try {
    BuilderClient client(path);
    client.info();
  } catch (const Error& e) {
    if (kind) *kind = e.kind();
    return e.what();
  }
  return "connected";
}

TEST(BuilderClient, MissingSocketAsksWhetherKbuildSocketRuns) {
  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  ErrorKind kind{};
  EXPECT_EQ(connect_error(path, &kind),
            "cannot connect to kbuildd at " + path + ": No such file or directory (is kbuild.socket running?)");
  EXPECT_EQ(kind, ErrorKind::internal);
}

TEST(BuilderClient, SocketNobodyServesAsksWhetherKbuildSocketRuns) {
  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  {
    UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    ASSERT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  }
#if defined(__SANITIZE_ADDRESS__)
  // sdbus-c++ 1.2 leaks its sd_bus when connect() fails.
  __lsan_disable();
#endif
  EXPECT_EQ(connect_error(path),
            "cannot connect to kbuildd at " + path + ": Connection refused (is kbuild.socket running?)");
#if defined(__SANITIZE_ADDRESS__)
  __lsan_enable();
#endif
}

TEST(BuilderClient, SocketTheUserMayNotOpenSaysWhoMay) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to switch to nobody";
  FakeBuilder fake;
  TestServer server(fake, {}, 0660);
  std::string result = run_as(65534, 65534, [&] { return connect_error(server.path()); });
  EXPECT_EQ(result, "cannot connect to kbuildd at " + server.path() +
                        ": Permission denied (only root and members of group kbuild may use kbuildd)");
}

TEST(BuilderClient, PathsWithUnusualCharactersWork) {
  FakeBuilder fake;
  TempDir dir;
  std::string path = dir.path() + "/a b;c=d,e%f.sock";
  Server server(Listener::bind(path, {0600, ""}), fake);
  std::thread loop([&] { server.run(); });
  try {
    BuilderClient client(path);
    EXPECT_EQ(client.info().at("version"), Value("test"));
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  server.stop();
  loop.join();
}

}  // namespace
}  // namespace kbuild::dbus
