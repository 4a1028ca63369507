#include "engine/network/build_network.h"

#include <fcntl.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <future>
#include <vector>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "engine/network/resolv_conf.h"

namespace kbuild::network {

const char* const kNoStackMessage =
    "RUN --network=default needs pasta (Debian package passt) or slirp4netns, and neither is installed";

namespace {

// Source fds are lifted above the targets (0-4) before the child dup2s them into place.
constexpr int kLiftedFdBase = 256;

std::string find_program(const std::string& name) {
  if (name.empty()) return {};
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : std::string();
  const char* env = std::getenv("PATH");
  std::string path = env && *env ? env : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t colon = path.find(':', start);
    if (colon == std::string::npos) colon = path.size();
    std::string dir = path.substr(start, colon - start);
    start = colon + 1;
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return {};
}

void bring_up_loopback() {
  UniqueFd sock(check(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket"));
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  check(::ioctl(sock.get(), SIOCGIFFLAGS, &request), "reading loopback flags");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_RUNNING);
  check(::ioctl(sock.get(), SIOCSIFFLAGS, &request), "bringing up loopback");
}

// A new network namespace with loopback up, held by the returned fd alone: no process lives in
// it. Made on a thread of its own, since unshare(CLONE_NEWNET) moves only the calling thread.
UniqueFd new_network_namespace() {
  UniqueFd ns;
  std::exception_ptr failure;
  std::thread maker([&] {
    try {
      check(::unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)");
      ns.reset(check(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC), "open", "/proc/thread-self/ns/net"));
      bring_up_loopback();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  maker.join();
  if (failure) std::rethrow_exception(failure);
  return ns;
}

std::string read_file_or_empty(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  return read_all(fd.get(), path);
}

// What the stack said on stderr, without pasta's complaints that it has no syslog.
std::string stack_messages(int memfd) {
  ::lseek(memfd, 0, SEEK_SET);
  std::string text = read_all(memfd, "the network stack's output");
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line.rfind("Failed to send", 0) == 0) continue;
    out += (out.empty() ? "" : "; ") + line;
  }
  return out;
}

std::vector<std::string> stack_argv(const std::string& program, bool pasta, bool dns_forward) {
  // The namespace arrives as fd 3, the readiness pipe as fd 4.
  if (pasta) {
    // -T/-U none: no port of the host's loopback is forwarded into the namespace (the default,
    // auto, forwards every bound one); --no-map-gw: the gateway address is the real gateway, not
    // the host. -t/-u none: nothing on the host reaches into the namespace. --runas 0: only
    // root may join a namespace root made; pasta still drops its capabilities and sandboxes
    // itself. It writes its pid file (the pipe) once the interface is configured.
    std::vector<std::string> argv = {program,       "--foreground", "--quiet", "--runas", "0",    "--config-net",
                                     "--ns-ifname", kInterface,     "--no-map-gw", "-t", "none", "-u",
                                     "none",        "-T",           "none",    "-U",      "none"};
    // Only when the step's resolv.conf points there: the pasta of Debian 12 then also rewrites
    // the source of every answer from the host's first resolver, which breaks steps that ask it
    // directly.
    if (dns_forward) argv.insert(argv.end(), {"--dns-forward", kPastaDnsForwarder});
    argv.insert(argv.end(), {"--pid", "/proc/self/fd/4", "--netns", "/proc/self/fd/3"});
    return argv;
  }
  return {program, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox", "--enable-seccomp",
          "--netns-type=path", "--ready-fd=4", "/proc/self/fd/3", kInterface};
}

// fork+exec rather than posix_spawn: the child needs a parent-death signal. Between fork and
// exec it makes only system calls.
pid_t spawn_stack(const std::vector<std::string>& args, const std::vector<int>& fds) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  char path_env[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  char* envp[] = {path_env, nullptr};
  pid_t parent = ::getpid();
  pid_t pid = check(::fork(), "fork");
  if (pid != 0) return pid;
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);
  for (size_t target = 0; target < fds.size(); ++target) {
    if (::dup2(fds[target], static_cast<int>(target)) < 0) ::_exit(127);
  }
  ::syscall(SYS_close_range, fds.size(), ~0U, 0);
  // The daemon blocks its stop signals and ignores SIGPIPE; the stack starts as programs do.
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGPIPE, SIG_DFL);
  ::execve(argv[0], argv.data(), envp);
  ::_exit(127);
}

}  // namespace

