// What the dbus tests share: a fake BuilderApi, a Server on a temp socket served from a thread,
// and running code as another user in a child process.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "dbus/builder_api.h"
#include "dbus/server.h"

namespace kbuild::dbus::testing {

// Reads `fd` to its end.
inline std::string read_all(int fd) {
  std::string data;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buffer, static_cast<size_t>(n));
  }
  return data;
}

inline void write_all(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(ErrorKind::internal, "write failed");
    done += static_cast<size_t>(n);
  }
}

struct Pipe {
  UniqueFd read, write;
  Pipe() {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw Error(ErrorKind::internal, "pipe2 failed");
    read.reset(fds[0]);
    write.reset(fds[1]);
  }
};

// A BuilderApi that echoes and records. Build options steer it:
//   wait b       block until release() or until the call is cancelled
//   fail s       throw kbuild::Error of that kind name ("user", "not_found", ...), "std" for
//                a std::exception, "bad-utf8" for a message that is not UTF-8
//   write-to h   write "written by the daemon" to that fd
class FakeBuilder : public BuilderApi {
 public:
  Options build(const CallContext& call, const Options& options, UniqueFd context, UniqueFd progress,
                UniqueFd output) override {
    write_all(progress.get(), "{\"vertex\":\"step 1\"}\n");
    write_all(output.get(), "output of the build");
    std::string context_bytes = read_all(context.get());
    progress.reset();
    output.reset();

    if (option_or<bool>(options, "wait", false)) {
      std::unique_lock lock(mutex_);
      started_ = true;
      changed_.notify_all();
      changed_.wait(lock, call.stop, [this] { return released_; });
      if (call.stop.stop_requested()) {
        canceled_ = true;
        changed_.notify_all();
        throw Error(ErrorKind::canceled, "build canceled");
      }
    }
    if (const std::string* kind = find_option<std::string>(options, "fail")) throw_kind(*kind);
    if (const Fd* fd = find_option<Fd>(options, "write-to")) write_all(fd->get(), "written by the daemon");

    Options result = options;
    result["image-id"] = "sha256:1234";
    result["context"] = context_bytes;
    result["caller-uid"] = static_cast<std::int64_t>(call.caller.uid);
    return result;
  }

  std::vector<Options> list_images(const CallContext&) override {
    return {
        {{"id", "sha256:aaaa"}, {"names", std::vector<std::string>{"alpine:3.20", "a:b"}},
         {"created", std::int64_t{1700000000}}, {"size", std::uint64_t{1234567}}, {"digest", "sha256:bbbb"}},
        {{"id", "sha256:cccc"}, {"names", std::vector<std::string>{}}, {"created", std::int64_t{-1}},
         {"size", std::uint64_t{0}}, {"digest", "sha256:dddd"}},
    };
  }

  std::vector<std::string> remove_image(const CallContext&, const std::string& reference, bool force) override {
    if (reference == "missing") throw Error(ErrorKind::not_found, "No such image: missing");
    std::vector<std::string> removed{"Untagged: " + reference};
    if (force) removed.push_back("Deleted: sha256:aaaa");
    return removed;
  }

  void tag_image(const CallContext&, const std::string& source, const std::string& target) override {
    if (source == "missing") throw Error(ErrorKind::not_found, "No such image: missing");
    std::lock_guard lock(mutex_);
    tags_.emplace_back(source, target);
  }

  void save_images(const CallContext&, const std::vector<std::string>& references, UniqueFd output) override {
    std::string data = "saved";
    for (const std::string& reference : references) data += " " + reference;
    write_all(output.get(), data);
  }

  std::vector<std::string> load_images(const CallContext&, UniqueFd input) override {
    return {"Loaded image: " + read_all(input.get())};
  }

  std::vector<std::string> pull_image(const CallContext&, const std::string& reference, const Options& options) override {
    auto platform = options.find("platform");
    const std::string* value = platform == options.end() ? nullptr : platform->second.get_if<std::string>();
    return {"pulled " + reference + (value ? " for " + *value : "")};
  }

  std::vector<std::string> push_image(const CallContext&, const std::string& reference, const Options&) override {
    if (reference == "missing") throw Error(ErrorKind::not_found, "No such image: missing");
    return {"pushed " + reference};
  }

  Options check_login(const CallContext&, const std::string& server, const Options& options) override {
    if (server != "good.io" || !options.count("registry-auth")) throw Error(ErrorKind::permission, server + ": unauthorized");
    return {{"identity-token", std::string("refresh-good.io")}};
  }

  Options disk_usage(const CallContext&, const Options& options) override {
    Options usage{{"images", std::uint64_t{2}}, {"images-size", std::uint64_t{1234567}}, {"cache-records", std::uint64_t{0}}};
    if (option_or(options, "records", false)) usage.emplace("records", std::vector<StringMap>{{{"id", "r1"}}});
    return usage;
  }

