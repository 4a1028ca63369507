// Both ends of SSH agent forwarding, kbuildd's SshAgentProxy and kbuildctl's SshAgentForwarder,
// wired through a socketpair as the Build call would, against a real ssh-agent and ssh-add
// (Debian's openssh-client) and a key made with ssh-keygen.
#include "engine/sandbox/ssh_proxy.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cli/ssh_forward.h"
#include "common/client_stream.h"
#include "common/temp_dir.h"
#include "engine/sandbox/ssh_forward_protocol.h"

namespace kbuild::sandbox {
namespace {

using cli::SshAgentForwarder;
using cli::SshSpec;
using ::testing::HasSubstr;

struct CommandResult {
  int status = -1;
  std::string output;
};

// `command` through sh, stdout and stderr together; a timeout keeps a hang from hanging the test.
CommandResult run(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen(("timeout 20 " + command + " 2>&1").c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0;) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

CommandResult ssh_add(const std::string& socket, const std::string& args = "-l") {
  return run("env SSH_AUTH_SOCK=" + socket + " ssh-add " + args);
}

std::size_t thread_count() {
  std::size_t count = 0;
  DIR* dir = ::opendir("/proc/self/task");
  while (dirent* entry = ::readdir(dir)) count += entry->d_name[0] != '.';
  ::closedir(dir);
  return count;
}

// Processes whose parent is this one, but `except`.
std::vector<pid_t> children(pid_t except = -1) {
  std::vector<pid_t> pids;
  DIR* dir = ::opendir("/proc");
  while (dirent* entry = ::readdir(dir)) {
    const pid_t pid = std::atoi(entry->d_name);
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::string(entry->d_name) + "/stat");
    std::string line;
    std::getline(stat, line);
    const std::size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(line.c_str() + paren + 1, " %c %d", &state, &ppid) == 2 && ppid == ::getpid() &&
        pid != except) {
      pids.push_back(pid);
    }
  }
  ::closedir(dir);
  return pids;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

UniqueFd connect_to(const std::string& socket) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, socket.c_str());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return UniqueFd();
  return fd;
}

// The type of the agent's answer to a request of `type` with `body` on `fd`; -1 without one.
int ask(int fd, char type, const std::string& body = {}) {
  std::string request = {0, 0, 0, static_cast<char>(body.size() + 1), type};
  request += body;
  if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(request.size())) return -1;
  std::vector<unsigned char> answer(4);
  for (std::size_t got = 0; got < answer.size();) {
    const ssize_t n = ::recv(fd, answer.data() + got, answer.size() - got, 0);
    if (n <= 0) return false;
    got += static_cast<std::size_t>(n);
    if (got == 4 && answer.size() == 4) {
      answer.resize(4 + ((answer[0] << 24) | (answer[1] << 16) | (answer[2] << 8) | answer[3]));
    }
  }
  return answer.size() > 4 ? answer[4] : -1;
}

// An agent request, "list your keys", on `fd`, and whether its answer came.
bool list_keys_on(int fd) {
  return ask(fd, 11) == 12;  // SSH_AGENTC_REQUEST_IDENTITIES, SSH_AGENT_IDENTITIES_ANSWER
}

bool list_keys_raw(const std::string& socket) {
  UniqueFd fd = connect_to(socket);
  return fd && list_keys_on(fd.get());
}

class SshForwardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (run("sh -c 'command -v ssh-agent && command -v ssh-add && command -v ssh-keygen'").status != 0) {
      GTEST_SKIP() << "needs openssh-client";
    }
    key_ = dir_.path() + "/id_ed25519";
    ASSERT_EQ(run("ssh-keygen -q -t ed25519 -N '' -C kbuild-test -f " + key_).status, 0);
    const CommandResult fingerprint = run("ssh-keygen -l -f " + key_ + ".pub");
    ASSERT_EQ(fingerprint.status, 0);
    fingerprint_ = fingerprint.output.substr(fingerprint.output.find("SHA256:"));
    fingerprint_ = fingerprint_.substr(0, fingerprint_.find(' '));
    ASSERT_THAT(fingerprint_, HasSubstr("SHA256:"));
    mounts_ = std::make_unique<TempDir>(dir_.path(), "mounts-");
    int pair[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
    daemon_end_.reset(pair[0]);
    client_end_.reset(pair[1]);
  }

  // Ends the user's agent (its socket removed before it exits), so that the temp dir is
  // removed whole.
  void TearDown() override { stop_user_agent(); }

  void stop_user_agent() {
    if (agent_pid_ <= 0) return;
    ::kill(agent_pid_, SIGTERM);
    ::waitpid(std::exchange(agent_pid_, -1), nullptr, 0);
  }

  // The user's agent, holding the key: a real ssh-agent, in the foreground as our child.
  std::string start_user_agent() {
    agent_pid_ = ::fork();
    if (agent_pid_ == 0) {
      ::execlp("ssh-agent", "ssh-agent", "-D", "-a", agent_socket_.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 500 && !exists(agent_socket_); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(ssh_add(agent_socket_, key_).status, 0);
    return agent_socket_;
  }

  std::unique_ptr<SshAgentForwarder> forwarder(std::vector<std::string> paths) {
    return std::make_unique<SshAgentForwarder>(SshSpec{"default", std::move(paths)}, std::move(client_end_),
                                               [this](const Error& e) {
                                                 std::lock_guard lock(mutex_);
                                                 connection_errors_.push_back(e.what());
                                               });
  }

  std::unique_ptr<SshAgentProxy> proxy(SshSocketOwner owner = {}, int cancel_fd = -1) {
    return std::make_unique<SshAgentProxy>(daemon_end_.get(), mounts_->path(), owner, cancel_fd, "default");
  }

  TempDir dir_{"/tmp", "kbuild-ssh-test-"};
  std::string key_;
  std::string fingerprint_;
  std::unique_ptr<TempDir> mounts_;
  UniqueFd daemon_end_;
  UniqueFd client_end_;
  std::string agent_socket_ = dir_.path() + "/user-agent.sock";
  pid_t agent_pid_ = -1;
  std::mutex mutex_;
  std::vector<std::string> connection_errors_;
};

TEST_F(SshForwardTest, SshAddThroughTheProxyListsTheUsersKey) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  auto daemon = proxy();
  const CommandResult listed = ssh_add(daemon->socket_path());
  EXPECT_EQ(listed.status, 0) << listed.output;
  EXPECT_THAT(listed.output, HasSubstr(fingerprint_));
  daemon.reset();
  client->finish();
  EXPECT_TRUE(connection_errors_.empty());
}

TEST_F(SshForwardTest, ConcurrentConnectionsAreServedTogether) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  auto daemon = proxy();
  std::vector<std::future<CommandResult>> runs;
  for (int i = 0; i < 3; ++i) {
    runs.push_back(std::async(std::launch::async, [socket = daemon->socket_path()] { return ssh_add(socket); }));
  }
  for (auto& result : runs) {
    const CommandResult listed = result.get();
    EXPECT_EQ(listed.status, 0) << listed.output;
    EXPECT_THAT(listed.output, HasSubstr(fingerprint_));
  }
  // Ten open at once, asked in the reverse order of connecting: each is answered while the
  // others stay open.
  std::vector<UniqueFd> open;
  for (int i = 0; i < 10; ++i) open.push_back(connect_to(daemon->socket_path()));
  for (auto it = open.rbegin(); it != open.rend(); ++it) EXPECT_TRUE(list_keys_on(it->get()));
  for (UniqueFd& fd : open) EXPECT_TRUE(list_keys_on(fd.get()));
}

TEST_F(SshForwardTest, TheStepCannotChangeTheUsersAgent) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  auto daemon = proxy();
  EXPECT_NE(ssh_add(daemon->socket_path(), "-D").status, 0);
  UniqueFd fd = connect_to(daemon->socket_path());
  ASSERT_TRUE(fd);
  EXPECT_EQ(ask(fd.get(), 19), 5);                           // remove all: SSH_AGENT_FAILURE
  EXPECT_EQ(ask(fd.get(), 22, std::string("\0\0\0\1x", 5)), 5);  // lock with "x"
  EXPECT_EQ(ask(fd.get(), 27, std::string("\0\0\0\5query", 9)), 5);  // extension
  EXPECT_TRUE(list_keys_on(fd.get()));                       // and the connection goes on
  const CommandResult listed = ssh_add(agent);
  EXPECT_THAT(listed.output, HasSubstr(fingerprint_));
}

