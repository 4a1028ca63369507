// kbuild-exec for real: a busybox rootfs, a spec, the direct cgroup backend. Needs root and
// /bin/busybox (Debian's busybox-static).
#include "engine/sandbox/step_process.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/sandbox/direct_backend.h"
#include "seccomp/seccomp.h"

namespace kbuild::sandbox {
namespace {

constexpr uint64_t kDefaultCaps = 0xa80425fb;

std::string helper_path() {
  const char* path = std::getenv("KBUILD_EXEC_HELPER");
  return path ? path : "";
}

void write_file(const std::string& path, const std::string& data) { std::ofstream(path) << data; }

class StepProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    ASSERT_FALSE(helper_path().empty()) << "KBUILD_EXEC_HELPER is not set";
    ASSERT_EQ(::access("/bin/busybox", X_OK), 0) << "needs /bin/busybox (busybox-static)";
    base_ = dir_.path() + "/base";
    for (const char* d : {"", "/bin", "/etc", "/tmp", "/proc", "/dev", "/sys", "/home", "/home/builder"}) {
      ASSERT_EQ(::mkdir((base_ + d).c_str(), 0755), 0) << d;
    }
    ::chmod((base_ + "/tmp").c_str(), 01777);
    ASSERT_EQ(::chown((base_ + "/home/builder").c_str(), 1000, 1000), 0);
    std::ifstream in("/bin/busybox", std::ios::binary);
    std::ofstream out(base_ + "/bin/busybox", std::ios::binary);
    out << in.rdbuf();
    out.close();
    ::chmod((base_ + "/bin/busybox").c_str(), 0755);
    for (const char* applet : {"sh", "cat", "echo", "ls", "id", "hostname", "mount", "unshare", "grep", "readlink",
                               "sleep", "touch", "rm", "mknod", "head", "wc", "printf"}) {
      ASSERT_EQ(::symlink("busybox", (base_ + "/bin/" + applet).c_str()), 0);
    }
    write_file(base_ + "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\nbuilder:x:1000:1000::/home/builder:/bin/sh\n");
    mountpoint_ = dir_.path() + "/rootfs";
    ASSERT_EQ(::mkdir(mountpoint_.c_str(), 0755), 0);
    DirectBackendOptions options;
    options.parent_name = "kbuild-steptest-" + std::to_string(::getpid());
    backend_ = make_direct_backend(options);
    build_ = backend_->create_build("steps", "", {});
  }

  // A fresh upper dir over the base for each run.
  StepLaunch launch(std::vector<std::string> argv) {
    StepLaunch l;
    l.helper_path = helper_path();
    l.step_name = "step-" + std::to_string(++steps_);
    std::string layer = dir_.path() + "/" + l.step_name;
    ::mkdir(layer.c_str(), 0755);
    ::mkdir((layer + "/diff").c_str(), 0755);
    ::mkdir((layer + "/work").c_str(), 0700);
    upper_ = layer + "/diff";
    l.spec.argv = std::move(argv);
    l.spec.env = {"PATH=/bin"};
    l.spec.capabilities = kDefaultCaps;
    l.spec.rootfs = {{base_}, upper_, layer + "/work", mountpoint_};
    return l;
  }

  struct Result {
    StepOutcome outcome;
    std::string out, err;
  };

  Result run(StepLaunch l) {
    Result r;
    r.outcome = run_step_process(
        l, *build_, [&](int stream, std::string_view data) { (stream == 1 ? r.out : r.err).append(data); },
        [] { return false; });
    return r;
  }

  Result shell(const std::string& script) { return run(launch({"/bin/sh", "-c", script})); }

  TempDir dir_{"/tmp", "kbuild-step-test-"};
  std::string base_, mountpoint_, upper_;
  std::unique_ptr<CgroupBackend> backend_;
  std::unique_ptr<BuildCgroup> build_;
  int steps_ = 0;
};

TEST_F(StepProcessTest, OutputExitCodeAndLayerComeBack) {
  Result r = shell("echo out; echo err >&2; echo data > /made; exit 3");
  EXPECT_EQ(r.out, "out\n");
  EXPECT_EQ(r.err, "err\n");
  EXPECT_EQ(r.outcome.exit.exit_code, 3);
  std::ifstream made(upper_ + "/made");
  std::string content;
  std::getline(made, content);
  EXPECT_EQ(content, "data");
}

