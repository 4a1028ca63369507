#include "engine/fileops/chmod.h"

#include <sys/stat.h>

#include "common/error.h"

namespace kbuild::fileops {
namespace {

// chmod(1)'s bits, as dchapes-mode names them.
constexpr uint16_t kSetUid = 04000;
constexpr uint16_t kSetGid = 02000;
constexpr uint16_t kSticky = 01000;
constexpr uint16_t kRwxUser = 00700;
constexpr uint16_t kReadUser = 00400;
constexpr uint16_t kWriteUser = 00200;
constexpr uint16_t kExecUser = 00100;
constexpr uint16_t kRwxGroup = 00070;
constexpr uint16_t kReadGroup = 00040;
constexpr uint16_t kWriteGroup = 00020;
constexpr uint16_t kExecGroup = 00010;
constexpr uint16_t kRwxOther = 00007;
constexpr uint16_t kReadOther = 00004;
constexpr uint16_t kWriteOther = 00002;
constexpr uint16_t kExecOther = 00001;
constexpr uint16_t kStandardBits = kSetUid | kSetGid | kRwxUser | kRwxGroup | kRwxOther;

constexpr uint8_t kClear = 1 << 0;
constexpr uint8_t kSet = 1 << 1;
constexpr uint8_t kGroupBits = 1 << 2;
constexpr uint8_t kOtherBits = 1 << 3;
constexpr uint8_t kUserBits = 1 << 4;

// mode.ErrSyntax, returned as is by the Dockerfile frontend.
[[noreturn]] void throw_syntax() { throw Error(ErrorKind::user, "invalid syntax"); }

// strconv.ParseUint(text, 8, 32).
std::optional<uint64_t> parse_octal(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '7') return std::nullopt;
    value = value * 8 + static_cast<uint64_t>(c - '0');
    if (value > 0xFFFFFFFFull) return std::nullopt;
  }
  return value;
}

}  // namespace

Chmod Chmod::parse(std::string_view text) {
  Chmod out;
  out.text_ = std::string(text);
  const std::string non_octal = "invalid chmod parameter: '" + out.text_ +
                                "'. it should be octal string and between 0 and 07777";
  if (const std::optional<uint64_t> value = parse_octal(text)) {
    if (*value > 07777) throw Error(ErrorKind::user, non_octal);
    out.octal_ = static_cast<uint32_t>(*value);
    return out;
  }
  if (text.empty()) throw_syntax();
  // mode.Parse reads a leading digit as an octal number: whatever failed above fails there with
  // a strconv.NumError, which the frontend reports as the octal error.
  if (text[0] >= '0' && text[0] <= '9') throw Error(ErrorKind::user, non_octal);

  // ParseWithUmask(text, 0), clause by clause.
  constexpr uint16_t mask = 0xFFFF;
  std::string_view s = text;
  bool equal_op_done = false;
  for (;;) {
    uint16_t who = 0;
    for (;;) {
      if (s.empty()) throw_syntax();
      const char c = s[0];
      if (c == 'a') {
        who |= kStandardBits;
      } else if (c == 'u') {
        who |= kSetUid | kRwxUser;
      } else if (c == 'g') {
        who |= kSetGid | kRwxGroup;
      } else if (c == 'o') {
        who |= kRwxOther;
      } else {
        break;
      }
      s.remove_prefix(1);
    }
    for (;;) {  // "getop": a clause may chain operators, as in "u+r-w"
      const char op = s[0];
      s.remove_prefix(1);
      if (op == '=') {
        equal_op_done = false;
      } else if (op != '+' && op != '-') {
        throw_syntax();
      }
      who &= static_cast<uint16_t>(~kSticky);
      uint16_t perm = 0;
      uint16_t perm_x = 0;
      for (;; s.remove_prefix(1)) {
        const char b = s.empty() ? '\0' : s[0];
        bool done = false;
        switch (b) {
          case 'r': perm |= kReadUser | kReadGroup | kReadOther; break;
          case 's':
            // "other" alone ignores set-id.
            if (who == 0 || (who & ~kRwxOther) != 0) perm |= kSetUid | kSetGid;
            break;
          case 't':
            if (who == 0 || (who & ~kRwxOther) != 0) {
              who |= kSticky;
              perm |= kSticky;
            }
            break;
          case 'w': perm |= kWriteUser | kWriteGroup | kWriteOther; break;
          case 'X':
            if (op != '-') {
              perm_x = kExecUser | kExecGroup | kExecOther;
            } else {
              perm |= kExecUser | kExecGroup | kExecOther;
            }
            break;
          case 'x': perm |= kExecUser | kExecGroup | kExecOther; break;
          case 'u':
          case 'g':
          case 'o':
            // Copying bits from a class: flush the partial mode first.
            if (perm != 0) {
              out.add_command(op, who, perm, mask);
              perm = 0;
            }
            if (op == '=') equal_op_done = true;
            if (perm_x != 0) {
              out.add_command('X', who, perm_x, mask);
              perm_x = 0;
            }
            out.add_command(b, who, static_cast<uint16_t>(op), mask);
            break;
          default:
            if (perm != 0 || (op == '=' && !equal_op_done)) {
              if (op == '=') equal_op_done = true;
              out.add_command(op, who, perm, mask);
            }
            if (perm_x != 0) out.add_command('X', who, perm_x, mask);
            done = true;
            break;
        }
        if (done) break;
      }
      if (s.empty() || s[0] == ',') break;
    }
    if (s.empty()) break;
    s.remove_prefix(1);  // ','
  }
  out.compress();
  return out;
}