TEST_F(SshForwardTest, KeyFilesAreServedByAPrivateAgentRemovedAfterwards) {
  const std::size_t threads_before = thread_count();
  auto client = forwarder({key_});
  const std::string private_socket = client->agent_socket();
  EXPECT_TRUE(exists(private_socket));
  // The private ssh-agent, and the watcher that kills it should this process die (Debian's
  // ssh-agent is setgid, which clears the parent-death signal).
  EXPECT_EQ(children().size(), 2u);
  auto daemon = proxy();
  const std::string proxy_socket = daemon->socket_path();
  const CommandResult listed = ssh_add(proxy_socket);
  EXPECT_EQ(listed.status, 0) << listed.output;
  EXPECT_THAT(listed.output, HasSubstr(fingerprint_));

  daemon.reset();
  client->finish();
  client.reset();
  EXPECT_FALSE(exists(proxy_socket));
  EXPECT_FALSE(exists(private_socket));
  EXPECT_TRUE(children().empty());
  EXPECT_EQ(thread_count(), threads_before);
}

TEST_F(SshForwardTest, DestructionDuringOpenConnectionsLeavesNothingBehind) {
  const std::string agent = start_user_agent();
  const std::size_t threads_before = thread_count();
  auto client = forwarder({agent});
  auto daemon = proxy();
  const std::string socket = daemon->socket_path();
  // Connections the step holds open, mid-conversation, when the step ends.
  std::vector<UniqueFd> held;
  for (int i = 0; i < 5; ++i) {
    UniqueFd fd = connect_to(socket);
    ASSERT_TRUE(fd);
    ASSERT_EQ(::send(fd.get(), "\0\0", 2, MSG_NOSIGNAL), 2);  // half a length prefix
    held.push_back(std::move(fd));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  daemon.reset();
  client.reset();
  EXPECT_FALSE(exists(socket));
  EXPECT_EQ(thread_count(), threads_before);
  EXPECT_TRUE(children(agent_pid_).empty());
}

TEST_F(SshForwardTest, AClientThatClosesTheControlSocketEndsForwardingWithoutHanging) {
  auto daemon = proxy();
  client_end_.reset();
  const auto start = std::chrono::steady_clock::now();
  const CommandResult listed = ssh_add(daemon->socket_path());
  EXPECT_NE(listed.status, 0) << listed.output;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  // The next one is refused at once: nothing listens any more.
  for (int i = 0; i < 100 && !daemon->failure(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(daemon->failure());
  EXPECT_THAT(daemon->failure()->what(), HasSubstr("ssh agent default: kbuildctl closed the SSH agent forwarding"));
  EXPECT_FALSE(list_keys_raw(daemon->socket_path()));
}

TEST_F(SshForwardTest, AClientThatWritesToTheControlSocketEndsForwarding) {
  auto daemon = proxy();
  ASSERT_EQ(::send(client_end_.get(), "x", 1, MSG_NOSIGNAL), 1);
  for (int i = 0; i < 100 && !daemon->failure(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(daemon->failure());
  EXPECT_THAT(daemon->failure()->what(), HasSubstr("kbuildctl wrote to the SSH agent forwarding socket"));
  EXPECT_FALSE(list_keys_raw(daemon->socket_path()));
}

TEST_F(SshForwardTest, AClientThatNeverAnswersDoesNotHoldTheProxysDestruction) {
  auto daemon = proxy();
  // kbuildctl holds the control socket but serves nothing: the step's connection waits...
  auto waiting = std::async(std::launch::async, [socket = daemon->socket_path()] { return list_keys_raw(socket); });
  EXPECT_EQ(waiting.wait_for(std::chrono::milliseconds(200)), std::future_status::timeout);
  // ...until the step ends, which ends it.
  daemon.reset();
  EXPECT_FALSE(waiting.get());
}

TEST_F(SshForwardTest, TheBuildsCancelEndsForwarding) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  CancelSignal cancel;
  auto daemon = proxy({}, cancel.fd());
  EXPECT_TRUE(list_keys_raw(daemon->socket_path()));
  cancel.cancel();
  for (int i = 0; i < 100 && list_keys_raw(daemon->socket_path()); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(list_keys_raw(daemon->socket_path()));
  EXPECT_FALSE(daemon->failure());  // canceled is not a failure of the client
}

TEST_F(SshForwardTest, TheSocketHasTheMountsModeAndOwnerInAPrivateDirectory) {
  auto defaults = proxy();
  struct stat st {};
  ASSERT_EQ(::stat(defaults->socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  EXPECT_EQ(st.st_gid, 0u);
  const std::string dir = defaults->socket_path().substr(0, defaults->socket_path().rfind('/'));
  ASSERT_EQ(::stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  struct stat by_fd {};
  ASSERT_EQ(::fstat(defaults->socket_file(), &by_fd), 0);
  ASSERT_EQ(::stat(defaults->socket_path().c_str(), &st), 0);
  EXPECT_EQ(by_fd.st_ino, st.st_ino);

  if (::geteuid() != 0) return;
  auto custom = proxy({0640, 1000, 1001});
  ASSERT_EQ(::stat(custom->socket_path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 1001u);
  EXPECT_NE(custom->socket_path(), defaults->socket_path());
}

TEST_F(SshForwardTest, TwoStepsShareOneControlSocket) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  auto first = proxy();
  auto second = proxy();
  auto a = std::async(std::launch::async, [&] { return ssh_add(first->socket_path()); });
  auto b = std::async(std::launch::async, [&] { return ssh_add(second->socket_path()); });
  EXPECT_THAT(a.get().output, HasSubstr(fingerprint_));
  EXPECT_THAT(b.get().output, HasSubstr(fingerprint_));
}

TEST_F(SshForwardTest, AProxyRefusesAControlFdThatIsNotAStreamSocket) {
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  try {
    SshAgentProxy bad(read_end.get(), mounts_->path(), {}, -1, "default");
    FAIL() << "a pipe was taken";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_THAT(e.what(), HasSubstr("not a Unix socket"));
  }
}

TEST_F(SshForwardTest, AMalformedFrameEndsTheForwarderWithAClearError) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  const char garbage[] = {7, 0, 0, 0, 0};
  ASSERT_EQ(::send(daemon_end_.get(), garbage, sizeof garbage, MSG_NOSIGNAL), 5);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  try {
    client->finish();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ssh agent default: kbuildd sent a malformed frame: unknown frame type 7"));
  }
}

TEST_F(SshForwardTest, AConnectionFrameWithoutAnFdIsMalformed) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  const char frame[] = {1, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1};
  ASSERT_EQ(::send(daemon_end_.get(), frame, sizeof frame, MSG_NOSIGNAL), 13);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  try {
    client->finish();
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("a connection frame with 0 fds"));
  }
}

TEST_F(SshForwardTest, AnAgentThatIsGoneFailsOnlyItsConnection) {
  const std::string agent = start_user_agent();
  auto client = forwarder({agent});
  auto daemon = proxy();
  stop_user_agent();
  EXPECT_NE(ssh_add(daemon->socket_path()).status, 0);
  daemon.reset();
  client->finish();  // the forwarding itself was fine
  std::lock_guard lock(mutex_);
  ASSERT_FALSE(connection_errors_.empty());
  EXPECT_THAT(connection_errors_[0], HasSubstr("ssh agent default: connection 1: connect " + agent));
}

// --- What the forwarder refuses before a build starts ---

std::string forwarder_error(std::vector<std::string> paths) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return "socketpair";
  UniqueFd keep(pair[0]);
  try {
    SshAgentForwarder forwarder(SshSpec{"deploy", std::move(paths)}, UniqueFd(pair[1]));
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST_F(SshForwardTest, PathsThatAreNotAnAgentOrKeysAreRefused) {
  const std::string agent = start_user_agent();
  EXPECT_THAT(forwarder_error({dir_.path() + "/missing"}),
              HasSubstr("ssh agent deploy: stat " + dir_.path() + "/missing: No such file or directory"));
  EXPECT_EQ(forwarder_error({dir_.path()}),
            "ssh agent deploy: failed to read " + dir_.path() + ": neither an SSH agent socket nor a key file");
  EXPECT_EQ(forwarder_error({agent, agent}), "ssh agent deploy: only single socket allowed");
  EXPECT_EQ(forwarder_error({key_, agent}), "ssh agent deploy: invalid combination of keys and sockets");
  EXPECT_THAT(forwarder_error({key_ + ".pub"}),
              HasSubstr("ssh agent deploy: failed to add " + key_ + ".pub to agent: "));
  EXPECT_THAT(forwarder_error({}), HasSubstr("invalid empty ssh agent socket"));
  EXPECT_TRUE(children(agent_pid_).empty());
}

}  // namespace
}  // namespace kbuild::sandbox
