#include "engine/solver/run_step.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/go_path.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/fileops/root_path.h"
#include "engine/sandbox/ssh_proxy.h"
#include "engine/sandbox/step_process.h"
#include "engine/solver/exec_user.h"
#include "engine/solver/step_executor.h"
#include "engine/store/digest.h"

namespace kbuild::solver {
namespace {

// Docker's default capabilities: CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID
// SETFCAP SETPCAP NET_BIND_SERVICE SYS_CHROOT KILL AUDIT_WRITE.
constexpr uint64_t kDefaultCapabilities = 0xa80425fb;
constexpr uint64_t kAllCapabilities = ~uint64_t{0};
constexpr size_t kLogLimit = 2u << 20;
constexpr const char* kHosts = "127.0.0.1\tlocalhost buildkitsandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n";

bool has_env(const std::vector<std::string>& env, std::string_view name) {
  for (const std::string& e : env) {
    if (e.size() > name.size() && e.compare(0, name.size(), name) == 0 && e[name.size()] == '=') return true;
  }
  return false;
}

// The sandbox's /etc/hosts, written once per store.
std::string hosts_file(store::Store& store) {
  std::string dir = store.root() + "/sandbox";
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", dir);
  std::string path = dir + "/hosts";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    // Linked into place, never renamed over: a step that already holds the file must not see
    // it unlinked under it by a concurrent first step (a deleted file cannot be mounted).
    std::string temp = path + ".tmp" + std::to_string(::getpid()) + "-" + std::to_string(::gettid());
    {
      // Durable before its name: after a power cut the file is whole or absent, never empty.
      UniqueFd fd(check(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644), "create",
                        temp));
      write_all(fd.get(), kHosts, temp);
      check(::fsync(fd.get()), "fsync", temp);
    }
    int linked = ::link(temp.c_str(), path.c_str());
    int link_errno = errno;
    ::unlink(temp.c_str());
    if (linked != 0 && link_errno != EEXIST) throw_errno("link", path, link_errno);
  }
  return path;
}

UniqueFd open_path(const std::string& path) {
  return UniqueFd(check(::open(path.c_str(), O_PATH | O_CLOEXEC), "open", path));
}

// `path` inside the directory `root_fd` without leaving it: symlinks resolve as if the root were /.
UniqueFd open_in_root(int root_fd, const std::string& path, const std::string& what) {
  open_how how{};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how));
  if (fd < 0) throw_errno(what, path);
  return UniqueFd(fd);
}

// Copies the regular file behind an O_PATH fd (anything else is refused).
void copy_regular_file(int source_path_fd, const std::string& to) {
  struct stat st {};
  check(::fstat(source_path_fd, &st), "fstat");
  if (!S_ISREG(st.st_mode)) throw Error(ErrorKind::user, "a writable bind mount of a single file needs a regular file");
  std::string proc = "/proc/self/fd/" + std::to_string(source_path_fd);
  UniqueFd in(check(::open(proc.c_str(), O_RDONLY | O_CLOEXEC), "open", proc));
  UniqueFd out(check(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777), "create", to));
  for (;;) {
    ssize_t n = ::copy_file_range(in.get(), nullptr, out.get(), nullptr, size_t{1} << 30, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("copy_file_range", to);
    if (n == 0) break;
  }
  check(::fchown(out.get(), st.st_uid, st.st_gid), "chown", to);
  check(::fchmod(out.get(), st.st_mode & 07777), "chmod", to);
}

bool is_directory(int fd) {
  struct stat st {};
  check(::fstat(fd, &st), "fstat");
  return S_ISDIR(st.st_mode);
}

std::string join_args(const std::vector<std::string>& argv) {
  std::string out;
  for (size_t i = 0; i < argv.size(); ++i) out += (i ? " " : "") + argv[i];
  return out;
}

// A cache mount's directory, locked as its sharing mode asks while the step runs.
struct CacheDir {
  UniqueFd lock;
  std::string path;
};

