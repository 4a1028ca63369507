// Which platforms' programs RUN steps can run on this host: the kernel's own, and others
// through binfmt_misc handlers (qemu-user-static). A handler helps a step only with the F
// (fix-binary) flag: the kernel then opens its interpreter when it is registered, and a step's
// root need not hold it. kbuildd may register qemu-user-static itself (features.binfmt-install).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::sandbox {

// One binfmt_misc handler, as /proc/sys/fs/binfmt_misc/<name> describes it.
struct BinfmtHandler {
  std::string name;         // "qemu-aarch64"
  bool enabled = false;
  std::string interpreter;  // "/usr/libexec/qemu-binfmt/aarch64-binfmt-P"
  std::string flags;        // "PF"
  bool by_magic = false;    // false: by file name extension, which never matches a program here
  size_t offset = 0;
  std::string magic, mask;  // raw bytes; an empty mask compares every bit

  bool fix_binary() const { return flags.find('F') != std::string::npos; }
  // Whether the kernel hands a file starting with `header` to this handler (when enabled).
  bool matches(std::string_view header) const;
};

// Parses a handler's file; throws kbuild::Error (internal) naming `name` when it is not one.
BinfmtHandler parse_binfmt_handler(const std::string& name, std::string_view text);

// The platform ("linux/arm64", "linux/arm" for 32-bit arm of any variant) an ELF header is
// for, or "" when it is not an ELF header or names no architecture kbuild knows.
std::string elf_platform(std::string_view header);

// The platforms this kernel runs without any handler: its own (with amd64's micro-architecture
// levels the CPU has) and the 32-bit one of a 64-bit kernel (linux/386, linux/arm/v7+v6) when
// a tiny program for it runs, tried in an empty root as BuildKit's archutil does.
std::vector<std::string> native_platforms();

// Mounts binfmt_misc at `dir` when it is not there, in the caller's mount namespace (kbuildd's
// own). Best effort: where it cannot, Emulation says binfmt_misc is not mounted.
void mount_binfmt_misc(const std::string& dir);

// How one platform runs here.
struct PlatformSupport {
  enum class State {
    native,    // the kernel runs it
    emulated,  // an enabled handler with the F flag runs it
    unusable,  // a handler or an emulator is there, but steps cannot use it (detail says why)
    missing,   // nothing here runs it
  };
  std::string platform;  // "linux/arm64"
  State state = State::missing;
  // native: ""; emulated: the handler and its interpreter; otherwise why not, and what to do.
  std::string detail;

  bool runnable() const { return state == State::native || state == State::emulated; }
};

// Where the host's state is read and written: tests point them at a directory of their own.
struct EmulationPaths {
  std::string binfmt_misc = "/proc/sys/fs/binfmt_misc";
  std::string emulators = "/usr/bin";  // qemu-<arch>-static
};

// The host's emulation as it is when asked: binfmt_misc is read on every call, as another
// program may register or disable handlers at any time.
class Emulation {
 public:
  // `native` is native_platforms() (tests give their own).
  explicit Emulation(std::vector<std::string> native, EmulationPaths paths = {});

  // Every platform kbuild knows, in BuildKit's order (the native ones first). `install_allowed`
  // (features.binfmt-install) only changes what details advise.
  std::vector<PlatformSupport> support(bool install_allowed) const;
  // Registers, with the F flag, the qemu-user-static interpreter of each platform steps cannot
  // run yet that has one installed, unless a handler of it is disabled (the administrator's
  // choice). Handlers there stay as they are: one without F is passed over, as the kernel tries
  // the newest handler first. Returns one line per platform registered or failed.
  std::vector<std::string> install() const;
  // For a program execve refused (ENOEXEC, or ENOENT for a missing interpreter) whose header is
  // `header`: "(this host cannot run linux/arm64 programs: ...)", or "" when its platform is
  // one this host runs or none known.
  std::string exec_format_hint(std::string_view header, bool install_allowed) const;

 private:
  PlatformSupport support_of(const std::string& platform, const std::vector<BinfmtHandler>& handlers,
                             const std::string& binfmt_problem, bool install_allowed) const;
  // The handlers there are; sets `problem` when binfmt_misc cannot be read or is disabled.
  std::vector<BinfmtHandler> read_handlers(std::string& problem) const;

  std::vector<std::string> native_;
  EmulationPaths paths_;
};

// The registration line (binfmt_misc's register file) of `interpreter` for `platform`.
std::string binfmt_registration(const std::string& platform, const std::string& interpreter);

}  // namespace kbuild::sandbox