TEST_F(StepProcessTest, OutputComesALineAtATimeSoStreamsNeverSplice) {
  StepLaunch l = launch({"/bin/sh", "-c", "for i in 1 2 3 4 5 6 7 8; do printf 'err-' >&2; echo out$i; echo $i >&2; done"});
  std::vector<std::pair<int, std::string>> chunks;
  run_step_process(
      l, *build_, [&](int stream, std::string_view data) { chunks.emplace_back(stream, std::string(data)); },
      [] { return false; });
  std::string out, err;
  for (const auto& [stream, data] : chunks) {
    ASSERT_FALSE(data.empty());
    EXPECT_EQ(data.back(), '\n') << "stream " << stream << " chunk " << data;
    (stream == 1 ? out : err) += data;
  }
  EXPECT_EQ(out, "out1\nout2\nout3\nout4\nout5\nout6\nout7\nout8\n");
  EXPECT_EQ(err, "err-1\nerr-2\nerr-3\nerr-4\nerr-5\nerr-6\nerr-7\nerr-8\n");
}

TEST_F(StepProcessTest, StepIsPidOneWithItsOwnHostnameAndDefaultCapabilities) {
  // /proc shows the step's own processes only: the shell, and the ls and grep of the pipeline
  // (grep may not have started when ls reads /proc).
  Result r = shell("echo $$; hostname; grep -E '^Cap(Eff|Bnd|Inh|Amb)' /proc/self/status; "
                   "n=$(ls /proc | grep -c '^[0-9]'); [ $n -le 4 ] && echo few");
  EXPECT_EQ(r.outcome.exit.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(r.out,
            "1\nbuildkitsandbox\nCapInh:\t0000000000000000\nCapEff:\t00000000a80425fb\n"
            "CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\nfew\n");
}

TEST_F(StepProcessTest, OnlyTheStandardStreamsAreOpen) {
  Result r = shell("ls /proc/self/fd");
  EXPECT_EQ(r.outcome.exit.exit_code, 0) << r.err;
  // 0-2, and the directory ls reads.
  EXPECT_EQ(r.out, "0\n1\n2\n3\n");
}

TEST_F(StepProcessTest, UserSwitchDropsCapabilities) {
  StepLaunch l = launch({"/bin/sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"});
  l.spec.uid = 1000;
  l.spec.gid = 1000;
  Result r = run(std::move(l));
  EXPECT_EQ(r.out, "1000\n1000\nCapEff:\t0000000000000000\n") << r.err;
}

TEST_F(StepProcessTest, NoneNetworkHasOnlyLoopback) {
  StepLaunch l = launch({"/bin/sh", "-c", "cat /proc/net/dev | grep -c ':'; grep -q 'lo:' /proc/net/dev && echo lo"});
  l.spec.network = NetworkMode::none;
  Result r = run(std::move(l));
  EXPECT_EQ(r.out, "1\nlo\n") << r.err;
}

TEST_F(StepProcessTest, JoinedNetworkIsTheNamespaceOfTheFdAndItsFdIsNotLeftOpen) {
  // A namespace made on a thread of its own, held by its fd only (as engine/network holds it).
  UniqueFd ns;
  std::thread([&] {
    if (::unshare(CLONE_NEWNET) == 0) ns.reset(::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC));
  }).join();
  ASSERT_TRUE(ns);
  struct stat st {};
  ASSERT_EQ(::fstat(ns.get(), &st), 0);
  StepLaunch l = launch({"/bin/sh", "-c", "readlink /proc/self/ns/net; ls /proc/self/fd | tr '\\n' ' '"});
  l.spec.network = NetworkMode::join;
  l.spec.netns_fd = static_cast<int>(l.extra_fds.size());
  l.extra_fds.push_back(std::move(ns));
  Result r = run(std::move(l));
  EXPECT_EQ(r.outcome.exit.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "net:[" + std::to_string(st.st_ino) + "]\n0 1 2 3 ") << r.err;
}