CacheDir open_cache_dir(store::Store& store, const graph::ExecMount& mount) {
  std::string id = mount.cache_id.empty() ? mount.target : mount.cache_id;
  // The id names the cache only through its digest: "../../x" cannot leave the cache root.
  std::string base = store.root() + "/cache";
  if (::mkdir(base.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("mkdir", base);
  std::string name(store::Digest::of(id).hex());
  graph::ExecMount::Sharing sharing = mount.sharing;
  for (int instance = 0;; ++instance) {
    std::string path = base + "/" + name + (instance ? "-" + std::to_string(instance) : "");
    if (::access(path.c_str(), F_OK) != 0) {
      // Made aside and renamed into place: a concurrent step sees no cache or a whole one.
      TempDir fresh(base, "new-");
      std::string data = fresh.path() + "/data";
      check(::mkdir(data.c_str(), 0755), "mkdir", data);
      check(::chown(data.c_str(), mount.uid.value_or(0), mount.gid.value_or(0)), "chown", data);
      check(::chmod(data.c_str(), mount.mode.value_or(0755)), "chmod", data);
      check(::chmod(fresh.path().c_str(), 0700), "chmod", fresh.path());
      if (::rename(fresh.path().c_str(), path.c_str()) == 0) {
        fresh.release();
      } else if (errno != EEXIST && errno != ENOTEMPTY) {
        throw_errno("rename", path);
      }
    }
    CacheDir cache{UniqueFd(check(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", path)),
                   path + "/data"};
    // Every mode holds a lock while the step runs (shared ones a shared lock): a prune takes
    // the directory only when it gets an exclusive one without waiting.
    const bool exclusive = sharing != graph::ExecMount::Sharing::shared;
    const bool wait = sharing != graph::ExecMount::Sharing::private_;
    int flags = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
    int rc;
    while ((rc = ::flock(cache.lock.get(), flags)) != 0 && errno == EINTR) {
    }
    if (rc != 0) {
      if (errno != EWOULDBLOCK) throw_errno("locking cache", id);
      continue;  // private: the next instance
    }
    // A prune removed it while this step waited for the lock: make it again.
    struct stat st {};
    check(::fstat(cache.lock.get(), &st), "stat", path);
    if (st.st_nlink == 0) {
      --instance;
      continue;
    }
    // Its time is its last use, which garbage collection orders by.
    ::futimens(cache.lock.get(), nullptr);
    return cache;
  }
}

// Everything a step's mounts hold on the daemon's side while it runs.
struct PreparedMounts {
  // Destroyed bottom up: overlays are unmounted before their scratch dirs go.
  std::vector<sandbox::MountSpec> specs;
  std::vector<UniqueFd> fds;
  std::vector<TempDir> temps;
  std::vector<std::unique_ptr<ChainView>> views;
  std::vector<store::Mount> overlays;  // and secrets' tmpfs
  std::vector<CacheDir> caches;
  std::vector<std::string> env;  // secrets given as variables
  std::vector<std::unique_ptr<sandbox::SshAgentProxy>> ssh_agents;  // until the step has ended

  int add_fd(UniqueFd fd) {
    fds.push_back(std::move(fd));
    return static_cast<int>(fds.size() - 1);
  }
  void bind(UniqueFd source, const std::string& target, bool read_only, bool exact = false) {
    sandbox::MountSpec spec;
    spec.kind = sandbox::MountSpec::Kind::bind;
    spec.is_file = !is_directory(source.get());
    spec.read_only = read_only;
    spec.exact = exact;
    spec.target = target;
    spec.fd = add_fd(std::move(source));
    specs.push_back(std::move(spec));
  }
};

// A secret as BuildKit gives it: a file of its own on a tmpfs of its own (nothing on disk),
// bind-mounted read-only at the target, and/or a variable. Missing, it fails the step only
// when required.
void prepare_secret(OpContext& context, const graph::ExecMount& mount, PreparedMounts& out) {
  const std::string* value = context.sandbox ? context.sandbox->secret(mount.cache_id) : nullptr;
  if (!value && mount.required) throw Error(ErrorKind::user, "secret " + mount.cache_id + ": not found");
  if (mount.env) out.env.push_back(*mount.env + "=" + (value ? *value : std::string()));
  if (!value || mount.target.empty()) return;
  if (mount.target == "/") throw Error(ErrorKind::user, "mount target cannot be /");
  const uint32_t mode = mount.mode.value_or(0400);
  TempDir& dir = out.temps.emplace_back(context.store.root() + "/mounts", "secret-");
  unsigned long flags = MS_NODEV | MS_NOSUID | ((mode & 0111) ? 0 : MS_NOEXEC);
  out.overlays.push_back(
      store::Mount::tmpfs(dir.path(), flags, "mode=0700,size=" + std::to_string(value->size() + 65536)));
  std::string file = dir.path() + "/secret";
  UniqueFd fd(check(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600), "open", file));
  write_all(fd.get(), *value, "secret " + mount.cache_id);
  check(::fchown(fd.get(), mount.uid.value_or(0), mount.gid.value_or(0)), "chown", file);
  check(::fchmod(fd.get(), mode), "chmod", file);
  out.bind(open_path(file), mount.target, true);
}

// The caller's SSH agent as BuildKit forwards it: a socket of the step's own at the target,
// each connection to it handed to kbuildctl, which talks to the agent. Not forwarded, it fails
// the step only when required.
void prepare_ssh(OpContext& context, const graph::ExecMount& mount, PreparedMounts& out) {
  BuildSandbox* build = context.sandbox;
  int control = build ? build->ssh_agent(mount.cache_id) : -1;
  if (control < 0) {
    if (!mount.required) return;
    if (build && build->has_ssh_agents()) throw Error(ErrorKind::user, "unset ssh forward key " + mount.cache_id);
    throw Error(ErrorKind::user, "no SSH key \"" + mount.cache_id + "\" forwarded from the client");
  }
  if (mount.target.empty() || mount.target == "/") throw Error(ErrorKind::user, "mount target cannot be /");
  sandbox::SshSocketOwner owner;
  owner.mode = mount.mode.value_or(0600);
  owner.uid = mount.uid.value_or(0);
  owner.gid = mount.gid.value_or(0);
  auto& proxy = out.ssh_agents.emplace_back(std::make_unique<sandbox::SshAgentProxy>(
      control, context.store.root() + "/mounts", owner, context.cancel.fd(), mount.cache_id));
  out.bind(open_path(proxy->socket_path()), mount.target, true);
}

void prepare_mount(OpContext& context, const graph::ExecMount& mount, PreparedMounts& out) {
  using Type = graph::ExecMount::Type;
  if (mount.type == Type::ssh) {
    prepare_ssh(context, mount, out);
    return;
  }
  if (mount.type == Type::secret) {
    prepare_secret(context, mount, out);
    return;
  }
  const std::string& target = mount.target;
  if (target == "/") throw Error(ErrorKind::user, "mount target cannot be /");
  switch (mount.type) {
    case Type::bind: {
      if (!mount.input) throw Error(ErrorKind::internal, "a bind mount without a source");
      const Ref& input = context.input(*mount.input);
      std::string root = input.local_path;
      if (root.empty()) {
        out.views.push_back(std::make_unique<ChainView>(context.store, input.top));
        root = out.views.back()->dir.path();
      }
      UniqueFd root_fd(check(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "open", root));
      UniqueFd source = open_in_root(root_fd.get(), mount.selector.empty() ? "/" : mount.selector, "mount source");
      if (!mount.read_only && is_directory(source.get())) {
        // A writable bind: writes land in a scratch upper dir and are thrown away with it.
        TempDir& scratch = out.temps.emplace_back(context.store.root() + "/mounts", "rw-");
        std::string upper = scratch.path() + "/upper", work = scratch.path() + "/work";
        check(::mkdir(upper.c_str(), 0755), "mkdir", upper);
        check(::mkdir(work.c_str(), 0700), "mkdir", work);
        std::string lower = scratch.path() + "/lower", view = scratch.path() + "/view";
        check(::mkdir(lower.c_str(), 0755), "mkdir", lower);
        check(::mkdir(view.c_str(), 0755), "mkdir", view);
        // The overlay's lower layer is a clone of the source at a path chosen here: the
        // source's own name (the context's or a stage's) never reaches mount options.
        out.overlays.push_back(store::Mount::clone(source.get(), lower));
        out.overlays.push_back(store::Mount::overlay({lower}, upper, work, view));
        out.bind(open_path(view), target, false);
      } else if (!mount.read_only) {
        // A writable bind of one file: a scratch copy, so that the step never writes the
        // context or a stage, whose inodes layers share.
        TempDir& scratch = out.temps.emplace_back(context.store.root() + "/mounts", "rw-");
        std::string copy = scratch.path() + "/file";
        copy_regular_file(source.get(), copy);
        out.bind(open_path(copy), target, false);
      } else {
        out.bind(std::move(source), target, true);
      }
      break;
    }
    case Type::cache: {
      CacheDir& cache = out.caches.emplace_back(open_cache_dir(context.store, mount));
      UniqueFd root_fd(check(::open(cache.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "open", cache.path));
      UniqueFd source = open_in_root(root_fd.get(), mount.selector.empty() ? "/" : mount.selector, "cache mount source");
      out.bind(std::move(source), target, mount.read_only);
      break;
    }
    case Type::tmpfs: {
      sandbox::MountSpec spec;
      spec.kind = sandbox::MountSpec::Kind::tmpfs;
      spec.target = target;
      if (mount.tmpfs_size > 0) spec.size = static_cast<uint64_t>(mount.tmpfs_size);
      spec.mode = 01777;
      out.specs.push_back(std::move(spec));
      break;
    }
    case Type::secret:
    case Type::ssh:
      break;  // above
  }
}

void check_entitlements(BuildSandbox& sandbox, const graph::ExecOp& exec) {
  auto require = [&](const std::string& entitlement, bool daemon_allows) {
    if (!daemon_allows) {
      throw Error(ErrorKind::user,
                  "granting entitlement " + entitlement + " is not allowed by build daemon configuration");
    }
    if (!sandbox.allowed(entitlement)) {
      throw Error(ErrorKind::user, entitlement + " is not allowed: pass --allow " + entitlement + " to kbuildctl build");
    }
  };
  if (exec.insecure) require("security.insecure", sandbox.config().allow_insecure);
  if (exec.network == graph::ExecOp::Network::host) require("network.host", sandbox.config().allow_network_host);
}

// Output of a step as progress logs, clipped as BuildKit clips them.
class ClippedLog {
 public:
  explicit ClippedLog(const std::function<void(int, std::string_view)>& log) : log_(log) {}
  void write(int stream, std::string_view data) {
    if (written_ >= kLogLimit) return;
    size_t room = kLogLimit - written_;
    if (data.size() > room) data = data.substr(0, room);
    written_ += data.size();
    log_(stream, data);
    if (written_ >= kLogLimit) log_(stream, "\n[output clipped, log limit 2MiB reached]\n");
  }

 private:
  const std::function<void(int, std::string_view)>& log_;
  size_t written_ = 0;
};

std::optional<uint64_t> smallest(std::optional<uint64_t> a, std::optional<uint64_t> b) {
  if (a && b) return std::min(*a, *b);
  return a ? a : b;
}

// The reason a step's process never started, with a hint when the program is for a platform
// this host cannot run.
std::string start_failure(const sandbox::StepExit& exit, const SandboxConfig& config) {
  if (exit.exec_header.empty() || !config.emulation) return exit.error;
  std::string hint = config.emulation->exec_format_hint(exit.exec_header, config.binfmt_install);
  return hint.empty() ? exit.error : exit.error + " " + hint;
}

[[noreturn]] void throw_step_failure(const sandbox::StepOutcome& outcome, const std::vector<std::string>& argv,
                                     const sandbox::ResourceLimits& limits, const SandboxConfig& config) {
  std::string process = "process \"" + join_args(argv) + "\" did not complete successfully: ";
  if (!outcome.exit.error.empty()) throw Error(ErrorKind::user, process + start_failure(outcome.exit, config));
  int code = outcome.exit.signal ? 128 + outcome.exit.signal : outcome.exit.exit_code;
  std::string message = process + "exit code: " + std::to_string(code);
  if (outcome.usage.oom_killed) {
    message = "step killed: out of memory" +
              (limits.memory_bytes ? " (limit " + format_bytes_binary(*limits.memory_bytes) + ")" : std::string()) +
              ": " + message;
  } else if (outcome.usage.pids_limit_hit) {
    message += " (the step reached its process limit" +
               (limits.pids ? " of " + std::to_string(*limits.pids) : std::string()) + ")";
  }
  throw Error(ErrorKind::user, message);
}

std::vector<std::string> path_parts(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start < path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string::npos) slash = path.size();
    if (slash > start) parts.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
  return parts;
}

// BuildKit's mount stub cleaner: mount points the step had to create (and the directories
// made for them) leave the layer when they are still empty; the directory that holds them
// keeps the times it had. Nothing here follows a symlink the step may have planted.
void remove_mount_stubs(const std::string& upper, const std::vector<std::string>& lowers,
                        const std::vector<sandbox::MountSpec>& mounts) {
  for (auto mount = mounts.rbegin(); mount != mounts.rend(); ++mount) {
    std::vector<std::string> parts = path_parts(mount->target);
    size_t existing = 0;
    std::string prefix;
    while (existing < parts.size()) {
      prefix += "/" + parts[existing];
      if (!lookup_in_layers(lowers, prefix)) break;
      ++existing;
    }
    if (existing == parts.size()) continue;
    std::vector<UniqueFd> dirs;
    dirs.emplace_back(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dirs.back()) continue;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      UniqueFd next(::openat(dirs.back().get(), parts[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) break;
      dirs.push_back(std::move(next));
    }
    bool removed_all = true;
    for (size_t i = parts.size(); i-- > existing;) {
      if (i >= dirs.size()) {
        removed_all = false;
        break;
      }
      struct stat st {};
      int parent = dirs[i].get();
      if (::fstatat(parent, parts[i].c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      bool empty_file = S_ISREG(st.st_mode) && st.st_size == 0;
      if (!(S_ISDIR(st.st_mode) || empty_file) ||
          ::unlinkat(parent, parts[i].c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0) != 0) {
        removed_all = false;
        break;
      }
    }
    if (!removed_all || existing == 0 || existing >= dirs.size()) continue;
    std::string holder;
    for (size_t i = 0; i < existing; ++i) holder += "/" + parts[i];
    if (auto before = lookup_in_layers(lowers, holder)) {
      timespec times[2] = {before->st.st_atim, before->st.st_mtim};
      ::futimens(dirs[existing].get(), times);
    }
  }
}

}  // namespace

BuildSandbox::BuildSandbox(const SandboxConfig& config, std::string build_name, std::string description,
                           sandbox::ResourceLimits limits, std::set<std::string> allowed,
                           std::map<std::string, std::string> secrets, std::map<std::string, int> ssh_agents)
    : config_(config), build_name_(std::move(build_name)), description_(std::move(description)), limits_(limits),
      allowed_(std::move(allowed)), secrets_(std::move(secrets)) {
  for (const auto& [id, fd] : ssh_agents) {
    ssh_agents_.emplace(id, UniqueFd(check(::fcntl(fd, F_DUPFD_CLOEXEC, 3), "dup ssh control socket")));
  }
}

BuildSandbox::~BuildSandbox() {
  // The build's own copies are not left in freed memory for whatever is allocated there next
  // (best effort: the copies made to start a step, e.g. an env= variable, are not wiped).
  for (auto& [id, value] : secrets_) ::explicit_bzero(value.data(), value.size());
}

sandbox::BuildCgroup& BuildSandbox::cgroup() {
  std::lock_guard lock(mutex_);
  if (!cgroup_) cgroup_ = config_.cgroups->create_build(build_name_, description_, limits_);
  return *cgroup_;
}

network::BuildNetwork& BuildSandbox::network(const std::string& scratch_parent) {
  std::lock_guard lock(network_mutex_);
  if (!network_) network_ = network::BuildNetwork::create(config_.network, scratch_parent);
  return *network_;
}

std::string format_bytes_binary(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (value == static_cast<double>(static_cast<uint64_t>(value))) {
    std::snprintf(text, sizeof text, "%llu%s", static_cast<unsigned long long>(value), units[unit]);
  } else {
    std::snprintf(text, sizeof text, "%.1f%s", value, units[unit]);
  }
  return text;
}

Ref execute_exec_op(OpContext& context, const graph::ExecOp& exec) {
  if (!context.sandbox || !context.sandbox->config().cgroups) {
    std::string reason = context.sandbox ? context.sandbox->config().unavailable_reason : std::string();
    throw Error(ErrorKind::user, "RUN steps are disabled in this kbuildd" + (reason.empty() ? "" : ": " + reason));
  }
  BuildSandbox& build = *context.sandbox;
  check_entitlements(build, exec);
  bool insecure = exec.insecure;

  store::Store& store = context.store;
  const Ref& rootfs = context.input(exec.rootfs);
  if (!rootfs.local_path.empty()) throw Error(ErrorKind::internal, "an exec on a local source");
  std::vector<std::string> lowers = lowers_for(store, rootfs.top);
  sandbox::StepLaunch launch;
  launch.helper_path = build.config().helper_path;
  launch.step_name = build.next_step_name();
  // The step as progress names it (a Dockerfile's RUN always has a vertex name), without a
  // secret value the Dockerfile spells out: systemd logs it ("Started ... - kbuild: [2/2] RUN ...").
  launch.description = sandbox::step_description(
      build.without_secrets(context.name.empty() ? "RUN " + join_args(exec.argv) : std::string(context.name)));
  launch.limits = build.config().step_limits;

  ExecUser user = resolve_exec_user(exec.user, [&](const std::string& path) {
    return read_file_from_layers(lowers, path);
  });
  sandbox::RunSpec& spec = launch.spec;
  spec.argv = exec.argv;
  spec.env = exec.env;
  if (!has_env(spec.env, "HOME")) spec.env.push_back("HOME=" + user.home);
  spec.cwd = exec.cwd.empty() ? "/" : exec.cwd;
  spec.uid = user.uid;
  spec.gid = user.gid;
  spec.groups = user.groups;
  spec.capabilities = insecure ? kAllCapabilities : kDefaultCapabilities;
  spec.devices = insecure;

  PreparedMounts mounts;
  // What kbuild provides lands at these very paths, whatever the image holds there.
  mounts.bind(open_path(hosts_file(store)), "/etc/hosts", true, true);
  if (exec.network != graph::ExecOp::Network::sandbox) {
    spec.network = exec.network == graph::ExecOp::Network::host ? sandbox::NetworkMode::host : sandbox::NetworkMode::none;
    if (::access("/etc/resolv.conf", R_OK) == 0) {
      mounts.bind(open_path("/etc/resolv.conf"), "/etc/resolv.conf", true, true);
    }
  } else {
    // The default: the build's own namespace, and a resolv.conf that works from inside it.
    network::BuildNetwork& network = build.network(store.root() + "/mounts");
    spec.network = sandbox::NetworkMode::join;
    spec.netns_fd = mounts.add_fd(UniqueFd(check(::fcntl(network.namespace_fd(), F_DUPFD_CLOEXEC, 0), "dup")));
    mounts.bind(open_path(network.resolv_conf()), "/etc/resolv.conf", true, true);
  }
  for (const graph::ExecMount& mount : exec.mounts) prepare_mount(context, mount, mounts);
  spec.mounts = mounts.specs;
  // After the image's ENV, as BuildKit appends them: a secret variable wins.
  spec.env.insert(spec.env.end(), mounts.env.begin(), mounts.env.end());
  launch.extra_fds = std::move(mounts.fds);
  if (!insecure && !build.config().seccomp_program.empty()) {
    spec.seccomp_fd = static_cast<int>(launch.extra_fds.size());
    launch.extra_fds.push_back(memfd_holding("kbuild-seccomp", build.config().seccomp_program));
  }

  store::SnapshotStore::Prepared prepared = store.snapshots().prepare(rootfs.top, "layer");
  std::string rootfs_dir = store.root() + "/mounts/rootfs";
  if (::mkdir(rootfs_dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("mkdir", rootfs_dir);
  spec.rootfs = {lowers, prepared.diff_path(), prepared.work_path(), rootfs_dir};

  ClippedLog log(context.log);
  sandbox::StepOutcome outcome = sandbox::run_step_process(
      launch, build.cgroup(), [&](int stream, std::string_view data) { log.write(stream, data); },
      [&] { return context.cancel.canceled(); }, &build.reaper());
  if (outcome.canceled) throw Error(ErrorKind::canceled, "build canceled");
  if (!outcome.exit.error.empty() || outcome.exit.signal != 0 || outcome.exit.exit_code != 0) {
    sandbox::ResourceLimits effective = launch.limits;
    effective.memory_bytes = smallest(effective.memory_bytes, build.build_limits().memory_bytes);
    effective.pids = smallest(effective.pids, build.build_limits().pids);
    throw_step_failure(outcome, exec.argv, effective, build.config());
  }
  remove_mount_stubs(prepared.diff_path(), lowers, spec.mounts);
  return Ref{store.snapshots().commit_deferred(std::move(prepared)).id, ""};
}

}  // namespace kbuild::solver
