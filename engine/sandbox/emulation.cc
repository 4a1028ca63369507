#include "engine/sandbox/emulation.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <optional>
#include <cstring>

#include "common/directory.h"
#include "common/error.h"
#include "common/fd_io.h"
#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"

namespace kbuild::sandbox {
namespace {

// An architecture as its ELF headers name it and qemu-user names its emulator.
struct Architecture {
  const char* platform;  // OCI, without variant
  const char* qemu;      // qemu-<qemu>-static
  unsigned char elf_class;  // 1: 32-bit, 2: 64-bit
  unsigned char elf_data;   // 1: little-endian, 2: big-endian
  uint16_t machine;         // e_machine
};

// In the order BuildKit's archutil lists them.
constexpr Architecture kArchitectures[] = {
    {"linux/amd64", "x86_64", 2, 1, 62},     {"linux/arm64", "aarch64", 2, 1, 183},
    {"linux/riscv64", "riscv64", 2, 1, 243}, {"linux/ppc64", "ppc64", 2, 2, 21},
    {"linux/ppc64le", "ppc64le", 2, 1, 21},  {"linux/s390x", "s390x", 2, 2, 22},
    {"linux/386", "i386", 1, 1, 3},          {"linux/mips64le", "mips64el", 2, 1, 8},
    {"linux/mips64", "mips64", 2, 2, 8},     {"linux/loong64", "loongarch64", 2, 1, 258},
    {"linux/arm", "arm", 1, 1, 40},
};

// 32-bit arm runs every variant the same way; it is listed as BuildKit lists it.
constexpr const char* kArmVariants[] = {"linux/arm/v7", "linux/arm/v6"};

const Architecture* architecture_of(std::string_view platform) {
  if (platform.starts_with("linux/arm/")) platform = "linux/arm";
  for (const Architecture& arch : kArchitectures) {
    if (platform == arch.platform) return &arch;
  }
  return nullptr;
}

// The first 64 bytes of an ELF file of `arch` of type `type` (2: executable, 3: PIE or
// shared object), the rest zero: what a handler's magic is compared with.
std::string elf_header(const Architecture& arch, uint16_t type) {
  std::string header(64, '\0');
  header.replace(0, 4, "\x7f" "ELF");
  header[4] = static_cast<char>(arch.elf_class);
  header[5] = static_cast<char>(arch.elf_data);
  header[6] = 1;  // EV_CURRENT
  auto put16 = [&](size_t at, uint16_t value) {
    const bool little = arch.elf_data == 1;
    header[at] = static_cast<char>(little ? value & 0xff : value >> 8);
    header[at + 1] = static_cast<char>(little ? value >> 8 : value & 0xff);
  };
  put16(16, type);
  put16(18, arch.machine);
  return header;
}

std::string hex_decode(std::string_view text, const std::string& what) {
  auto nibble = [&](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    throw Error(ErrorKind::internal, what + ": " + std::string(text) + " is not hexadecimal");
  };
  if (text.size() % 2) throw Error(ErrorKind::internal, what + ": " + std::string(text) + " is not hexadecimal");
  std::string out;
  for (size_t i = 0; i < text.size(); i += 2) out += static_cast<char>(nibble(text[i]) * 16 + nibble(text[i + 1]));
  return out;
}

std::string escaped(std::string_view bytes) {
  std::string out;
  char buf[5];
  for (unsigned char c : bytes) {
    std::snprintf(buf, sizeof buf, "\\x%02x", c);
    out += buf;
  }
  return out;
}

// A static 32-bit little-endian program of `machine` whose code (right after its headers,
// in one loadable segment) is `code`.
std::string elf32_program(uint16_t machine, uint32_t flags, std::string_view code) {
  constexpr uint32_t kBase = 0x400000, kHeaders = 52 + 32;
  const auto size = static_cast<uint32_t>(kHeaders + code.size());
  std::string out;
  auto put = [&](uint32_t value, int bytes) {
    for (int i = 0; i < bytes; ++i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  };
  out += "\x7f" "ELF";
  out += std::string("\x01\x01\x01", 3) + std::string(9, '\0');  // 32-bit, little-endian, version 1
  put(2, 2), put(machine, 2), put(1, 4), put(kBase + kHeaders, 4), put(52, 4), put(0, 4), put(flags, 4);
  put(52, 2), put(32, 2), put(1, 2), put(0, 2), put(0, 2), put(0, 2);
  // PT_LOAD of the whole file, readable and executable.
  put(1, 4), put(0, 4), put(kBase, 4), put(kBase, 4), put(size, 4), put(size, 4), put(5, 4), put(0x1000, 4);
  out += code;
  return out;
}

// Whether the kernel runs `program` in an empty root: as a step would, so a handler whose
// interpreter is looked up at exec time does not count.
bool runs_in_empty_root(std::string_view program) {
  UniqueFd exe = memfd_holding("kbuild-platform-probe", program);
  TempDir root;
  const pid_t child = ::fork();
  if (child < 0) return false;
  if (child == 0) {
    char name[] = "probe";
    char* argv[] = {name, nullptr};
    char* envp[] = {nullptr};
    if (::chroot(root.path().c_str()) == 0 && ::chdir("/") == 0) {
      ::syscall(SYS_execveat, exe.get(), "", argv, envp, AT_EMPTY_PATH);
    }
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) return false;
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// exit(0) for the 32-bit architecture a 64-bit kernel may run itself.
std::string i386_exit_program() {
  return elf32_program(3, 0, std::string("\xb8\x01\x00\x00\x00\x31\xdb\xcd\x80", 9));  // eax=1; ebx=0; int 0x80
}
std::string arm_exit_program() {
  // r0=0; r7=1 (exit); svc 0. EABI version 5, which a 64-bit kernel requires.
  return elf32_program(40, 0x05000000, std::string("\x00\x00\xa0\xe3\x01\x70\xa0\xe3\x00\x00\x00\xef", 12));
}

// Of the handlers that take programs of `arch`, the one most likely to run them: the kernel
// tries the most recently registered first, which binfmt_misc does not show.
const BinfmtHandler* best_handler(const Architecture& arch, const std::vector<BinfmtHandler>& handlers) {
  const BinfmtHandler* best = nullptr;
  auto rank = [](const BinfmtHandler& h) { return h.enabled ? (h.fix_binary() ? 2 : 1) : 0; };
  for (const BinfmtHandler& handler : handlers) {
    if (!handler.matches(elf_header(arch, 2)) && !handler.matches(elf_header(arch, 3))) continue;
    if (!best || rank(handler) > rank(*best)) best = &handler;
  }
  return best;
}

bool has_disabled_handler(const Architecture& arch, const std::vector<BinfmtHandler>& handlers) {
  return std::any_of(handlers.begin(), handlers.end(), [&](const BinfmtHandler& h) {
    return !h.enabled && (h.matches(elf_header(arch, 2)) || h.matches(elf_header(arch, 3)));
  });
}

std::string emulator_path(const EmulationPaths& paths, const Architecture& arch) {
  return paths.emulators + "/qemu-" + arch.qemu + "-static";
}

std::string read_small_file(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("open", path);
  return read_all(fd.get(), path);
}

std::string own_platform() {
  UniqueFd self(::open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  if (!self) return {};
  char header[64];
  const size_t n = read_some(self.get(), header, sizeof header, "/proc/self/exe");
  return elf_platform(std::string_view(header, n));
}

}  // namespace

bool BinfmtHandler::matches(std::string_view header) const {
  if (!by_magic || magic.empty() || offset + magic.size() > header.size()) return false;
  for (size_t i = 0; i < magic.size(); ++i) {
    const unsigned char bits = i < mask.size() ? static_cast<unsigned char>(mask[i]) : 0xff;
    if ((static_cast<unsigned char>(header[offset + i]) ^ static_cast<unsigned char>(magic[i])) & bits) return false;
  }
  return true;
}

BinfmtHandler parse_binfmt_handler(const std::string& name, std::string_view text) {
  BinfmtHandler handler;
  handler.name = name;
  const std::string what = "binfmt_misc handler " + name;
  bool status_seen = false;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    auto value_of = [&](std::string_view key) -> std::optional<std::string_view> {
      if (!line.starts_with(key)) return std::nullopt;
      std::string_view rest = line.substr(key.size());
      if (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
      return rest;
    };
    if (line == "enabled" || line == "disabled") {
      handler.enabled = line == "enabled";
      status_seen = true;
    } else if (auto v = value_of("interpreter")) {
      handler.interpreter = *v;
    } else if (auto v = value_of("flags:")) {
      handler.flags = *v;
    } else if (auto v = value_of("offset")) {
      try {
        handler.offset = std::stoul(std::string(*v));
      } catch (const std::exception&) {
        throw Error(ErrorKind::internal, what + ": offset " + std::string(*v) + " is not a number");
      }
    } else if (auto v = value_of("magic")) {
      handler.by_magic = true;
      handler.magic = hex_decode(*v, what);
    } else if (auto v = value_of("mask")) {
      handler.mask = hex_decode(*v, what);
    }
  }
  if (!status_seen) throw Error(ErrorKind::internal, what + " says neither enabled nor disabled");
  return handler;
}

std::string elf_platform(std::string_view header) {
  if (header.size() < 20 || !header.starts_with("\x7f" "ELF")) return {};
  const auto byte = [&](size_t at) { return static_cast<unsigned char>(header[at]); };
  const uint16_t machine = byte(5) == 2 ? static_cast<uint16_t>(byte(18) << 8 | byte(19))
                                        : static_cast<uint16_t>(byte(19) << 8 | byte(18));
  for (const Architecture& arch : kArchitectures) {
    if (arch.elf_class == byte(4) && arch.elf_data == byte(5) && arch.machine == machine) return arch.platform;
  }
  return {};
}

std::vector<std::string> native_platforms() {
  std::vector<std::string> out;
  const std::string own = own_platform();
  if (own.empty()) return out;
  out.push_back(own);
#if defined(__x86_64__)
  // As BuildKit lists them: each micro-architecture level this CPU has, lowest first.
  if (__builtin_cpu_supports("x86-64-v2")) out.push_back("linux/amd64/v2");
  if (__builtin_cpu_supports("x86-64-v3")) out.push_back("linux/amd64/v3");
  if (__builtin_cpu_supports("x86-64-v4")) out.push_back("linux/amd64/v4");
#endif
  if (own == "linux/amd64" && runs_in_empty_root(i386_exit_program())) out.push_back("linux/386");
  if (own == "linux/arm64" && runs_in_empty_root(arm_exit_program())) {
    out.insert(out.end(), std::begin(kArmVariants), std::end(kArmVariants));
  }
  return out;
}

void mount_binfmt_misc(const std::string& dir) {
  if (::access((dir + "/register").c_str(), F_OK) == 0) return;
  ::mount("binfmt_misc", dir.c_str(), "binfmt_misc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
}

std::string binfmt_registration(const std::string& platform, const std::string& interpreter) {
  const Architecture* arch = architecture_of(platform);
  if (!arch) throw Error(ErrorKind::internal, "no binfmt_misc magic for " + platform);
  if (interpreter.find_first_of(":\n") != std::string::npos || !interpreter.starts_with("/")) {
    throw Error(ErrorKind::internal, "cannot register " + interpreter + " with binfmt_misc: not an absolute path without ':'");
  }
  // e_ident with any OS ABI, then e_type (executable or shared object: the mask's lowest bit
  // of the type is clear) and e_machine.
  const std::string magic = elf_header(*arch, 2).substr(0, 20);
  std::string mask(20, '\xff');
  mask[7] = '\0';
  mask[arch->elf_data == 1 ? 16 : 17] = '\xfe';
  return std::string(":kbuild-qemu-") + arch->qemu + ":M:0:" + escaped(magic) + ":" + escaped(mask) + ":" +
         interpreter + ":F";
}

Emulation::Emulation(std::vector<std::string> native, EmulationPaths paths)
    : native_(std::move(native)), paths_(std::move(paths)) {}

std::vector<BinfmtHandler> Emulation::read_handlers(std::string& problem) const {
  std::vector<BinfmtHandler> handlers;
  const std::string& dir = paths_.binfmt_misc;
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd || ::faccessat(fd.get(), "status", F_OK, 0) != 0) {
    problem = "binfmt_misc is not mounted at " + dir;
    return handlers;
  }
  try {
    if (read_small_file(dir + "/status").starts_with("disabled")) {
      problem = "binfmt_misc is disabled: enable it with echo 1 > " + dir + "/status";
    }
    for (const DirEntry& entry : list_directory(fd.get(), dir)) {
      if (entry.name == "register" || entry.name == "status") continue;
      try {
        handlers.push_back(parse_binfmt_handler(entry.name, read_small_file(dir + "/" + entry.name)));
      } catch (const Error&) {
        // Removed while being read, or no handler kbuild understands: it runs nothing of ours.
      }
    }
  } catch (const Error& e) {
    problem = std::string("reading binfmt_misc: ") + e.what();
  }
  return handlers;
}

PlatformSupport Emulation::support_of(const std::string& platform, const std::vector<BinfmtHandler>& handlers,
                                      const std::string& binfmt_problem, bool install_allowed) const {
  PlatformSupport out{platform, PlatformSupport::State::native, ""};
  if (std::find(native_.begin(), native_.end(), platform) != native_.end()) return out;
  const Architecture* arch = architecture_of(platform);
  const std::string emulator = emulator_path(paths_, *arch);
  const bool installed = ::access(emulator.c_str(), X_OK) == 0;
  const BinfmtHandler* best = best_handler(*arch, handlers);
  out.state = PlatformSupport::State::unusable;
  if (!binfmt_problem.empty()) {
    if (!installed) out.state = PlatformSupport::State::missing;
    out.detail = binfmt_problem;
  } else if (best && best->enabled && best->fix_binary()) {
    out.state = PlatformSupport::State::emulated;
    out.detail = "binfmt_misc handler " + best->name + " (" + best->interpreter + ")";
  } else if (best && best->enabled) {
    out.detail = "the binfmt_misc handler " + best->name + " has no F (fix-binary) flag, so its interpreter " +
                 best->interpreter + " would have to be inside the build's root: register it with the F flag";
    if (installed) {
      out.detail += install_allowed ? "; kbuildd registers " + emulator + " so when it starts or reloads"
                                    : ", or let kbuildd register " + emulator +
                                          " so with \"features\": {\"binfmt-install\": true} in daemon.json";
    }
  } else if (best) {
    out.detail = "the binfmt_misc handler " + best->name + " is disabled: enable it with echo 1 > " +
                 paths_.binfmt_misc + "/" + best->name;
  } else if (installed) {
    out.detail = emulator + " is not registered with binfmt_misc: " +
                 (install_allowed ? std::string("kbuildd registers it when it starts or reloads (see its log)")
                                  : "register it (update-binfmts --enable qemu-" + std::string(arch->qemu) +
                                        "), or let kbuildd register it with \"features\": {\"binfmt-install\": "
                                        "true} in daemon.json");
  } else {
    out.state = PlatformSupport::State::missing;
    out.detail = install_allowed ? "install qemu-user-static and reload kbuildd, which registers it"
                                 : "install qemu-user-static, or let kbuildd register it with \"features\": "
                                   "{\"binfmt-install\": true} in daemon.json";
  }
  return out;
}

std::vector<PlatformSupport> Emulation::support(bool install_allowed) const {
  std::string problem;
  const std::vector<BinfmtHandler> handlers = read_handlers(problem);
  std::vector<std::string> order = native_;
  for (const Architecture& arch : kArchitectures) {
    if (std::string_view(arch.platform) == "linux/arm") {
      order.insert(order.end(), std::begin(kArmVariants), std::end(kArmVariants));
    } else {
      order.push_back(arch.platform);
    }
  }
  std::vector<PlatformSupport> out;
  for (const std::string& platform : order) {
    bool listed = std::any_of(out.begin(), out.end(), [&](const auto& s) { return s.platform == platform; });
    if (!listed) out.push_back(support_of(platform, handlers, problem, install_allowed));
  }
  return out;
}

std::vector<std::string> Emulation::install() const {
  std::string problem;
  const std::vector<BinfmtHandler> handlers = read_handlers(problem);
  if (!problem.empty()) return {"registering qemu-user-static: " + problem};
  std::vector<std::string> done;
  for (const Architecture& arch : kArchitectures) {
    const std::string platform = std::string_view(arch.platform) == "linux/arm" ? kArmVariants[0] : arch.platform;
    const std::string emulator = emulator_path(paths_, arch);
    // Only where steps cannot run the platform yet, no handler of it was disabled on purpose,
    // and its emulator is there. Ours, registered last, goes before a handler without F.
    if (support_of(platform, handlers, problem, true).runnable() || has_disabled_handler(arch, handlers) ||
        ::access(emulator.c_str(), X_OK) != 0) {
      continue;
    }
    try {
      UniqueFd reg(::open((paths_.binfmt_misc + "/register").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
      if (!reg) throw_errno("open", paths_.binfmt_misc + "/register");
      write_all(reg.get(), binfmt_registration(platform, emulator), paths_.binfmt_misc + "/register");
      done.push_back("registered " + emulator + " for " + arch.platform + " as binfmt_misc handler kbuild-qemu-" +
                     arch.qemu);
    } catch (const Error& e) {
      done.push_back("registering " + emulator + " for " + arch.platform + ": " + e.what());
    }
  }
  return done;
}

std::string Emulation::exec_format_hint(std::string_view header, bool install_allowed) const {
  std::string platform = elf_platform(header);
  if (platform.empty()) return {};
  if (platform == "linux/arm") platform = kArmVariants[0];
  std::string problem;
  const std::vector<BinfmtHandler> handlers = read_handlers(problem);
  const PlatformSupport s = support_of(platform, handlers, problem, install_allowed);
  if (s.runnable()) return {};
  return "(this host cannot run " + elf_platform(header) + " programs: " + s.detail + ")";
}

}  // namespace kbuild::sandbox
