#include "cli/ssh_forward.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <optional>
#include <set>
#include <thread>

#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/temp_dir.h"

extern char** environ;

namespace kbuild::cli {
namespace {

namespace ssh_forward = sandbox::ssh_forward;

// OpenSSH's ssh-agent refuses messages over 256 KiB (AGENT_MAX_LEN); a step's requests are held
// to it. Answers come from the user's own agent, which a list of many keys may make longer.
constexpr std::uint32_t kRequestLimit = 256 << 10;
constexpr std::uint32_t kAnswerLimit = 4 << 20;
// The agent protocol's message numbers (draft-miller-ssh-agent) that a step may send.
constexpr unsigned char kRequestIdentities = 11;
constexpr unsigned char kSignRequest = 13;
constexpr unsigned char kAgentFailure = 5;
// BuildKit dials an agent with a 2 second timeout.
constexpr auto kConnectTimeout = std::chrono::seconds(2);
constexpr auto kAgentStartTimeout = std::chrono::seconds(10);

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const std::size_t end = text.find(separator, start);
    parts.push_back(text.substr(start, end - start));
    if (end == std::string::npos) return parts;
    start = end + 1;
  }
}

// --- Reads and writes that a stop fd interrupts ---

[[noreturn]] void throw_stopped() {
  throw Error(ErrorKind::canceled, "SSH agent forwarding stopped");
}

// Fills `data`; false only when the peer closed before the first byte and `started` is false.
bool read_exactly(int fd, char* data, std::size_t size, bool started, int stop_fd, const char* what) {
  while (size > 0) {
    if (!ssh_forward::wait_ready(fd, POLLIN, {stop_fd})) throw_stopped();
    const ssize_t n = ::recv(fd, data, size, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n < 0) throw_errno("reading from", what);
    if (n == 0) {
      if (!started) return false;
      throw Error(ErrorKind::internal, std::string(what) + " closed the connection in the middle of a message");
    }
    data += n;
    size -= static_cast<std::size_t>(n);
    started = true;
  }
  return true;
}

