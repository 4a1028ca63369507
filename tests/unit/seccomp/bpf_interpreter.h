// A classic BPF interpreter for seccomp programs, so tests can ask a compiled filter for its
// verdict on any system call, architecture and arguments without loading it.
#pragma once

#include <linux/filter.h>
#include <linux/seccomp.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace kbuild::seccomp::testing {

inline uint32_t load_word(const seccomp_data& data, uint32_t offset) {
  if (offset % 4 != 0 || offset + 4 > sizeof data)
    throw std::runtime_error("BPF load outside seccomp_data at " + std::to_string(offset));
  uint32_t word;
  std::memcpy(&word, reinterpret_cast<const char*>(&data) + offset, 4);
  return word;
}

inline uint32_t alu(uint16_t code, uint32_t a, uint32_t operand) {
  switch (BPF_OP(code)) {
    case BPF_ADD: return a + operand;
    case BPF_SUB: return a - operand;
    case BPF_MUL: return a * operand;
    case BPF_DIV: return operand ? a / operand : 0;
    case BPF_OR: return a | operand;
    case BPF_AND: return a & operand;
    case BPF_LSH: return a << (operand & 31);
    case BPF_RSH: return a >> (operand & 31);
    case BPF_NEG: return -a;
  }
  throw std::runtime_error("unsupported BPF ALU op " + std::to_string(code));
}

inline bool condition(uint16_t code, uint32_t a, uint32_t operand) {
  switch (BPF_OP(code)) {
    case BPF_JEQ: return a == operand;
    case BPF_JGT: return a > operand;
    case BPF_JGE: return a >= operand;
    case BPF_JSET: return (a & operand) != 0;
  }
  throw std::runtime_error("unsupported BPF jump " + std::to_string(code));
}

// Runs `program` on `data` and returns the SECCOMP_RET_* value it ends with.
inline uint32_t run_filter(const std::vector<sock_filter>& program, const seccomp_data& data) {
  uint32_t a = 0, x = 0, mem[BPF_MEMWORDS] = {};
  for (size_t pc = 0; pc < program.size(); ++pc) {
    const sock_filter& insn = program[pc];
    uint32_t operand = BPF_SRC(insn.code) == BPF_X ? x : insn.k;
    switch (BPF_CLASS(insn.code)) {
      case BPF_LD:
        if (BPF_MODE(insn.code) == BPF_ABS && BPF_SIZE(insn.code) == BPF_W) a = load_word(data, insn.k);
        else if (BPF_MODE(insn.code) == BPF_IMM) a = insn.k;
        else if (BPF_MODE(insn.code) == BPF_MEM) a = mem[insn.k % BPF_MEMWORDS];
        else throw std::runtime_error("unsupported BPF load " + std::to_string(insn.code));
        break;
      case BPF_LDX:
        x = BPF_MODE(insn.code) == BPF_MEM ? mem[insn.k % BPF_MEMWORDS] : insn.k;
        break;
      case BPF_ST: mem[insn.k % BPF_MEMWORDS] = a; break;
      case BPF_STX: mem[insn.k % BPF_MEMWORDS] = x; break;
      case BPF_ALU: a = alu(insn.code, a, operand); break;
      case BPF_JMP:
        if (BPF_OP(insn.code) == BPF_JA) pc += insn.k;
        else pc += condition(insn.code, a, operand) ? insn.jt : insn.jf;
        break;
      case BPF_RET: return BPF_RVAL(insn.code) == BPF_A ? a : insn.k;
      case BPF_MISC:
        if (BPF_MISCOP(insn.code) == BPF_TAX) x = a;
        else a = x;
        break;
    }
  }
  throw std::runtime_error("BPF program ran off its end");
}

}  // namespace kbuild::seccomp::testing
