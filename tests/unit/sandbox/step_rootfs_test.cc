// The sandbox around a step's rootfs, made for real: each case runs in a child process with a
// mount namespace of its own, on a tmpfs standing in for the step's overlay. Needs root.
#include "engine/sandbox/step_rootfs.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::sandbox {
namespace {

using Body = std::function<void(int root_fd)>;

void write_at(int dir, const char* name, std::string_view data) {
  UniqueFd fd(check(::openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644), "create", name));
  write_all(fd.get(), data, name);
}

// What `path` inside the rootfs reads as, resolved as the step would after pivot_root.
std::string read_in_root(int root_fd, const char* path) {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT;
  UniqueFd fd(static_cast<int>(::syscall(SYS_openat2, root_fd, path, &how, sizeof how)));
  if (!fd) return "<" + std::string(std::strerror(errno)) + ">";
  return read_all(fd.get(), path);
}

long fs_type_at(int root_fd, const char* path) {
  struct statfs fs {};
  UniqueFd fd(::openat(root_fd, path, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd || ::fstatfs(fd.get(), &fs) != 0) return 0;
  return static_cast<long>(fs.f_type);
}

class StepRootfsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: mounts";
  }

  // Runs `shape` (what the image holds) and then `body` on a fresh tmpfs rootfs, in a child
  // with a mount namespace of its own; returns what either threw, or "" when nothing did.
  std::string in_child(const Body& shape, const Body& body) {
    int pipe_fds[2];
    check(::pipe2(pipe_fds, O_CLOEXEC), "pipe");
    std::string root = dir_.path() + "/root" + std::to_string(++children_);
    pid_t pid = check(::fork(), "fork");
    if (pid == 0) {
      ::close(pipe_fds[0]);
      std::string message;
      try {
        check(::unshare(CLONE_NEWNS), "unshare");
        check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "making / private");
        check(::mkdir(root.c_str(), 0755), "mkdir", root);
        check(::mount("tmpfs", root.c_str(), "tmpfs", 0, "mode=755"), "mount tmpfs", root);
        UniqueFd root_fd(check(::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC), "open", root));
        UniqueFd writable(check(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", root));
        shape(writable.get());
        body(root_fd.get());
      } catch (const std::exception& e) {
        message = e.what();
        if (message.empty()) message = "(empty error)";
      }
      (void)!::write(pipe_fds[1], message.data(), message.size());
      ::_exit(0);
    }
    ::close(pipe_fds[1]);
    UniqueFd reader(pipe_fds[0]);
    std::string message = read_all(reader.get(), "child");
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return message;
  }

  TempDir dir_;
  int children_ = 0;
};

const Body kNothing = [](int) {};

// Opened in the child: a mount of another mount namespace cannot be cloned.
UniqueFd dev_null() { return UniqueFd(check(::open("/dev/null", O_PATH | O_CLOEXEC), "open", "/dev/null")); }

// Every shape an image can give a path it should hold as a directory, but does not.
struct Shape {
  const char* what;        // how the error names it
  std::function<void(int dir, const char* name)> make;
};

std::vector<Shape> non_directory_shapes() {
  auto link_to = [](const char* target) {
    return [target](int dir, const char* name) {
      ::mkdirat(dir, "p", 0755);
      check(::symlinkat(target, dir, name), "symlink", name);
    };
  };
  return {
      {"a symbolic link", link_to("p")},
      {"a symbolic link", link_to("/p")},
      {"a symbolic link", link_to("../p")},
      {"a symbolic link", link_to("../../../../p")},
      {"a symbolic link", link_to("nowhere")},
      {"a symbolic link",
       [](int dir, const char* name) {
         ::mkdirat(dir, "p", 0755);
         check(::symlinkat("chain2", dir, name), "symlink", name);
         check(::symlinkat("/p", dir, "chain2"), "symlink", "chain2");
       }},
      {"a file", [](int dir, const char* name) { write_at(dir, name, "x"); }},
      {"a named pipe", [](int dir, const char* name) { check(::mkfifoat(dir, name, 0644), "mkfifo", name); }},
      {"a device node",
       [](int dir, const char* name) { check(::mknodat(dir, name, S_IFCHR | 0644, makedev(1, 3)), "mknod", name); }},
  };
}

TEST_F(StepRootfsTest, TheWholeSandboxPassesItsOwnCheck) {
  RunSpec spec;
  EXPECT_EQ(in_child(kNothing, [&](int root) { make_step_rootfs(root, dev_null().get(), spec, {}); }), "");
}

