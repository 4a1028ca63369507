// What one step's process is: the spec kbuildd hands to kbuild-exec. Paths in `rootfs` are
// the daemon's own (snapshot directories); everything the step sees from outside its rootfs
// (bind sources, /etc/hosts, the seccomp program) arrives as an fd, never as a path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::sandbox {

// host: the daemon's own; none: a new namespace with only loopback; join: the namespace of
// netns_fd (the build's, made by engine/network).
enum class NetworkMode { host, none, join };

struct RootfsSpec {
  std::vector<std::string> lowers;  // top first
  std::string upper;
  std::string work;
  std::string mountpoint;  // an empty directory; the overlay lives only in the step's mount namespace
};

struct MountSpec {
  enum class Kind { bind, tmpfs };
  Kind kind = Kind::bind;
  std::string target;      // absolute, inside the rootfs
  int fd = -1;             // bind: index into the helper's fds (an O_PATH fd of the source)
  bool read_only = false;
  bool is_file = false;    // bind of a regular file (the target is created as a file)
  // A file or directory kbuild provides (/etc/hosts, /etc/resolv.conf): mounted at exactly
  // `target`, never through a symlink, whatever the image holds there. RUN mounts are not
  // exact: their targets resolve inside the rootfs, as BuildKit resolves them.
  bool exact = false;
  std::optional<uint64_t> size;   // tmpfs size in bytes
  std::optional<uint32_t> mode;   // tmpfs root mode
};

struct RunSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd = "/";
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::string hostname = "buildkitsandbox";
  NetworkMode network = NetworkMode::host;
  int netns_fd = -1;              // join: index into the helper's fds (an O_RDONLY nsfs fd)
  RootfsSpec rootfs;
  std::vector<MountSpec> mounts;  // applied in order, after /proc, /dev, /sys
  uint64_t capabilities = 0;      // bounding, permitted and effective for root
  bool devices = false;           // device nodes in the rootfs can be opened (insecure steps)
  int seccomp_fd = -1;            // a raw sock_filter program; -1 for none (insecure)
};

std::string serialize_spec(const RunSpec& spec);
RunSpec parse_spec(std::string_view json);

// The fds kbuild-exec starts with: 0 /dev/null, 1 and 2 the step's output, then these; the
// spec's fd numbers index from kFirstExtraFd.
constexpr int kSpecFd = 3;
constexpr int kControlFd = 4;  // a socket: the daemon sends "go", the helper answers with the result
constexpr int kFirstExtraFd = 5;

// How the step ended, as the helper reports it on the control socket.
struct StepExit {
  int exit_code = -1;   // when it exited
  int signal = 0;       // when a signal ended it
  std::string error;    // when the helper could not start it (the process never ran)
  // When execve refused the program as of an unknown format (ENOEXEC), or found no interpreter
  // for it (ENOENT for a file that is there): the first bytes of it (of its interpreter for a
  // "#!" script); "" when unreadable.
  std::string exec_header;
};

std::string serialize_exit(const StepExit& exit);
StepExit parse_exit(std::string_view text);

}  // namespace kbuild::sandbox