TEST_F(StepProcessTest, SeccompFilterDeniesNamespacesAndMounts) {
  StepLaunch l = launch({"/bin/sh", "-c", "unshare -U true && echo unshared; mount -t tmpfs none /tmp && echo mounted; echo end"});
  std::string program = seccomp::serialize(seccomp::compile(seccomp::default_profile(), kDefaultCaps));
  UniqueFd memfd(::memfd_create("seccomp", MFD_CLOEXEC));
  ASSERT_EQ(::write(memfd.get(), program.data(), program.size()), static_cast<ssize_t>(program.size()));
  ::lseek(memfd.get(), 0, SEEK_SET);
  l.spec.seccomp_fd = 0;
  l.extra_fds.push_back(std::move(memfd));
  Result r = run(std::move(l));
  EXPECT_EQ(r.out, "end\n") << r.err;
}

TEST_F(StepProcessTest, MountsBindReadOnlyAndTmpfs) {
  std::string source = dir_.path() + "/source";
  ASSERT_EQ(::mkdir(source.c_str(), 0755), 0);
  write_file(source + "/f", "bound\n");
  StepLaunch l = launch({"/bin/sh", "-c", "cat /m/f; touch /m/g 2>/dev/null || echo read-only; echo t > /t/x && cat /t/x"});
  MountSpec bind;
  bind.kind = MountSpec::Kind::bind;
  bind.target = "/m";
  bind.read_only = true;
  bind.fd = 0;
  l.extra_fds.emplace_back(::open(source.c_str(), O_PATH | O_CLOEXEC));
  MountSpec tmpfs;
  tmpfs.kind = MountSpec::Kind::tmpfs;
  tmpfs.target = "/t";
  l.spec.mounts = {bind, tmpfs};
  Result r = run(std::move(l));
  EXPECT_EQ(r.out, "bound\nread-only\nt\n") << r.err;
  EXPECT_FALSE(std::ifstream(upper_ + "/t/x").good());
}

TEST_F(StepProcessTest, MountTargetsNeverLeaveTheRootfs) {
  // A symlink in the image pointing at a host path resolves inside the rootfs.
  std::string host_dir = dir_.path() + "/host-secret";
  ASSERT_EQ(::mkdir(host_dir.c_str(), 0755), 0);
  write_file(host_dir + "/keep", "host\n");
  ASSERT_EQ(::symlink(host_dir.c_str(), (base_ + "/escape").c_str()), 0);
  StepLaunch l = launch({"/bin/sh", "-c", "echo x > /escape/new"});
  MountSpec tmpfs;
  tmpfs.kind = MountSpec::Kind::tmpfs;
  tmpfs.target = "/escape";
  l.spec.mounts = {tmpfs};
  // Whether the step runs (the target made inside) or is refused, the host is untouched.
  run(std::move(l));
  EXPECT_FALSE(std::ifstream(host_dir + "/new").good());
  EXPECT_TRUE(std::ifstream(host_dir + "/keep").good());
}

TEST_F(StepProcessTest, DeviceNodesTheStepMakesCannotBeOpened) {
  // Block device 7:0 (loop0) and the char device behind /dev/mem (1:1): made, never opened.
  Result r = shell("mknod /dev/made b 7 0 && mknod /made c 1 1 && echo made; "
                   "head -c1 /dev/made >/dev/null 2>&1 || echo dev-denied; "
                   "head -c1 /made >/dev/null 2>&1 || echo rootfs-denied; "
                   "echo x > /dev/null && head -c1 /dev/zero | wc -c");
  EXPECT_EQ(r.out, "made\ndev-denied\nrootfs-denied\n1\n") << r.err;
}

TEST_F(StepProcessTest, WorkdirThroughAMagicLinkIsRefused) {
  StepLaunch l = launch({"/bin/sh", "-c", "pwd"});
  l.spec.cwd = "/proc/self/fd/3";
  Result r = run(std::move(l));
  EXPECT_NE(r.outcome.exit.error, "");
  EXPECT_EQ(r.out, "");
}

TEST_F(StepProcessTest, MissingCommandIsReportedLikeRunc) {
  Result r = run(launch({"nosuch"}));
  EXPECT_EQ(r.outcome.exit.error, "exec: \"nosuch\": executable file not found in $PATH");
}

// A program of a machine no kernel and no handler runs: execve says ENOEXEC.
std::string unknown_machine_program() {
  std::string header = std::string("\x7f" "ELF\x02\x01\x01", 7) + std::string(9, '\0') + std::string("\x02\x00\x34\x12", 4);
  return header + std::string(44, '\0');
}

