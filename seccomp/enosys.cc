#include "seccomp/enosys.h"

#include <linux/audit.h>
#include <linux/seccomp.h>
#include <seccomp.h>

#include <cerrno>
#include <cstddef>
#include <map>

#include "common/error.h"

namespace kbuild::seccomp {
namespace {

// x32 system calls arrive as AUDIT_ARCH_X86_64 with this bit set in the number.
constexpr uint32_t kX32SyscallBit = 0x40000000;
constexpr uint32_t kOffsetNr = offsetof(seccomp_data, nr);
constexpr uint32_t kOffsetArch = offsetof(seccomp_data, arch);

// A few instructions with symbolic jump targets, resolved when the prologue is finished.
class Assembler {
 public:
  static constexpr int next = -1;  // fall through to the following instruction

  int label() {
    labels_.push_back(0);
    return static_cast<int>(labels_.size() - 1);
  }
  void place(int label) { labels_[label] = code_.size(); }
  void load(uint32_t offset) { emit(BPF_LD | BPF_W | BPF_ABS, offset); }
  void ret(uint32_t value) { emit(BPF_RET | BPF_K, value); }
  void jump(int target) { emit(BPF_JMP | BPF_JA, 0, target); }
  void jump_if(uint16_t op, uint32_t k, int if_true, int if_false) {
    fixups_.push_back({code_.size(), if_true, if_false, false});
    code_.push_back(BPF_JUMP(BPF_JMP | op | BPF_K, k, 0, 0));
  }

  std::vector<sock_filter> finish() {
    for (const Fixup& f : fixups_) {
      sock_filter& insn = code_[f.at];
      if (f.always) {
        insn.k = distance(f.at, f.if_true);
        continue;
      }
      insn.jt = short_distance(f.at, f.if_true);
      insn.jf = short_distance(f.at, f.if_false);
    }
    return std::move(code_);
  }

 private:
  struct Fixup {
    size_t at;
    int if_true;
    int if_false;
    bool always;
  };

  void emit(uint16_t code, uint32_t k, int target = next) {
    if (target != next) fixups_.push_back({code_.size(), target, next, true});
    code_.push_back(BPF_STMT(code, k));
  }
  uint32_t distance(size_t from, int target) const {
    return target == next ? 0 : static_cast<uint32_t>(labels_[target] - from - 1);
  }
  uint8_t short_distance(size_t from, int target) const {
    uint32_t d = distance(from, target);
    if (d > 255) throw Error(ErrorKind::internal, "seccomp: ENOSYS prologue jump out of range");
    return static_cast<uint8_t>(d);
  }

  std::vector<sock_filter> code_;
  std::vector<size_t> labels_;
  std::vector<Fixup> fixups_;
};

// The limits of one AUDIT_ARCH_* value: x86_64 carries both native and x32 calls.
struct AuditArchLimits {
  uint32_t native = 0;  // 0: no limit, leave the calls to the filter
  uint32_t x32 = 0;
};

std::map<uint32_t, AuditArchLimits> by_audit_arch(const std::vector<ArchLimit>& limits) {
  std::map<uint32_t, AuditArchLimits> out;
  for (const ArchLimit& limit : limits) {
    // libseccomp's tokens are AUDIT_ARCH_* values, except its made-up SCMP_ARCH_X32.
    if (limit.scmp_arch == SCMP_ARCH_X32)
      out[AUDIT_ARCH_X86_64].x32 = limit.max_syscall;
    else
      out[limit.scmp_arch].native = limit.max_syscall;
  }
  return out;
}

// Jumps to `enosys` when the loaded number exceeds `max`, else to `filter`.
void limit_check(Assembler& a, uint32_t max, int enosys, int filter) {
  if (max == 0)
    a.jump(filter);
  else
    a.jump_if(BPF_JGT, max, enosys, filter);
}

void arch_section(Assembler& a, uint32_t audit_arch, const AuditArchLimits& limits, int enosys,
                  int filter) {
  a.load(kOffsetNr);
  if (audit_arch == AUDIT_ARCH_X86_64) {
    int x32 = a.label();
    a.jump_if(BPF_JSET, kX32SyscallBit, x32, Assembler::next);
    limit_check(a, limits.native, enosys, filter);
    a.place(x32);
    limit_check(a, limits.x32, enosys, filter);
    return;
  }
  // s390 multiplexes numbers it cannot encode through setup (0); an unknown one stays 0.
  if (audit_arch == AUDIT_ARCH_S390 || audit_arch == AUDIT_ARCH_S390X)
    a.jump_if(BPF_JEQ, 0, enosys, Assembler::next);
  limit_check(a, limits.native, enosys, filter);
}

}  // namespace

std::vector<sock_filter> prepend_enosys(const std::vector<sock_filter>& program,
                                        const std::vector<ArchLimit>& limits) {
  std::map<uint32_t, AuditArchLimits> arches = by_audit_arch(limits);
  if (arches.empty()) return program;
  Assembler a;
  int enosys = a.label();
  int filter = a.label();
  std::map<uint32_t, int> sections;
  a.load(kOffsetArch);
  for (const auto& [audit_arch, _] : arches) {
    sections[audit_arch] = a.label();
    a.jump_if(BPF_JEQ, audit_arch, sections[audit_arch], Assembler::next);
  }
  a.jump(filter);  // architectures the prologue does not know: the filter's bad-arch action
  for (const auto& [audit_arch, arch_limits] : arches) {
    a.place(sections[audit_arch]);
    arch_section(a, audit_arch, arch_limits, enosys, filter);
  }
  a.place(enosys);
  a.ret(SECCOMP_RET_ERRNO | ENOSYS);
  a.place(filter);
  std::vector<sock_filter> out = a.finish();
  out.insert(out.end(), program.begin(), program.end());
  return out;
}

}  // namespace kbuild::seccomp
