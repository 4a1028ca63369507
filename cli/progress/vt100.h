// The small terminal emulator BuildKit's tty display pipes a running step's output through
// (tonistiigi/vt100), so that " => => # " shows the last screen of it, progress bars and all.
// It reproduces that emulator's behaviour, quirks included: raw mode, no tabs, scrolling only
// when a character is put below the last line, CSI arguments parsed strictly.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kbuild::progress {

class Vt100 {
 public:
  // Both dimensions must be positive.
  Vt100(int height, int width);

  void write(std::string_view bytes);
  // Never below 1 row and 6 columns; content is cut or padded, the cursor is left alone.
  void resize(int height, int width);
  // Rows that hold anything but spaces.
  int used_height() const;

  int height() const { return height_; }
  int width() const { return width_; }
  // Row `y` as UTF-8, trailing spaces included.
  std::string row(int y) const;
  bool row_empty(int y) const;

 private:
  struct Cursor {
    int y = 0;
    int x = 0;
  };

  void put(char32_t r);
  void scroll_if_needed();
  void control(char32_t r);
  void escape(char32_t command, std::string_view args);
  void home(int y1, int x1);
  void erase_region(int y1, int x1, int y2, int x2);
  void clear(int y, int x);

  int height_;
  int width_;
  std::vector<std::u32string> content_;
  Cursor cursor_;
  Cursor saved_;
  std::string unparsed_;
};

}  // namespace kbuild::progress
