// The build's network for real: pasta and slirp4netns started on a fresh namespace. Needs root
// and the programs (Debian's passt and slirp4netns); the cases that need them skip without.
// Nothing leaves the machine: the host's resolver is a fake one on the host's loopback, put in
// place by bind-mounting a file over /etc/resolv.conf in this test's own mount namespace.
#include "engine/network/build_network.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::network {
namespace {

// The fake resolver's address on the host's loopback, and what it answers for every name.
constexpr const char* kFakeResolver = "127.83.0.1";
constexpr const char* kFakeAnswer = "192.0.2.77";

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// Runs `body` on a thread that has joined the namespace `ns_fd`: only that thread moves.
template <typename T>
T inside(int ns_fd, const std::function<T()>& body) {
  T result{};
  std::thread runner([&] {
    if (::setns(ns_fd, CLONE_NEWNET) != 0) {
      ADD_FAILURE() << "setns: " << std::strerror(errno);
      return;
    }
    result = body();
  });
  runner.join();
  return result;
}

std::set<std::string> interfaces_in(int ns_fd) {
  return inside<std::set<std::string>>(ns_fd, [] {
    std::set<std::string> names;
    std::istringstream dev(read_text("/proc/thread-self/net/dev"));
    std::string line;
    while (std::getline(dev, line)) {
      size_t colon = line.find(':');
      if (colon == std::string::npos || line.find('|') != std::string::npos) continue;
      size_t start = line.find_first_not_of(' ');
      names.insert(line.substr(start, colon - start));
    }
    return names;
  });
}

// errno of a TCP connect to address:port from inside the namespace (0 when it connected).
int connect_error(int ns_fd, const char* address, uint16_t port) {
  return inside<int>(ns_fd, [&] {
    UniqueFd sock(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    timeval timeout{3, 0};
    ::setsockopt(sock.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    ::inet_pton(AF_INET, address, &to.sin_addr);
    return ::connect(sock.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) == 0 ? 0 : errno;
  });
}

// The A record the resolver at `server` gives for `name`, asked from inside the namespace.
std::string resolve_inside(int ns_fd, const char* server, const std::string& name) {
  return inside<std::string>(ns_fd, [&]() -> std::string {
    std::string query("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
    size_t start = 0;
    while (start < name.size()) {
      size_t dot = name.find('.', start);
      if (dot == std::string::npos) dot = name.size();
      query.push_back(static_cast<char>(dot - start));
      query += name.substr(start, dot - start);
      start = dot + 1;
    }
    query += std::string("\0\0\x01\0\x01", 5);
    UniqueFd sock(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    timeval timeout{3, 0};
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    ::inet_pton(AF_INET, server, &to.sin_addr);
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) return "connect failed";
    if (::send(sock.get(), query.data(), query.size(), 0) < 0) return "send failed";
    char answer[512];
    ssize_t n = ::recv(sock.get(), answer, sizeof answer, 0);
    if (n < 16) return "no answer";
    char text[INET_ADDRSTRLEN];
    ::inet_ntop(AF_INET, answer + n - 4, text, sizeof text);
    return text;
  });
}

// A resolver on the host's loopback that answers every A query with kFakeAnswer.
class FakeResolver {
 public:
  FakeResolver() {
    socket_.reset(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_port = htons(53);
    ::inet_pton(AF_INET, kFakeResolver, &at.sin_addr);
    if (::bind(socket_.get(), reinterpret_cast<sockaddr*>(&at), sizeof at) != 0) return;
    timeval timeout{0, 100000};
    ::setsockopt(socket_.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    thread_ = std::thread([this] { serve(); });
  }
  ~FakeResolver() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  bool running() const { return thread_.joinable(); }

 private:
  void serve() {
    while (!stop_) {
      char query[512];
      sockaddr_in from{};
      socklen_t length = sizeof from;
      ssize_t n = ::recvfrom(socket_.get(), query, sizeof query, 0, reinterpret_cast<sockaddr*>(&from), &length);
      if (n < 12) continue;
      std::string answer(query, static_cast<size_t>(n));
      answer[2] = '\x81';
      answer[3] = '\x80';
      answer[7] = 1;  // one answer
      in_addr address{};
      ::inet_pton(AF_INET, kFakeAnswer, &address);
      answer += std::string("\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04", 12);
      answer.append(reinterpret_cast<const char*>(&address), 4);
      ::sendto(socket_.get(), answer.data(), answer.size(), 0, reinterpret_cast<sockaddr*>(&from), length);
    }
  }
  UniqueFd socket_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
};

// A TCP listener on the host's 127.0.0.1; its port.
class LoopbackService {
 public:
  LoopbackService() {
    socket_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in at{};
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(socket_.get(), reinterpret_cast<sockaddr*>(&at), sizeof at);
    ::listen(socket_.get(), 8);
    socklen_t length = sizeof at;
    ::getsockname(socket_.get(), reinterpret_cast<sockaddr*>(&at), &length);
    port_ = ntohs(at.sin_port);
  }
  uint16_t port() const { return port_; }

 private:
  UniqueFd socket_;
  uint16_t port_ = 0;
};

ino_t inode_of(int fd) {
  struct stat st {};
  ::fstat(fd, &st);
  return st.st_ino;
}

// Processes that hold the network namespace `inode` (as their own, or through an fd).
std::vector<std::string> holders_of(ino_t inode) {
  std::vector<std::string> found;
  std::string wanted = "net:[" + std::to_string(inode) + "]";
  DIR* proc = ::opendir("/proc");
  while (dirent* entry = ::readdir(proc)) {
    std::string pid = entry->d_name;
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::vector<std::string> links = {"/proc/" + pid + "/ns/net"};
    if (DIR* fds = ::opendir(("/proc/" + pid + "/fd").c_str())) {
      while (dirent* fd = ::readdir(fds)) links.push_back("/proc/" + pid + "/fd/" + fd->d_name);
      ::closedir(fds);
    }
    for (const std::string& link : links) {
      char target[256];
      ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
      if (n > 0 && std::string(target, static_cast<size_t>(n)) == wanted) found.push_back(link);
    }
  }
  ::closedir(proc);
  return found;
}

TEST(BuildNetwork, WithoutAnyStackTheErrorNamesThePackages) {
  NetworkConfig config;
  config.pasta = "/nonexistent/pasta";
  config.slirp4netns = "";
  TempDir scratch;
  try {
    BuildNetwork::create(config, scratch.path());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("RUN --network=default needs pasta (Debian package passt) or slirp4netns"),
              std::string::npos)
        << e.what();
  }
}

class BuildNetworkStack : public ::testing::TestWithParam<const char*> {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    // This process's own mount namespace, where /etc/resolv.conf names the fake resolver: the
    // stacks read it when they start.
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
      return;
    }
    resolv_dir_ = new TempDir();
    std::string path = resolv_dir_->path() + "/resolv.conf";
    std::ofstream(path) << "search kbuild.test\nnameserver " << kFakeResolver << "\n";
    mounted_ = ::mount(path.c_str(), "/etc/resolv.conf", nullptr, MS_BIND, nullptr) == 0;
  }

  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_TRUE(mounted_) << "could not put a test resolv.conf in place";
    program_ = GetParam();
    for (const char* dir : {"/usr/bin/", "/usr/sbin/", "/bin/"}) {
      if (::access((dir + program_).c_str(), X_OK) == 0) path_ = dir + program_;
    }
    if (path_.empty()) GTEST_SKIP() << program_ << " is not installed";
    config_.pasta = program_ == "pasta" ? path_ : "";
    config_.slirp4netns = program_ == "slirp4netns" ? path_ : "";
  }

  bool pasta() const { return program_ == "pasta"; }
  const char* forwarder() const { return pasta() ? kPastaDnsForwarder : kSlirpDnsForwarder; }

  static inline TempDir* resolv_dir_ = nullptr;
  static inline bool mounted_ = false;
  std::string program_, path_;
  NetworkConfig config_;
  TempDir scratch_;
};

TEST_P(BuildNetworkStack, StepSeesLoopbackAndTheStacksInterfaceOnly) {
  std::unique_ptr<BuildNetwork> network = BuildNetwork::create(config_, scratch_.path());
  EXPECT_EQ(network->stack(), path_);
  EXPECT_EQ(interfaces_in(network->namespace_fd()), (std::set<std::string>{"lo", "eth0"}));
}

TEST_P(BuildNetworkStack, HostLoopbackServicesAreUnreachable) {
  LoopbackService service;
  ASSERT_NE(service.port(), 0);
  std::unique_ptr<BuildNetwork> network = BuildNetwork::create(config_, scratch_.path());
  EXPECT_EQ(connect_error(network->namespace_fd(), "127.0.0.1", service.port()), ECONNREFUSED);
  if (!pasta()) {
    // slirp4netns's host alias: with --disable-host-loopback, not the host's loopback.
    EXPECT_NE(connect_error(network->namespace_fd(), "10.0.2.2", service.port()), 0);
  }
}

TEST_P(BuildNetworkStack, LoopbackHostResolverIsReachedThroughTheForwarder) {
  FakeResolver resolver;
  ASSERT_TRUE(resolver.running()) << "cannot bind " << kFakeResolver << ":53";
  config_.host_resolv_conf = "/etc/resolv.conf";
  std::unique_ptr<BuildNetwork> network = BuildNetwork::create(config_, scratch_.path());
  EXPECT_EQ(read_text(network->resolv_conf()), std::string("search kbuild.test\nnameserver ") + forwarder() + "\n");
  EXPECT_EQ(resolve_inside(network->namespace_fd(), forwarder(), "probe.kbuild.test"), kFakeAnswer);
}

TEST_P(BuildNetworkStack, NothingIsLeftAfterTheNetworkGoes) {
  std::unique_ptr<BuildNetwork> network = BuildNetwork::create(config_, scratch_.path());
  pid_t stack = network->stack_pid();
  ino_t ns = inode_of(network->namespace_fd());
  std::string resolv = network->resolv_conf();
  ASSERT_GT(stack, 0);
  EXPECT_EQ(::kill(stack, 0), 0);
  EXPECT_FALSE(holders_of(ns).empty());
  network.reset();
  EXPECT_NE(::kill(stack, 0), 0);
  EXPECT_EQ(errno, ESRCH);
  EXPECT_EQ(holders_of(ns), std::vector<std::string>{});
  EXPECT_NE(::access(resolv.c_str(), F_OK), 0);
}

TEST_P(BuildNetworkStack, AStackThatCannotStartFailsWithItsOwnWords) {
  // A program that exits at once stands in for a stack that cannot start.
  config_.pasta = pasta() ? "/bin/false" : "";
  config_.slirp4netns = pasta() ? "" : "/bin/false";
  try {
    BuildNetwork::create(config_, scratch_.path());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/bin/false exited before the network was up"), std::string::npos)
        << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Stacks, BuildNetworkStack, ::testing::Values("pasta", "slirp4netns"));

}  // namespace
}  // namespace kbuild::network