void Chmod::add_command(char op, uint16_t who, uint16_t oparg, uint16_t mask) {
  Command c;
  switch (op) {
    case '=':
      c.cmd = '-';
      c.bits = who != 0 ? who : kStandardBits;
      commands_.push_back(c);
      op = '+';
      [[fallthrough]];
    case '+':
    case '-':
    case 'X':
      c.cmd = op;
      c.bits = who != 0 ? static_cast<uint16_t>(who & oparg) : static_cast<uint16_t>(mask & oparg);
      break;
    case 'u':
    case 'g':
    case 'o':
      c.cmd = op;
      if (who != 0) {
        if (who & kReadUser) c.cmd2 |= kUserBits;
        if (who & kReadGroup) c.cmd2 |= kGroupBits;
        if (who & kReadOther) c.cmd2 |= kOtherBits;
        c.bits = 0xFFFF;
      } else {
        c.cmd2 = kUserBits | kGroupBits | kOtherBits;
        c.bits = mask;
      }
      if (oparg == '+') c.cmd2 |= kSet;
      if (oparg == '-') c.cmd2 |= kClear;
      if (oparg == '=') c.cmd2 |= kSet | kClear;
      break;
    default:
      throw Error(ErrorKind::internal, "chmod: unexpected operator");
  }
  commands_.push_back(c);
}

// Merges runs of '+', '-' and 'X' into at most one of each, as setmode's compress_mode.
void Chmod::compress() {
  std::vector<Command> out;
  for (std::size_t i = 0; i < commands_.size(); ++i) {
    const char first = commands_[i].cmd;
    if (first != '+' && first != '-' && first != 'X') {
      out.push_back(commands_[i]);
      continue;
    }
    uint16_t set_bits = 0, clear_bits = 0, x_bits = 0;
    for (; i < commands_.size(); ++i) {
      const Command& c = commands_[i];
      if (c.cmd == '-') {
        clear_bits |= c.bits;
        set_bits &= static_cast<uint16_t>(~c.bits);
        x_bits &= static_cast<uint16_t>(~c.bits);
      } else if (c.cmd == '+') {
        set_bits |= c.bits;
        clear_bits &= static_cast<uint16_t>(~c.bits);
        x_bits &= static_cast<uint16_t>(~c.bits);
      } else if (c.cmd == 'X') {
        x_bits |= static_cast<uint16_t>(c.bits & ~set_bits);
      } else {
        --i;
        break;
      }
    }
    if (clear_bits != 0) out.push_back({'-', 0, clear_bits});
    if (set_bits != 0) out.push_back({'+', 0, set_bits});
    if (x_bits != 0) out.push_back({'X', 0, x_bits});
  }
  commands_ = std::move(out);
}

mode_t Chmod::apply(mode_t st_mode) const {
  if (octal_) return *octal_ & 07777;
  const uint16_t old_mode = static_cast<uint16_t>(st_mode & 07777);
  uint16_t mode = old_mode;
  const auto copy_class = [&](const Command& c, uint16_t value) {
    if (c.cmd2 & kClear) {
      const uint16_t clear = (c.cmd2 & kSet) ? kRwxOther : value;
      if (c.cmd2 & kUserBits) mode &= static_cast<uint16_t>(~((clear << 6) & c.bits));
      if (c.cmd2 & kGroupBits) mode &= static_cast<uint16_t>(~((clear << 3) & c.bits));
      if (c.cmd2 & kOtherBits) mode &= static_cast<uint16_t>(~(clear & c.bits));
    }
    if (c.cmd2 & kSet) {
      if (c.cmd2 & kUserBits) mode |= static_cast<uint16_t>((value << 6) & c.bits);
      if (c.cmd2 & kGroupBits) mode |= static_cast<uint16_t>((value << 3) & c.bits);
      if (c.cmd2 & kOtherBits) mode |= static_cast<uint16_t>(value & c.bits);
    }
  };
  for (const Command& c : commands_) {
    switch (c.cmd) {
      case 'u': copy_class(c, static_cast<uint16_t>((mode & kRwxUser) >> 6)); break;
      case 'g': copy_class(c, static_cast<uint16_t>((mode & kRwxGroup) >> 3)); break;
      case 'o': copy_class(c, static_cast<uint16_t>(mode & kRwxOther)); break;
      case '+': mode |= c.bits; break;
      case '-': mode &= static_cast<uint16_t>(~c.bits); break;
      case 'X':
        if ((old_mode & (kExecUser | kExecGroup | kExecOther)) != 0 || S_ISDIR(st_mode)) mode |= c.bits;
        break;
      default: break;
    }
  }
  return mode & 07777;
}

}  // namespace kbuild::fileops
