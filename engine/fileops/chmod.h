// COPY/ADD --chmod: octal ("755", "4755") or, since Dockerfile 1.14, symbolic as chmod(1)
// ("+x", "go-w", "u=rwX,go=rX"), parsed and applied as BuildKit does (its frontend check plus
// tonistiigi/dchapes-mode, a port of BSD setmode(3)).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::fileops {

class Chmod {
 public:
  // Throws kbuild::Error (kind user) with BuildKit's text: "invalid chmod parameter: '64a'. it
  // should be octal string and between 0 and 07777" for anything starting with a digit that is
  // not such a number, "invalid syntax" for a bad symbolic mode.
  static Chmod parse(std::string_view text);

  // An octal value (as opposed to a symbolic one).
  bool is_octal() const { return octal_.has_value(); }
  std::optional<uint32_t> octal() const { return octal_; }

  // The permission bits (07777) a copied entry gets, from its source `st_mode` (type and bits).
  mode_t apply(mode_t st_mode) const;

  // The mode of the directories a copy creates on the way to its destination (fsutil's
  // MkdirAll): an octal value's rwx bits, else 0755 as without --chmod.
  mode_t created_dir_mode() const { return octal_ ? (*octal_ & 0777) : 0755; }

  const std::string& text() const { return text_; }

 private:
  struct Command {
    char cmd = 0;
    uint8_t cmd2 = 0;
    uint16_t bits = 0;
  };
  void add_command(char op, uint16_t who, uint16_t oparg, uint16_t mask);
  void compress();

  std::string text_;
  std::optional<uint32_t> octal_;
  std::vector<Command> commands_;
};

}  // namespace kbuild::fileops