TEST_F(StepRootfsTest, ProcSysAndDevThatAreNotDirectoriesAreRefusedAndNothingIsMountedElsewhere) {
  struct Target {
    const char* name;
    void (*mount)(int);
  };
  for (Target target : {Target{"proc", mount_proc}, Target{"sys", mount_sys}, Target{"dev", mount_dev}}) {
    for (const Shape& shape : non_directory_shapes()) {
      SCOPED_TRACE(std::string("/") + target.name + " as " + shape.what);
      std::string error = in_child([&](int dir) { shape.make(dir, target.name); },
                                   [&](int root) {
                                     try {
                                       target.mount(root);
                                     } catch (...) {
                                       // Whatever the link pointed at holds no file system now.
                                       long p = fs_type_at(root, "p");
                                       if (p != 0 && p != static_cast<long>(TMPFS_MAGIC)) {
                                         throw Error(ErrorKind::internal, "something was mounted at /p");
                                       }
                                       throw;
                                     }
                                   });
      EXPECT_EQ(error, std::string("the image's /") + target.name + " is " + shape.what +
                           ": a RUN step needs a directory there");
    }
  }
}

TEST_F(StepRootfsTest, MissingProcSysAndDevAreMade) {
  EXPECT_EQ(in_child(kNothing,
                     [](int root) {
                       mount_proc(root);
                       mount_sys(root);
                       mount_dev(root);
                       if (fs_type_at(root, "proc") != PROC_SUPER_MAGIC) throw Error(ErrorKind::internal, "no proc");
                       if (fs_type_at(root, "sys") != static_cast<long>(SYSFS_MAGIC)) {
                         throw Error(ErrorKind::internal, "no sys");
                       }
                     }),
            "");
}

// A file kbuild provides over `path`: a bind of a file holding "PROVIDED".
MountSpec provided_file(const char* path) {
  MountSpec m;
  m.kind = MountSpec::Kind::bind;
  m.target = path;
  m.is_file = true;
  m.read_only = true;
  m.exact = true;
  m.fd = 0;
  return m;
}