  Options prune(const CallContext&, const Options& options) override {
    return {{"reclaimed", std::uint64_t{option_or(options, "all", false) ? 2000u : 1000u}}};
  }

  Options prune_images(const CallContext&, const Options&) override {
    return {{"deleted", std::vector<std::string>{"deleted: sha256:abc"}}, {"reclaimed", std::uint64_t{5}}};
  }

  Options info(const CallContext& call) override {
    std::vector<std::string> groups;
    for (gid_t gid : call.caller.groups) groups.push_back(std::to_string(gid));
    return {{"version", "test"},
            {"caller-uid", static_cast<std::int64_t>(call.caller.uid)},
            {"caller-gid", static_cast<std::int64_t>(call.caller.gid)},
            {"caller-pid", static_cast<std::int64_t>(call.caller.pid)},
            {"caller-groups", groups}};
  }

  Options reload(const CallContext&) override {
    return {{"config-file", "/etc/docker/daemon.json"}, {"changed", std::vector<std::string>{"dns"}}};
  }

  // Waits until a build blocks in "wait"; false after `timeout`.
  bool wait_started(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return started_; });
  }
  // Waits until a blocked build saw its cancellation; false after `timeout`.
  bool wait_canceled(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [this] { return canceled_; });
  }
  void release() {
    std::lock_guard lock(mutex_);
    released_ = true;
    changed_.notify_all();
  }
  std::vector<std::pair<std::string, std::string>> tags() {
    std::lock_guard lock(mutex_);
    return tags_;
  }

 private:
  [[noreturn]] static void throw_kind(const std::string& kind) {
    if (kind == "std") throw std::runtime_error("something broke");
    if (kind == "bad-utf8") throw Error(ErrorKind::user, "file \xff\xfe is missing");
    for (ErrorKind k : {ErrorKind::user, ErrorKind::not_found, ErrorKind::permission, ErrorKind::canceled,
                        ErrorKind::internal})
      if (kind == error_kind_name(k)) throw Error(k, "failed as " + kind);
    throw Error(ErrorKind::internal, "unknown kind " + kind);
  }

  std::mutex mutex_;
  std::condition_variable_any changed_;
  bool started_ = false;
  bool released_ = false;
  bool canceled_ = false;
  std::vector<std::pair<std::string, std::string>> tags_;
};

// A Server on "<temp dir>/kbuild.sock", run on a thread of its own until destruction.
class TestServer {
 public:
  explicit TestServer(BuilderApi& api, ServerOptions options = {}, mode_t socket_mode = 0666) {
    // Reachable by the unprivileged children some tests fork.
    ::chmod(dir_.path().c_str(), 0755);
    path_ = dir_.path() + "/kbuild.sock";
    server_.emplace(Listener::bind(path_, {socket_mode, ""}), api, std::move(options));
    thread_ = std::thread([this] {
      exit_value_ = server_->run();
      exited_.store(true);
    });
  }
  ~TestServer() { stop(); }

  // Stops the loop and waits for run() to return; the Server stays until destruction.
  void stop() {
    if (!thread_.joinable()) return;
    server_->stop();
    thread_.join();
  }
  // Stops, then destroys the Server (cancelling calls still running).
  void destroy() {
    stop();
    server_.reset();
  }
  // Waits for run() to return by itself (idle); false after `timeout`.
  bool wait_exit(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!exited_.load() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (exited_.load() && thread_.joinable()) thread_.join();
    return exited_.load();
  }

  const std::string& path() const { return path_; }
  std::string address() const { return "unix:path=" + path_; }
  std::optional<Server::Exit> exit() const {
    if (!exited_.load()) return std::nullopt;
    return exit_value_;
  }

 private:
  TempDir dir_;
  std::string path_;
  std::optional<Server> server_;
  std::thread thread_;
  Server::Exit exit_value_{};  // written by the thread before exited_
  std::atomic<bool> exited_{false};
};

// Runs `body` in a forked child as uid/gid (no supplementary groups) and returns what it
// returned, or "child failed: ..." when it could not switch or died.
inline std::string run_as(uid_t uid, gid_t gid, const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return "child failed: pipe2";
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) return "child failed: fork";
  if (pid == 0) {
    read_end.reset();
    std::string result;
    if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) {
      result = "child failed: cannot switch user";
    } else {
      try {
        result = body();
      } catch (const Error& e) {
        result = std::string("error ") + error_kind_name(e.kind()) + ": " + e.what();
      } catch (const std::exception& e) {
        result = std::string("exception: ") + e.what();
      }
    }
    write_all(write_end.get(), result);
    ::_exit(0);
  }
  write_end.reset();
  std::string result = read_all(read_end.get());
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "child failed: exit status " + std::to_string(status);
  return result;
}

}  // namespace kbuild::dbus::testing
