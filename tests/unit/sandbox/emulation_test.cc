// binfmt_misc handlers and the platforms they make runnable, on a directory of fake handler
// files; native_platforms() for real.
#include "engine/sandbox/emulation.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "common/error.h"
#include "common/temp_dir.h"

namespace kbuild::sandbox {
namespace {

// What Debian's qemu-user-static registers for aarch64 (update-binfmts), as the kernel shows it.
constexpr const char* kAarch64Handler =
    "enabled\n"
    "interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
    "flags: PF\n"
    "offset 0\n"
    "magic 7f454c460201010000000000000000000200b700\n"
    "mask ffffffffffffff00fffffffffffffffffeffffff\n";
constexpr const char* kS390xHandler =
    "enabled\n"
    "interpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P\n"
    "flags: PF\n"
    "offset 0\n"
    "magic 7f454c4602020100000000000000000000020016\n"
    "mask fffffffffffffffcfffffffffffffffffffeffff\n";
constexpr const char* kJarHandler = "enabled\ninterpreter /usr/bin/jexec\nflags: \noffset 0\nmagic 504b0304\n";

// The first bytes of a program: e_ident, e_type, e_machine.
std::string header(int elf_class, int data, int type, int machine) {
  std::string h = std::string("\x7f" "ELF", 4) + static_cast<char>(elf_class) + static_cast<char>(data) + '\x01';
  h += std::string(9, '\0');
  auto put16 = [&](int v) {
    h += static_cast<char>(data == 1 ? v & 0xff : v >> 8);
    h += static_cast<char>(data == 1 ? v >> 8 : v & 0xff);
  };
  put16(type);
  put16(machine);
  return h + std::string(44, '\0');
}
const std::string kArm64Program = header(2, 1, 3, 183);

class FakeHost : public ::testing::Test {
 protected:
  void SetUp() override {
    paths_.binfmt_misc = dir_.path() + "/binfmt_misc";
    paths_.emulators = dir_.path() + "/bin";
    ASSERT_EQ(::mkdir(paths_.binfmt_misc.c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(paths_.emulators.c_str(), 0755), 0);
    write("binfmt_misc/status", "enabled\n");
    write("binfmt_misc/register", "");
  }
  void write(const std::string& name, const std::string& text) { std::ofstream(dir_.path() + "/" + name) << text; }
  void install_emulator(const std::string& qemu) {
    const std::string path = paths_.emulators + "/qemu-" + qemu + "-static";
    write("bin/qemu-" + qemu + "-static", "");
    ASSERT_EQ(::chmod(path.c_str(), 0755), 0);
  }
  std::string read(const std::string& name) {
    std::ifstream in(dir_.path() + "/" + name);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  Emulation host() const { return Emulation({"linux/amd64", "linux/386"}, paths_); }
  // The platforms steps can run, as Info lists them.
  std::vector<std::string> runnable() const {
    std::vector<std::string> out;
    for (const PlatformSupport& s : host().support(false)) {
      if (s.runnable()) out.push_back(s.platform);
    }
    return out;
  }
  PlatformSupport support(const std::string& platform, bool install_allowed = false) const {
    for (const PlatformSupport& s : host().support(install_allowed)) {
      if (s.platform == platform) return s;
    }
    ADD_FAILURE() << platform << " is not listed";
    return {};
  }

  TempDir dir_;
  EmulationPaths paths_;
};

TEST(BinfmtHandler, ParsesWhatTheKernelShows) {
  BinfmtHandler h = parse_binfmt_handler("qemu-aarch64", kAarch64Handler);
  EXPECT_EQ(h.name, "qemu-aarch64");
  EXPECT_TRUE(h.enabled);
  EXPECT_EQ(h.interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
  EXPECT_EQ(h.flags, "PF");
  EXPECT_TRUE(h.fix_binary());
  EXPECT_TRUE(h.by_magic);
  EXPECT_EQ(h.offset, 0u);
  EXPECT_EQ(h.magic.size(), 20u);
  EXPECT_EQ(h.magic.substr(0, 4), "\x7f" "ELF");
  EXPECT_EQ(h.mask[7], '\0');
}

TEST(BinfmtHandler, DisabledAndWithoutFlags) {
  BinfmtHandler h = parse_binfmt_handler("jar", std::string("disabled") + (kJarHandler + 7));
  EXPECT_FALSE(h.enabled);
  EXPECT_EQ(h.flags, "");
  EXPECT_FALSE(h.fix_binary());
  EXPECT_EQ(h.magic, "PK\x03\x04");
  EXPECT_TRUE(h.mask.empty());
}

TEST(BinfmtHandler, ExtensionHandlersMatchNoProgram) {
  BinfmtHandler h = parse_binfmt_handler("exe", "enabled\ninterpreter /usr/bin/wine\nflags: \nextension .exe\n");
  EXPECT_FALSE(h.by_magic);
  EXPECT_FALSE(h.matches(kArm64Program));
}

TEST(BinfmtHandler, RefusesTextThatIsNotAHandler) {
  EXPECT_THROW(parse_binfmt_handler("x", "interpreter /x\n"), Error);
  EXPECT_THROW(parse_binfmt_handler("x", "enabled\nmagic 7f4g\n"), Error);
  EXPECT_THROW(parse_binfmt_handler("x", "enabled\nmagic 7f4\n"), Error);
  EXPECT_THROW(parse_binfmt_handler("x", "enabled\noffset many\n"), Error);
}

TEST(BinfmtHandler, MatchesUnderItsMask) {
  BinfmtHandler h = parse_binfmt_handler("qemu-aarch64", kAarch64Handler);
  EXPECT_TRUE(h.matches(header(2, 1, 2, 183)));  // static executable
  EXPECT_TRUE(h.matches(header(2, 1, 3, 183)));  // PIE
  std::string other_abi = kArm64Program;
  other_abi[7] = 3;  // OS ABI: the mask ignores it
  EXPECT_TRUE(h.matches(other_abi));
  EXPECT_FALSE(h.matches(header(2, 1, 1, 183)));  // a relocatable object
  EXPECT_FALSE(h.matches(header(2, 1, 3, 62)));   // x86-64
  EXPECT_FALSE(h.matches(header(1, 1, 3, 183)));  // 32-bit
  EXPECT_FALSE(h.matches(kArm64Program.substr(0, 19)));  // shorter than the magic
}

TEST(ElfPlatform, NamesTheArchitecturesKbuildKnows) {
  EXPECT_EQ(elf_platform(header(2, 1, 3, 183)), "linux/arm64");
  EXPECT_EQ(elf_platform(header(2, 1, 2, 62)), "linux/amd64");
  EXPECT_EQ(elf_platform(header(1, 1, 2, 3)), "linux/386");
  EXPECT_EQ(elf_platform(header(1, 1, 2, 40)), "linux/arm");
  EXPECT_EQ(elf_platform(header(2, 2, 2, 22)), "linux/s390x");
  EXPECT_EQ(elf_platform(header(2, 2, 2, 21)), "linux/ppc64");
  EXPECT_EQ(elf_platform(header(2, 1, 2, 21)), "linux/ppc64le");
  EXPECT_EQ(elf_platform(header(2, 1, 2, 8)), "linux/mips64le");
  EXPECT_EQ(elf_platform(header(2, 1, 2, 243)), "linux/riscv64");
  EXPECT_EQ(elf_platform(header(2, 1, 2, 258)), "linux/loong64");
}

TEST(ElfPlatform, EmptyForOtherFiles) {
  EXPECT_EQ(elf_platform("#!/bin/sh\necho hi\n"), "");
  EXPECT_EQ(elf_platform(header(2, 1, 2, 0x1234)), "");
  EXPECT_EQ(elf_platform(header(1, 1, 2, 62)), "");  // x32
  EXPECT_EQ(elf_platform(header(2, 1, 3, 183).substr(0, 19)), "");
}

TEST(BinfmtRegistration, IsDebiansMagicWithTheFixBinaryFlag) {
  const std::string line = binfmt_registration("linux/arm64", "/usr/bin/qemu-aarch64-static");
  EXPECT_EQ(line,
            ":kbuild-qemu-aarch64:M:0:"
            "\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:"
            "\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:"
            "/usr/bin/qemu-aarch64-static:F");
}

TEST(BinfmtRegistration, BigEndianTypeAndMachine) {
  const std::string line = binfmt_registration("linux/s390x", "/usr/bin/qemu-s390x-static");
  EXPECT_NE(line.find("\\x00\\x02\\x00\\x16:"), std::string::npos) << line;
  EXPECT_NE(line.find("\\xff\\xfe\\xff\\xff:"), std::string::npos) << line;
}

TEST(BinfmtRegistration, RefusesAnInterpreterThatWouldBreakTheLine) {
  EXPECT_THROW(binfmt_registration("linux/arm64", "/opt/a:b/qemu"), Error);
  EXPECT_THROW(binfmt_registration("linux/arm64", "qemu-aarch64-static"), Error);
  EXPECT_THROW(binfmt_registration("linux/sparc", "/usr/bin/qemu-sparc-static"), Error);
}

TEST_F(FakeHost, NativeFirstThenEmulatedInBuildKitsOrder) {
  write("binfmt_misc/qemu-s390x", kS390xHandler);
  write("binfmt_misc/qemu-aarch64", kAarch64Handler);
  write("binfmt_misc/jar", kJarHandler);
  EXPECT_EQ(runnable(), (std::vector<std::string>{"linux/amd64", "linux/386", "linux/arm64", "linux/s390x"}));
  EXPECT_EQ(support("linux/arm64").state, PlatformSupport::State::emulated);
  EXPECT_EQ(support("linux/arm64").detail,
            "binfmt_misc handler qemu-aarch64 (/usr/libexec/qemu-binfmt/aarch64-binfmt-P)");
  EXPECT_EQ(support("linux/386").state, PlatformSupport::State::native);
}

TEST_F(FakeHost, AHandlerWithoutFixBinaryIsNotUsable) {
  std::string text = kAarch64Handler;
  text.replace(text.find("flags: PF"), 9, "flags: P");
  write("binfmt_misc/qemu-aarch64", text);
  PlatformSupport s = support("linux/arm64");
  EXPECT_EQ(s.state, PlatformSupport::State::unusable);
  EXPECT_NE(s.detail.find("qemu-aarch64 has no F (fix-binary) flag"), std::string::npos) << s.detail;
  EXPECT_EQ(runnable(), (std::vector<std::string>{"linux/amd64", "linux/386"}));
}

TEST_F(FakeHost, ADisabledHandlerIsNotUsable) {
  write("binfmt_misc/qemu-aarch64", std::string("disabled") + (kAarch64Handler + 7));
  PlatformSupport s = support("linux/arm64");
  EXPECT_EQ(s.state, PlatformSupport::State::unusable);
  EXPECT_EQ(s.detail, "the binfmt_misc handler qemu-aarch64 is disabled: enable it with echo 1 > " +
                          paths_.binfmt_misc + "/qemu-aarch64");
}

TEST_F(FakeHost, BinfmtMiscDisabledAsAWholeRunsNothing) {
  write("binfmt_misc/qemu-aarch64", kAarch64Handler);
  write("binfmt_misc/status", "disabled\n");
  EXPECT_EQ(support("linux/arm64").detail, "binfmt_misc is disabled: enable it with echo 1 > " + paths_.binfmt_misc + "/status");
  EXPECT_EQ(runnable(), (std::vector<std::string>{"linux/amd64", "linux/386"}));
}

TEST_F(FakeHost, NotMountedSaysSo) {
  ::unlink((paths_.binfmt_misc + "/status").c_str());
  PlatformSupport s = support("linux/arm64");
  EXPECT_EQ(s.state, PlatformSupport::State::missing);
  EXPECT_EQ(s.detail, "binfmt_misc is not mounted at " + paths_.binfmt_misc);
}

TEST_F(FakeHost, AdviceDependsOnWhatIsInstalledAndAllowed) {
  EXPECT_EQ(support("linux/arm64").state, PlatformSupport::State::missing);
  EXPECT_NE(support("linux/arm64").detail.find("install qemu-user-static, or let kbuildd register it"), std::string::npos);
  EXPECT_EQ(support("linux/arm64", true).detail, "install qemu-user-static and reload kbuildd, which registers it");
  install_emulator("aarch64");
  EXPECT_EQ(support("linux/arm64").state, PlatformSupport::State::unusable);
  EXPECT_NE(support("linux/arm64").detail.find("qemu-aarch64-static is not registered with binfmt_misc: register it "
                                               "(update-binfmts --enable qemu-aarch64)"),
            std::string::npos)
      << support("linux/arm64").detail;
}

TEST_F(FakeHost, ArmIsListedAsV7AndV6) {
  write("binfmt_misc/qemu-arm",
        "enabled\ninterpreter /usr/libexec/qemu-binfmt/arm-binfmt-P\nflags: PF\noffset 0\n"
        "magic 7f454c4601010100000000000000000002002800\nmask ffffffffffffff00fffffffffffffffffeffffff\n");
  EXPECT_EQ(runnable(), (std::vector<std::string>{"linux/amd64", "linux/386", "linux/arm/v7", "linux/arm/v6"}));
}

TEST_F(FakeHost, InstallRegistersOnlyWhatNothingHandles) {
  install_emulator("aarch64");
  install_emulator("s390x");
  install_emulator("i386");  // native here: never registered
  std::string disabled = std::string("disabled") + (kS390xHandler + 7);
  write("binfmt_misc/qemu-s390x", disabled);  // the administrator's: stays as it is
  std::vector<std::string> done = host().install();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_EQ(done[0], "registered " + paths_.emulators + "/qemu-aarch64-static for linux/arm64 as binfmt_misc handler "
                                                        "kbuild-qemu-aarch64");
  EXPECT_EQ(read("binfmt_misc/register"), binfmt_registration("linux/arm64", paths_.emulators + "/qemu-aarch64-static"));
  EXPECT_EQ(read("binfmt_misc/qemu-s390x"), disabled);
}

TEST_F(FakeHost, InstallAddsAFixBinaryHandlerBesideOneWithout) {
  install_emulator("aarch64");
  std::string text = kAarch64Handler;
  text.replace(text.find("flags: PF"), 9, "flags: P");
  write("binfmt_misc/qemu-aarch64", text);
  EXPECT_NE(support("linux/arm64").detail.find(", or let kbuildd register " + paths_.emulators +
                                               "/qemu-aarch64-static so with \"features\""),
            std::string::npos)
      << support("linux/arm64").detail;
  ASSERT_EQ(host().install().size(), 1u);
  EXPECT_EQ(read("binfmt_misc/register"), binfmt_registration("linux/arm64", paths_.emulators + "/qemu-aarch64-static"));
  EXPECT_EQ(read("binfmt_misc/qemu-aarch64"), text);
  // Once the kernel has it, nothing more is registered.
  write("binfmt_misc/kbuild-qemu-aarch64", "enabled\ninterpreter " + paths_.emulators +
                                              "/qemu-aarch64-static\nflags: F\noffset 0\n"
                                              "magic 7f454c460201010000000000000000000200b700\n"
                                              "mask ffffffffffffff00fffffffffffffffffeffffff\n");
  EXPECT_EQ(support("linux/arm64").state, PlatformSupport::State::emulated);
  EXPECT_TRUE(host().install().empty());
}

TEST_F(FakeHost, InstallDoesNothingWhenBinfmtMiscIsDisabled) {
  install_emulator("aarch64");
  write("binfmt_misc/status", "disabled\n");
  EXPECT_EQ(host().install(), (std::vector<std::string>{"registering qemu-user-static: binfmt_misc is disabled: enable "
                                                        "it with echo 1 > " + paths_.binfmt_misc + "/status"}));
  EXPECT_EQ(read("binfmt_misc/register"), "");
}

TEST_F(FakeHost, InstallReportsAFailedRegistration) {
  install_emulator("aarch64");
  ::unlink((paths_.binfmt_misc + "/register").c_str());
  ASSERT_EQ(::mkdir((paths_.binfmt_misc + "/register").c_str(), 0755), 0);
  std::vector<std::string> done = host().install();
  ASSERT_EQ(done.size(), 1u);
  EXPECT_TRUE(done[0].starts_with("registering " + paths_.emulators + "/qemu-aarch64-static for linux/arm64: ")) << done[0];
}

TEST_F(FakeHost, ExecFormatHintNamesThePlatformAndTheWayOut) {
  EXPECT_EQ(host().exec_format_hint(kArm64Program, false),
            "(this host cannot run linux/arm64 programs: install qemu-user-static, or let kbuildd register it with "
            "\"features\": {\"binfmt-install\": true} in daemon.json)");
  write("binfmt_misc/qemu-aarch64", kAarch64Handler);
  EXPECT_EQ(host().exec_format_hint(kArm64Program, false), "");  // runnable: some other reason
  EXPECT_EQ(host().exec_format_hint(header(2, 1, 2, 62), false), "");  // native
  EXPECT_EQ(host().exec_format_hint("#!/bin/sh\n", false), "");
  EXPECT_EQ(host().exec_format_hint(header(1, 1, 2, 40), true),
            "(this host cannot run linux/arm programs: install qemu-user-static and reload kbuildd, which registers it)");
}

TEST(NativePlatforms, StartWithTheKernelsOwn) {
  std::vector<std::string> native = native_platforms();
  ASSERT_FALSE(native.empty());
#if defined(__x86_64__)
  EXPECT_EQ(native.front(), "linux/amd64");
  // The 32-bit probe needs root (it runs in an empty chroot); every x86-64 CPU has level v2
  // since 2009, but the test does not rely on it.
  for (const std::string& p : native) {
    EXPECT_TRUE(p == "linux/amd64" || p == "linux/386" || p.starts_with("linux/amd64/v")) << p;
  }
#endif
}

}  // namespace
}  // namespace kbuild::sandbox