std::vector<UniqueFd> provided_tree(const std::string& dir) {
  std::string source = dir + "/provided";
  UniqueFd dir_fd(check(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", dir));
  write_at(dir_fd.get(), "provided", "PROVIDED");
  UniqueFd file(check(::open(source.c_str(), O_PATH | O_CLOEXEC), "open", source));
  std::vector<UniqueFd> trees;
  trees.emplace_back(check(::open_tree(file.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH),
                           "open_tree", source));
  return trees;
}

TEST_F(StepRootfsTest, ProvidedFilesLandOverWhateverTheImageHoldsAtTheirPath) {
  auto link_to = [](const char* target) {
    return [target](int etc) { check(::symlinkat(target, etc, "hosts"), "symlink", "hosts"); };
  };
  struct Case {
    const char* name;
    std::function<void(int etc)> make;
  };
  std::vector<Case> cases = {
      {"relative symlink", link_to("../target")},
      {"absolute symlink", link_to("/target")},
      {"symlink climbing above the root", link_to("../../../../target")},
      {"dangling symlink", link_to("/nowhere/at/all")},
      {"chained symlinks",
       [](int etc) {
         check(::symlinkat("hosts2", etc, "hosts"), "symlink", "hosts");
         check(::symlinkat("/target", etc, "hosts2"), "symlink", "hosts2");
       }},
      {"file", [](int etc) { write_at(etc, "hosts", "IMAGE"); }},
      {"named pipe", [](int etc) { check(::mkfifoat(etc, "hosts", 0644), "mkfifo", "hosts"); }},
      {"device node", [](int etc) { check(::mknodat(etc, "hosts", S_IFCHR | 0644, makedev(1, 5)), "mknod", "hosts"); }},
      {"nothing", [](int) {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::string error = in_child(
        [&](int root) {
          check(::mkdirat(root, "etc", 0755), "mkdir", "etc");
          write_at(root, "target", "TARGET");
          UniqueFd etc(check(::openat(root, "etc", O_RDONLY | O_DIRECTORY | O_CLOEXEC), "open", "etc"));
          c.make(etc.get());
        },
        [&](int root) {
          std::vector<UniqueFd> trees = provided_tree(dir_.path());
          mount_step_mounts(root, {provided_file("/etc/hosts")}, trees);
          std::string seen = read_in_root(root, "/etc/hosts");
          if (seen != "PROVIDED") throw Error(ErrorKind::internal, "/etc/hosts reads " + seen);
          std::string target = read_in_root(root, "/target");
          if (target != "TARGET") throw Error(ErrorKind::internal, "/target reads " + target);
          if (read_in_root(root, "/nowhere/at/all") != "<No such file or directory>") {
            throw Error(ErrorKind::internal, "a dangling link's target was made");
          }
        });
    EXPECT_EQ(error, "");
  }
}

TEST_F(StepRootfsTest, ProvidedFilesRefuseADirectoryOrASymlinkedParent) {
  std::vector<UniqueFd> none;
  EXPECT_EQ(in_child([](int root) { check(::mkdirat(root, "etc", 0755), "mkdir", "etc");
                                    check(::mkdirat(root, "etc/hosts", 0755), "mkdir", "etc/hosts"); },
                     [&](int root) {
                       std::vector<UniqueFd> trees = provided_tree(dir_.path());
                       mount_step_mounts(root, {provided_file("/etc/hosts")}, trees);
                     }),
            "the image's /etc/hosts is a directory: a RUN step needs a file there");
  for (const Shape& shape : non_directory_shapes()) {
    SCOPED_TRACE(std::string("/etc as ") + shape.what);
    EXPECT_EQ(in_child([&](int root) { shape.make(root, "etc"); },
                       [&](int root) {
                         std::vector<UniqueFd> trees = provided_tree(dir_.path());
                         mount_step_mounts(root, {provided_file("/etc/hosts")}, trees);
                       }),
              std::string("the image's /etc is ") + shape.what + ": a RUN step needs a directory there");
  }
}

TEST_F(StepRootfsTest, RunMountsCannotCoverWhatTheSandboxStandsOn) {
  auto tmpfs_at = [](const char* target) {
    MountSpec m;
    m.kind = MountSpec::Kind::tmpfs;
    m.target = target;
    return m;
  };
  struct Case {
    const char* target;
    const char* error;
  };
  for (Case c : {Case{"/proc/sys", "mount target /proc/sys cannot be mounted: it is inside /proc"},
                 Case{"/to-proc/kernel", "mount target /to-proc/kernel cannot be mounted: it is inside /proc"},
                 Case{"/sys/kernel", "mount target /sys/kernel cannot be mounted: it is inside /sys"},
                 Case{"/dev", "mount target /dev cannot be mounted: it is /dev"},
                 Case{"/to-root", "mount target /to-root cannot be mounted: it is /"}}) {
    SCOPED_TRACE(c.target);
    std::vector<UniqueFd> trees(1);
    EXPECT_EQ(in_child(
                  [](int root) {
                    check(::symlinkat("/proc/sys", root, "to-proc"), "symlink", "to-proc");
                    check(::symlinkat("..", root, "to-root"), "symlink", "to-root");
                  },
                  [&](int root) {
                    mount_proc(root);
                    mount_sys(root);
                    mount_dev(root);
                    mount_step_mounts(root, {tmpfs_at(c.target)}, trees);
                  }),
              c.error);
  }
}

// Each piece left out, or made wrong, is caught by the check before the step could run.
TEST_F(StepRootfsTest, TheCheckRefusesASandboxMissingAnyPiece) {
  enum Piece { kNodev, kProc, kDev, kSys, kMasks, kReadOnly, kSysWritable, kCount };
  auto build_without = [&](Piece skipped) {
    return [&, skipped](int root) {
      if (skipped != kNodev) {
        mount_attr attr{};
        attr.attr_set = MOUNT_ATTR_NODEV;
        check(static_cast<int>(::syscall(SYS_mount_setattr, root, "", AT_EMPTY_PATH, &attr, sizeof attr)), "nodev");
      }
      if (skipped != kProc) mount_proc(root);
      if (skipped != kDev) mount_dev(root);
      if (skipped == kSysWritable) {
        UniqueFd fs(check(::fsopen("sysfs", FSOPEN_CLOEXEC), "fsopen"));
        check(::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0), "fsconfig");
        UniqueFd mnt(check(::fsmount(fs.get(), FSMOUNT_CLOEXEC, 0), "fsmount"));
        ::mkdirat(root, "sys", 0755);
        check(::move_mount(mnt.get(), "", root, "sys", MOVE_MOUNT_F_EMPTY_PATH), "move_mount");
      } else if (skipped != kSys) {
        mount_sys(root);
      }
      if (skipped != kMasks) mask_paths(root, dev_null().get());
      if (skipped != kReadOnly) make_paths_read_only(root);
      verify_step_rootfs(root, false);
    };
  };
  const char* expected[kCount] = {
      "/ allows device nodes", "/proc is missing", "/dev is missing", "/sys is missing",
      "is not masked",         "/proc/bus is writable", "/sys is writable",
  };
  for (int piece = 0; piece < kCount; ++piece) {
    SCOPED_TRACE(expected[piece]);
    std::string error = in_child(kNothing, build_without(static_cast<Piece>(piece)));
    EXPECT_NE(error.find("the step's sandbox is not as it was made: "), std::string::npos) << error;
    EXPECT_NE(error.find(expected[piece]), std::string::npos) << error;
  }
}

TEST_F(StepRootfsTest, TheCheckRefusesADirectoryWhereProcfsShouldBe) {
  std::string error = in_child(
      [](int root) {
        // What a skipped mount leaves: plain directories where the kernel's file systems belong.
        for (const char* d : {"proc", "proc/sys", "sys", "dev"}) check(::mkdirat(root, d, 0755), "mkdir", d);
      },
      [&](int root) {
        mount_dev(root);
        mount_sys(root);
        verify_step_rootfs(root, true);
      });
  EXPECT_EQ(error, "the step's sandbox is not as it was made: /proc is not procfs; the step is not run");
}

}  // namespace
}  // namespace kbuild::sandbox
