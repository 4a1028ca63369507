#include "dbus/listener.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fstream>

#include "common/error.h"
#include "common/temp_dir.h"
#include "dbus/authorization.h"

namespace kbuild::dbus {
namespace {

struct stat stat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st;
}

bool exists(const std::string& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

std::string error_of(const std::function<void()>& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Listener, BindsWithTheModeAndRemovesTheFileWhenGone) {
  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  {
    Listener listener = Listener::bind(path, {0660, ""});
    struct stat st = stat_of(path);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    EXPECT_EQ(listener.path(), path);
    EXPECT_NE(fcntl(listener.fd(), F_GETFL) & O_NONBLOCK, 0);
    EXPECT_NE(fcntl(listener.fd(), F_GETFD) & FD_CLOEXEC, 0);

    Listener moved = std::move(listener);
    EXPECT_TRUE(exists(path));
  }
  EXPECT_FALSE(exists(path));
}

TEST(Listener, GivesTheSocketTheGroupWhenItExists) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  std::optional<gid_t> group = find_group("nogroup");
  if (!group) GTEST_SKIP() << "no group nogroup";
  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  Listener listener = Listener::bind(path, {0660, "nogroup"});
  EXPECT_EQ(stat_of(path).st_gid, *group);

  std::string other = dir.path() + "/other.sock";
  Listener without = Listener::bind(other, {0660, "no-such-group-kbuild-test"});
  EXPECT_EQ(stat_of(other).st_gid, getegid());
}

TEST(Listener, ReplacesAStaleSocket) {
  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  { Listener first = Listener::bind(path, {0600, ""}); }
  {
    // Left behind as a crashed daemon would leave it.
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    close(fd);
  }
  ASSERT_TRUE(exists(path));
  Listener listener = Listener::bind(path, {0600, ""});
  EXPECT_TRUE(S_ISSOCK(stat_of(path).st_mode));
}

TEST(Listener, RefusesAPathThatIsNotASocket) {
  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  std::ofstream(path) << "data";
  EXPECT_EQ(error_of([&] { Listener::bind(path); }), "cannot listen on " + path + ": it exists and is not a socket");
  EXPECT_TRUE(S_ISREG(stat_of(path).st_mode));
}

TEST(Listener, RefusesASocketAnotherProcessServes) {
  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  Listener first = Listener::bind(path, {0600, ""});
  EXPECT_EQ(error_of([&] { Listener::bind(path, {0600, ""}); }),
            "cannot listen on " + path + ": another process is serving it");
  EXPECT_TRUE(exists(path));
}

TEST(Listener, RefusesAPathTooLongForASocket) {
  std::string path = "/tmp/" + std::string(200, 'x');
  EXPECT_EQ(error_of([&] { Listener::bind(path); }), "socket path " + path + ": empty or longer than 107 bytes");
}

TEST(Listener, TakesTheSocketSystemdPassed) {
  EXPECT_FALSE(Listener::from_systemd());

  TempDir dir;
  std::string path = dir.path() + "/kbuild.sock";
  Listener bound = Listener::bind(path, {0600, ""});
  // Socket activation passes the socket as fd 3; keep whatever the test runner has there.
  int saved = fcntl(3, F_DUPFD_CLOEXEC, 10);
  ASSERT_EQ(dup2(bound.fd(), 3), 3);
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  setenv("LISTEN_FDS", "1", 1);
  std::optional<Listener> passed = Listener::from_systemd();
  EXPECT_EQ(getenv("LISTEN_FDS"), nullptr);
  ASSERT_TRUE(passed);
  EXPECT_EQ(passed->fd(), 3);
  EXPECT_EQ(passed->path(), path);
  EXPECT_NE(fcntl(3, F_GETFD) & FD_CLOEXEC, 0);
  passed.reset();
  EXPECT_TRUE(exists(path)) << "a passed socket's file belongs to systemd";
  if (saved >= 0) {
    dup2(saved, 3);
    close(saved);
  }
}

TEST(Listener, RefusesWhatSystemdPassedIfItIsNoListeningSocket) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  int saved = fcntl(3, F_DUPFD_CLOEXEC, 10);
  ASSERT_EQ(dup2(fds[0], 3), 3);
  if (fds[0] != 3) close(fds[0]);
  if (fds[1] != 3) close(fds[1]);
  setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
  setenv("LISTEN_FDS", "1", 1);
  EXPECT_EQ(error_of([] { Listener::from_systemd(); }), "the socket systemd passed is not a listening unix stream socket");
  if (saved >= 0) {
    dup2(saved, 3);
    close(saved);
  }
}

}  // namespace
}  // namespace kbuild::dbus