void send_all(int fd, std::string_view data, int stop_fd, const char* what) {
  while (!data.empty()) {
    if (!ssh_forward::wait_ready(fd, POLLOUT, {stop_fd})) throw_stopped();
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
    if (n < 0) throw_errno("writing to", what);
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// --- The agent protocol: a 4-byte big-endian length, then that many bytes, the first the type ---

// The next message from `fd`, length prefix included; false at end of file between messages.
bool read_message(int fd, std::string& message, std::uint32_t limit, int stop_fd, const char* what) {
  message.resize(4);
  if (!read_exactly(fd, message.data(), 4, false, stop_fd, what)) return false;
  std::uint32_t size = 0;
  for (int i = 0; i < 4; ++i) size = (size << 8) | static_cast<unsigned char>(message[i]);
  if (size > limit) {
    throw Error(ErrorKind::internal, std::string(what) + " sent an agent message of " + std::to_string(size) +
                                         " bytes, more than " + std::to_string(limit));
  }
  message.resize(4 + size);
  read_exactly(fd, message.data() + 4, size, true, stop_fd, what);
  return true;
}

// BuildKit's readOnlyAgent: listing and signing, nothing that changes the user's agent.
bool allowed_request(const std::string& message) {
  if (message.size() < 5) return false;
  const auto type = static_cast<unsigned char>(message[4]);
  return type == kRequestIdentities || type == kSignRequest;
}

// Connects to the agent socket at `path`, retrying while its backlog is full, as a dial with
// BuildKit's timeout would.
UniqueFd connect_agent(const std::string& path, int stop_fd) {
  struct sockaddr_un addr {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) throw Error(ErrorKind::user, path + ": path too long for a socket");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const auto deadline = std::chrono::steady_clock::now() + kConnectTimeout;
  for (;;) {
    UniqueFd fd(check(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), "socket"));
    if (::connect(fd.get(), reinterpret_cast<const struct sockaddr*>(&addr), sizeof addr) == 0) return fd;
    if (errno != EAGAIN || std::chrono::steady_clock::now() >= deadline) throw_errno("connect", path);
    struct pollfd p = {stop_fd, POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) throw_stopped();
  }
}

// One step's agent connection (`step`, the fd kbuildd sent) served against the agent at
// `agent_path`, request by request, until the step closes it.
void serve_agent_connection(int step, const std::string& agent_path, int stop_fd) {
  UniqueFd agent = connect_agent(agent_path, stop_fd);
  static constexpr char kFailure[] = {0, 0, 0, 1, static_cast<char>(kAgentFailure)};
  std::string request, answer;
  while (read_message(step, request, kRequestLimit, stop_fd, "the build step")) {
    if (!allowed_request(request)) {
      send_all(step, std::string_view(kFailure, sizeof kFailure), stop_fd, "the build step");
      continue;
    }
    send_all(agent.get(), request, stop_fd, "the SSH agent");
    if (!read_message(agent.get(), answer, kAnswerLimit, stop_fd, "the SSH agent")) {
      throw Error(ErrorKind::internal, "the SSH agent at " + agent_path + " closed the connection");
    }
    send_all(step, answer, stop_fd, "the build step");
  }
}

// --- Processes ---

// A program found in $PATH, as execvp would find it; looked up before fork, since the child of
// a threaded process may only make async-signal-safe calls.
std::string find_program(const std::string& name) {
  const char* path = ::getenv("PATH");
  for (const std::string& dir : split(path && *path ? path : "/usr/local/bin:/usr/bin:/bin", ':')) {
    const std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw Error(ErrorKind::user, name + " not found in $PATH: SSH key files with --ssh need OpenSSH's client "
                                      "(Debian's openssh-client)");
}

// The environment with `name` set to `value`, for a child.
std::vector<std::string> environment_with(const std::string& name, const std::string& value) {
  std::vector<std::string> env;
  for (char** e = environ; e && *e; ++e) {
    if (std::strncmp(*e, name.c_str(), name.size()) != 0 || (*e)[name.size()] != '=') env.emplace_back(*e);
  }
  env.push_back(name + "=" + value);
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (std::string& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// A child process, signalled and reaped on destruction unless wait() reaped it.
class ChildProcess {
 public:
  // Runs `argv` (argv[0] a path) with `env`, its stdin `stdin_fd` and stdout and stderr
  // `output_fd`, no other fd, and SIGTERM when the thread that started it ends. With
  // `watched`, also SIGTERM when this process dies, however it dies: a program that is setgid
  // (Debian's ssh-agent) loses the parent-death signal at exec, so a watcher of ours sends it.
  ChildProcess(std::vector<std::string> argv, std::vector<std::string> env, int stdin_fd, int output_fd,
               bool watched = false) {
    std::vector<char*> args = c_strings(argv);
    std::vector<char*> envp = c_strings(env);
    const pid_t parent = ::getpid();
    pid_ = check(::fork(), "fork", argv[0]);
    if (pid_ == 0) {
      // The child: async-signal-safe calls only.
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      if (::dup2(stdin_fd, 0) < 0 || ::dup2(output_fd, 1) < 0 || ::dup2(output_fd, 2) < 0) ::_exit(127);
      ::close_range(3, ~0U, 0);
      ::execve(args[0], args.data(), envp.data());
      ::_exit(127);
    }
    if (watched) start_watcher();
  }
  ~ChildProcess() {
    stop_watcher();
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // A process that holds only the read end of a pipe whose write end only we hold: at its end
  // of file (we died, or stop_watcher) it signals the child. The child is reaped only after the
  // watcher has ended, so its pid cannot be another process's by then.
  void start_watcher() {
    int fds[2];
    check(::pipe2(fds, O_CLOEXEC), "pipe2");
    UniqueFd read_end(fds[0]);
    watcher_pipe_.reset(fds[1]);
    const pid_t child = pid_;
    watcher_ = check(::fork(), "fork", "watcher");
    if (watcher_ != 0) return;
    // The watcher: async-signal-safe calls only, and no fd of ours but the pipe.
    if (::dup2(read_end.get(), 0) < 0) ::_exit(127);
    ::close_range(1, ~0U, 0);
    char byte;
    while (::read(0, &byte, 1) != 0) {
      if (errno != EINTR) break;
    }
    ::kill(child, SIGTERM);
    ::_exit(0);
  }
  void stop_watcher() {
    if (watcher_ <= 0) return;
    watcher_pipe_.reset();
    while (::waitpid(watcher_, nullptr, 0) < 0 && errno == EINTR) {
    }
    watcher_ = -1;
  }

  // Its wait status once it exited; nullopt while it runs (when `block` is false).
  std::optional<int> wait(bool block) {
    if (!block) {
      // Looked at without reaping it: the watcher must end before the pid is free.
      siginfo_t info{};
      while (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == EINTR) {
      }
      if (info.si_pid == 0) return std::nullopt;
    }
    stop_watcher();
    int status = 0;
    pid_t got;
    while ((got = ::waitpid(pid_, &status, 0)) < 0 && errno == EINTR) {
    }
    check(got, "waitpid");
    pid_ = -1;
    return status;
  }


 private:
  pid_t pid_ = -1;
  pid_t watcher_ = -1;
  UniqueFd watcher_pipe_;
};

// What a child wrote to `output` (a memfd), trimmed, for an error message.
std::string output_of(int output) {
  ::lseek(output, 0, SEEK_SET);
  std::string text = read_all(output, "ssh output");
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  return text.size() > 4096 ? text.substr(text.size() - 4096) : text;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "signal " + std::to_string(WTERMSIG(status));
  return "status " + std::to_string(status);
}

UniqueFd open_null() {
  return UniqueFd(check(::open("/dev/null", O_RDWR | O_CLOEXEC), "open", "/dev/null"));
}

// --- What the paths are ---

struct AgentSource {
  std::string socket;             // an agent's socket, or
  std::vector<std::string> keys;  // key files for a private agent
};

// BuildKit's toAgentSource, with its errors: one socket, or key files, not both.
AgentSource classify_paths(const std::vector<std::string>& paths) {
  AgentSource source;
  for (const std::string& path : paths) {
    if (!source.socket.empty()) throw Error(ErrorKind::user, "only single socket allowed");
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) throw_errno("stat", path);
    if (S_ISSOCK(st.st_mode)) {
      if (!source.keys.empty()) throw Error(ErrorKind::user, "invalid combination of keys and sockets");
      source.socket = path;
    } else if (S_ISREG(st.st_mode)) {
      source.keys.push_back(path);
    } else {
      throw Error(ErrorKind::user, "failed to read " + path + ": neither an SSH agent socket nor a key file");
    }
  }
  return source;
}

}  // namespace

SshSpec parse_ssh_flag(const std::string& value) {
  SshSpec spec;
  const std::size_t equals = value.find('=');
  spec.id = value.substr(0, equals);
  if (equals != std::string::npos) spec.paths = split(value.substr(equals + 1), ',');
  return spec;
}

SshSpec resolve_ssh_spec(SshSpec spec, const char* auth_sock) {
  if (spec.paths.empty() || (spec.paths.size() == 1 && spec.paths[0].empty())) {
    spec.paths = {auth_sock ? auth_sock : ""};
  }
  if (spec.paths[0].empty()) {
    throw Error(ErrorKind::user, "invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set");
  }
  if (spec.id.empty()) spec.id = "default";
  return spec;
}

std::vector<SshSpec> parse_ssh_flags(const std::vector<std::string>& values, const char* auth_sock) {
  std::vector<SshSpec> specs;
  std::set<std::string> ids;
  for (const std::string& value : values) {
    SshSpec spec = resolve_ssh_spec(parse_ssh_flag(value), auth_sock);
    if (!ids.insert(spec.id).second) throw Error(ErrorKind::user, "invalid duplicate ID " + spec.id);
    specs.push_back(std::move(spec));
  }
  return specs;
}

// An ssh-agent of this build's own, holding the key files of one --ssh ID, in a directory of
// mode 0700; killed, and the directory removed, on destruction.
class SshAgentForwarder::PrivateAgent {
 public:
  explicit PrivateAgent(const std::vector<std::string>& keys)
      : dir_(runtime_dir(), "kbuildctl-ssh-"), socket_(dir_.path() + "/agent.sock") {
    UniqueFd null = open_null();
    UniqueFd output = memfd_holding("ssh-agent output", "");
    // -D: in the foreground, so that it is our child to kill; -a: at our socket.
    agent_.emplace(std::vector<std::string>{find_program("ssh-agent"), "-D", "-a", socket_},
                   environment_with("SSH_AUTH_SOCK", ""), null.get(), output.get(), true);
    wait_until_listening(output.get());
    for (const std::string& key : keys) add(key);
  }

  const std::string& socket() const { return socket_; }

 private:
  static std::string runtime_dir() {
    const char* dir = ::getenv("XDG_RUNTIME_DIR");
    return dir && *dir && ::access(dir, W_OK) == 0 ? dir : "/tmp";
  }

  void wait_until_listening(int output) {
    const auto deadline = std::chrono::steady_clock::now() + kAgentStartTimeout;
    for (;;) {
      if (std::optional<int> status = agent_->wait(false)) {
        throw Error(ErrorKind::internal,
                    "ssh-agent exited with " + describe_status(*status) + ": " + output_of(output));
      }
      try {
        CancelSignal never;
        connect_agent(socket_, never.fd());
        return;
      } catch (const Error&) {
        if (std::chrono::steady_clock::now() >= deadline) throw;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }

  // ssh-add of one key: the passphrase, if any, is asked on the terminal (ssh-add's stdin when
  // ours is one).
  void add(const std::string& key) {
    UniqueFd null = open_null();
    UniqueFd output = memfd_holding("ssh-add output", "");
    const int input = ::isatty(0) ? 0 : null.get();
    ChildProcess add({find_program("ssh-add"), "-q", "--", key}, environment_with("SSH_AUTH_SOCK", socket_), input,
                     output.get());
    const int status = *add.wait(true);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
    std::string detail = output_of(output.get());
    if (detail.empty()) detail = "ssh-add ended with " + describe_status(status);
    throw Error(ErrorKind::user, "failed to add " + key + " to agent: " + detail);
  }

  TempDir dir_;
  std::string socket_;
  std::optional<ChildProcess> agent_;  // destroyed before dir_
};

SshAgentForwarder::SshAgentForwarder(SshSpec spec, UniqueFd control, ConnectionErrorSink on_error)
    : spec_(std::move(spec)), control_(std::move(control)), on_error_(std::move(on_error)) {
  if (spec_.paths.empty() || spec_.paths[0].empty()) {
    throw Error(ErrorKind::user, "invalid empty ssh agent socket: make sure SSH_AUTH_SOCK is set");
  }
  try {
    ssh_forward::check_control_socket(control_.get(), "the control socket");
    AgentSource source = classify_paths(spec_.paths);
    if (source.socket.empty()) {
      private_agent_ = std::make_unique<PrivateAgent>(source.keys);
      agent_socket_ = private_agent_->socket();
    } else {
      agent_socket_ = source.socket;
    }
  } catch (const Error& e) {
    throw e.with_context("ssh agent " + spec_.id);
  }
  if (!on_error_) {
    on_error_ = [](const Error& e) { std::cerr << "warning: " << e.what() << std::endl; };
  }
  thread_ = std::thread([this] { serve(); });
}

SshAgentForwarder::~SshAgentForwarder() {
  stop();
}

void SshAgentForwarder::stop() noexcept {
  // Wakes the serving thread too: it polls the same stop fd.
  connections_.stop();
  if (thread_.joinable()) thread_.join();
}

void SshAgentForwarder::serve() noexcept {
  try {
    while (std::optional<ssh_forward::ReceivedConnection> received =
               ssh_forward::receive_connection(control_.get(), connections_.stop_fd())) {
      auto step = std::make_shared<UniqueFd>(std::move(received->fd));
      const std::uint64_t number = received->number;
      // At the limit, `step` is closed unserved: the step sees its agent hang up.
      connections_.start([this, step, number](int stop_fd) {
        try {
          serve_agent_connection(step->get(), agent_socket_, stop_fd);
        } catch (const Error& e) {
          if (e.kind() == ErrorKind::canceled) return;
          on_error_(e.with_context("ssh agent " + spec_.id + ": connection " + std::to_string(number)));
        } catch (const std::exception& e) {
          on_error_(Error(ErrorKind::internal, "ssh agent " + spec_.id + ": " + e.what()));
        }
      });
    }
  } catch (...) {
    error_ = std::current_exception();
  }
}

void SshAgentForwarder::finish() {
  stop();
  if (!error_) return;
  try {
    std::rethrow_exception(std::exchange(error_, nullptr));
  } catch (const Error& e) {
    // Only our own stop says canceled: it is how serving is meant to end.
    if (e.kind() == ErrorKind::canceled) return;
    throw e.with_context("ssh agent " + spec_.id);
  }
}

}  // namespace kbuild::cli