std::unique_ptr<BuildNetwork> BuildNetwork::create(const NetworkConfig& config, const std::string& scratch_parent) {
  std::string pasta = find_program(config.pasta);
  std::string slirp = find_program(config.slirp4netns);
  if (pasta.empty() && slirp.empty()) throw Error(ErrorKind::user, kNoStackMessage);

  std::unique_ptr<BuildNetwork> network(new BuildNetwork());
  network->namespace_ = new_network_namespace();
  network->scratch_.emplace(scratch_parent, "net-");
  std::string host = read_file_or_empty(config.host_resolv_conf);

  std::string failures;
  for (bool use_pasta : {true, false}) {
    const std::string& program = use_pasta ? pasta : slirp;
    if (program.empty()) continue;
    // pasta mirrors the host's addresses, IPv6 included; slirp4netns is run without IPv6.
    StepResolvConf resolv = step_resolv_conf(host, use_pasta ? kPastaDnsForwarder : kSlirpDnsForwarder, use_pasta, config.dns);
    network->resolv_conf_ = network->scratch_->path() + "/resolv.conf";
    UniqueFd file(check(::open(network->resolv_conf_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644),
                        "create", network->resolv_conf_));
    write_all(file.get(), resolv.text, network->resolv_conf_);
    try {
      network->start_stack(program, use_pasta, resolv.uses_forwarder, config.start_timeout);
      network->stack_ = program;
      return network;
    } catch (const Error& e) {
      failures += (failures.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  throw Error(ErrorKind::internal, "setting up the build's network: " + failures);
}

void BuildNetwork::start_stack(const std::string& program, bool pasta, bool dns_forward,
                               std::chrono::milliseconds timeout) {
  int ready_pipe[2];
  check(::pipe2(ready_pipe, O_CLOEXEC), "pipe");
  UniqueFd ready_read(ready_pipe[0]), ready_write(ready_pipe[1]);
  UniqueFd output(check(::memfd_create("kbuild-network-stack", MFD_CLOEXEC), "memfd_create"));
  UniqueFd dev_null(check(::open("/dev/null", O_RDONLY | O_CLOEXEC), "open", "/dev/null"));
  std::vector<UniqueFd> lifted;
  for (int fd : {dev_null.get(), output.get(), output.get(), namespace_.get(), ready_write.get()}) {
    lifted.emplace_back(check(::fcntl(fd, F_DUPFD_CLOEXEC, kLiftedFdBase), "dup"));
  }
  std::vector<int> fds;
  for (const UniqueFd& fd : lifted) fds.push_back(fd.get());
  std::vector<std::string> argv = stack_argv(program, pasta, dns_forward);

  std::promise<pid_t> started;
  std::future<pid_t> result = started.get_future();
  stopping_ = false;
  // argv, fds and started are this frame's: the keeper uses them only until it has forked.
  keeper_ = std::thread([this, &argv, &fds, &started] {
    pid_t pid = -1;
    try {
      pid = spawn_stack(argv, fds);
    } catch (...) {
      started.set_exception(std::current_exception());
      return;
    }
    started.set_value(pid);
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [this] { return stopping_; });
    lock.unlock();
    ::kill(pid, SIGKILL);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
  });
  try {
    stack_pid_ = result.get();
  } catch (...) {
    keeper_.join();
    throw;
  }
  lifted.clear();
  ready_write.reset();

  // Ready when the stack writes to the pipe (pasta its pid, slirp4netns "1"); the end of the
  // pipe before that means it exited.
  pollfd poll_ready{ready_read.get(), POLLIN, 0};
  int ready = 0;
  do {
    ready = ::poll(&poll_ready, 1, static_cast<int>(timeout.count()));
  } while (ready < 0 && errno == EINTR);
  char byte = 0;
  ssize_t n = ready > 0 ? ::read(ready_read.get(), &byte, 1) : -1;
  if (n == 1) return;
  stop_stack();
  std::string said = stack_messages(output.get());
  std::string what = ready == 0 ? "did not configure the network within " + std::to_string(timeout.count()) + " ms"
                                : "exited before the network was up";
  throw Error(ErrorKind::internal, program + " " + what + (said.empty() ? "" : ": " + said));
}

void BuildNetwork::stop_stack() {
  if (!keeper_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  keeper_.join();
  stack_pid_ = -1;
}

BuildNetwork::~BuildNetwork() { stop_stack(); }

}  // namespace kbuild::network