TEST_F(StepProcessTest, AProgramOfAnotherFormatIsReportedWithItsHeader) {
  write_file(base_ + "/bin/foreign", unknown_machine_program());
  ASSERT_EQ(::chmod((base_ + "/bin/foreign").c_str(), 0755), 0);
  Result r = run(launch({"foreign", "arg"}));
  EXPECT_EQ(r.outcome.exit.error, "exec foreign: exec format error");
  EXPECT_EQ(r.outcome.exit.exec_header, unknown_machine_program());
}

TEST_F(StepProcessTest, AScriptForAProgramOfAnotherFormatIsReportedWithTheInterpretersHeader) {
  write_file(base_ + "/bin/foreign", unknown_machine_program());
  write_file(base_ + "/bin/script", "#!/bin/foreign -x\necho hi\n");
  ASSERT_EQ(::chmod((base_ + "/bin/foreign").c_str(), 0755), 0);
  ASSERT_EQ(::chmod((base_ + "/bin/script").c_str(), 0755), 0);
  Result r = run(launch({"/bin/script"}));
  EXPECT_EQ(r.outcome.exit.error, "exec /bin/script: exec format error");
  EXPECT_EQ(r.outcome.exit.exec_header, unknown_machine_program());
}

// An x86-64 program whose dynamic loader (PT_INTERP) is `loader`.
std::string program_with_loader(const std::string& loader) {
  std::string out;
  auto put = [&](uint64_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  };
  const uint64_t headers = 64 + 2 * 56, size = headers + loader.size() + 1;
  out += std::string("\x7f" "ELF\x02\x01\x01", 7) + std::string(9, '\0');
  put(2, 2), put(62, 2), put(1, 4), put(0x400000 + headers, 8), put(64, 8), put(0, 8), put(0, 4);
  put(64, 2), put(56, 2), put(2, 2), put(0, 2), put(0, 2), put(0, 2);
  put(3, 4), put(4, 4), put(headers, 8), put(0x400000 + headers, 8), put(0x400000 + headers, 8);  // PT_INTERP
  put(loader.size() + 1, 8), put(loader.size() + 1, 8), put(1, 8);
  put(1, 4), put(5, 4), put(0, 8), put(0x400000, 8), put(0x400000, 8), put(size, 8), put(size, 8), put(0x1000, 8);
  return out + loader + '\0';
}

TEST_F(StepProcessTest, AProgramWhoseInterpreterIsMissingIsReportedWithItsHeader) {
  const std::string program = program_with_loader("/lib/nosuch-ld.so");
  write_file(base_ + "/bin/dynamic", program);
  ASSERT_EQ(::chmod((base_ + "/bin/dynamic").c_str(), 0755), 0);
  Result r = run(launch({"/bin/dynamic"}));
  EXPECT_EQ(r.outcome.exit.error, "exec /bin/dynamic: no such file or directory");
  EXPECT_EQ(r.outcome.exit.exec_header, program.substr(0, 64));
  // A program that is not there has no header to show.
  r = run(launch({"/bin/missing"}));
  EXPECT_EQ(r.outcome.exit.error, "exec /bin/missing: no such file or directory");
  EXPECT_EQ(r.outcome.exit.exec_header, "");
}

TEST_F(StepProcessTest, OtherExecErrorsReadAsGoWordsThemAndCarryNoHeader) {
  Result r = run(launch({"/etc/passwd"}));
  EXPECT_EQ(r.outcome.exit.error, "exec /etc/passwd: permission denied");
  EXPECT_EQ(r.outcome.exit.exec_header, "");
}

TEST_F(StepProcessTest, SucceededStepsAreReapedInTheBackground) {
  StepReaper reaper;
  StepLaunch l = launch({"/bin/sh", "-c", "echo ok"});
  std::string out;
  StepOutcome outcome = run_step_process(
      l, *build_, [&](int, std::string_view data) { out.append(data); }, [] { return false; }, &reaper);
  EXPECT_EQ(outcome.exit.exit_code, 0);
  EXPECT_EQ(out, "ok\n");
}

TEST_F(StepProcessTest, CancelKillsTheStep) {
  StepLaunch l = launch({"/bin/sh", "-c", "sleep 30"});
  auto start = std::chrono::steady_clock::now();
  StepOutcome outcome = run_step_process(
      l, *build_, [](int, std::string_view) {},
      [&] { return std::chrono::steady_clock::now() - start > std::chrono::milliseconds(200); });
  EXPECT_TRUE(outcome.canceled);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

}  // namespace
}  // namespace kbuild::sandbox
