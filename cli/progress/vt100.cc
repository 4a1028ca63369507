#include "cli/progress/vt100.h"

#include "common/go_text.h"
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <limits>
#include <optional>

#include "cli/progress/units.h"

namespace kbuild::progress {

namespace {

constexpr char32_t kEscape = 0x1B;
constexpr char32_t kMonogramCsi = 0x9B;

bool is_control(char32_t r) { return r <= 0x1F || (r >= 0x7F && r <= 0x9F); }


// strconv.ParseInt(s, 10, 0): optional sign, decimal digits, no overflow.
std::optional<int64_t> parse_int(std::string_view s) {
  if (s.empty()) return std::nullopt;
  bool negative = false;
  if (s[0] == '+' || s[0] == '-') {
    negative = s[0] == '-';
    s.remove_prefix(1);
    if (s.empty()) return std::nullopt;
  }
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + (negative ? 1 : 0)) return std::nullopt;
  }
  return negative ? static_cast<int64_t>(0 - v) : static_cast<int64_t>(v);
}

// Escape arguments: ";"-separated integers; nullopt when any is not one.
std::optional<std::vector<int64_t>> parse_args(std::string_view args) {
  std::vector<int64_t> out;
  if (args.empty()) return out;
  while (true) {
    const size_t semi = args.find(';');
    auto v = parse_int(args.substr(0, semi));
    if (!v) return std::nullopt;
    out.push_back(*v);
    if (semi == std::string_view::npos) break;
    args.remove_prefix(semi + 1);
  }
  return out;
}

int clamp_int(int64_t v) {
  return static_cast<int>(std::clamp<int64_t>(v, std::numeric_limits<int>::min() / 2, std::numeric_limits<int>::max() / 2));
}

}  // namespace

Vt100::Vt100(int height, int width)
    : height_(height), width_(width), content_(static_cast<size_t>(height), std::u32string(static_cast<size_t>(width), U' ')) {}

int Vt100::used_height() const {
  int count = 0;
  for (int y = 0; y < height_; ++y)
    if (!row_empty(y)) ++count;
  return count;
}

bool Vt100::row_empty(int y) const {
  return std::all_of(content_[y].begin(), content_[y].end(), [](char32_t r) { return r == U' '; });
}

std::string Vt100::row(int y) const {
  std::string out;
  for (char32_t r : content_[y]) append_utf8(out, r);
  return out;
}

void Vt100::resize(int height, int width) {
  width = std::max(width, 6);
  height = std::max(height, 1);
  if (height > height_) {
    content_.resize(static_cast<size_t>(height), std::u32string(static_cast<size_t>(width_), U' '));
  } else if (height < height_) {
    content_.resize(static_cast<size_t>(height));
  }
  height_ = height;
  if (width != width_) {
    for (auto& row : content_) row.resize(static_cast<size_t>(width), U' ');
    width_ = width;
  }
}

void Vt100::write(std::string_view bytes) {
  std::string data = std::move(unparsed_);
  unparsed_.clear();
  data.append(bytes);
  size_t pos = 0;
  // On a decoding error the emulator stops; a short remainder is kept for the next write (this is
  // how a character split across chunks is meant to survive), a long one is dropped.
  auto stop = [&]() {
    const size_t left = data.size() - pos;
    if (left > 0 && left < 12) unparsed_ = data.substr(pos);
  };
  while (pos < data.size()) {
    const DecodedRune decoded = decode_rune(data, pos);
    if (decoded.invalid()) {
      pos += 1;
      return stop();
    }
    const char32_t r = decoded.value;
    const size_t size = decoded.width;
    if (r != kEscape && r != kMonogramCsi) {
      pos += size;
      if (is_control(r))
        control(r);
      else
        put(r);
      continue;
    }
    // An escape sequence: ESC x, or CSI args final-byte (0x40..0x7E outside double quotes).
    pos += size;
    bool csi = r == kMonogramCsi;
    bool quote = false;
    std::string args;
    for (int i = 0;; ++i) {
      if (pos >= data.size()) return stop();
      const DecodedRune next = decode_rune(data, pos);
      pos += next.width;
      const char32_t c = next.value;
      if (i == 0 && c == U'[') {
        csi = true;
        continue;
      }
      if (!csi) {
        escape(c, "");
        break;
      }
      if (!quote && c >= 64 && c <= 126) {
        escape(c, args);
        break;
      }
      if (c == U'"') quote = !quote;
      append_utf8(args, c);
    }
  }
}

void Vt100::put(char32_t r) {
  scroll_if_needed();
  content_[cursor_.y][cursor_.x] = r;
  if (++cursor_.x >= width_) {
    cursor_.x = 0;
    ++cursor_.y;
  }
}

void Vt100::scroll_if_needed() {
  if (cursor_.x >= width_) {
    cursor_.x = 0;
    ++cursor_.y;
  }
  if (cursor_.y >= height_) {
    std::rotate(content_.begin(), content_.begin() + 1, content_.end());
    content_.back().assign(static_cast<size_t>(width_), U' ');
    cursor_.y = height_ - 1;
  }
}

void Vt100::control(char32_t r) {
  switch (r) {
    case U'\b':
      if (--cursor_.x < 0) {
        if (cursor_.y == 0) {
          cursor_.x = 0;
        } else {
          --cursor_.y;
          cursor_.x = width_ - 1;
        }
      }
      break;
    case U'\n':
      ++cursor_.y;
      cursor_.x = 0;
      break;
    case U'\r':
      cursor_.x = 0;
      break;
    default:
      break;
  }
}

void Vt100::home(int y, int x) {
  cursor_.y = std::clamp(y, 0, height_ - 1);
  cursor_.x = std::clamp(x, 0, width_ - 1);
}

void Vt100::escape(char32_t command, std::string_view text) {
  switch (command) {
    case U's': case U'7': case U'u': case U'8': case U'A': case U'B': case U'C': case U'D':
    case U'K': case U'J': case U'H': case U'f': case U'm':
      break;
    default:
      return;  // unsupported: ignored
  }
  const auto args = parse_args(text);
  if (!args) return;
  const auto& a = *args;
  switch (command) {
    case U's':
    case U'7':
      saved_ = cursor_;
      break;
    case U'u':
    case U'8':
      cursor_ = saved_;
      break;
    case U'A': case U'B': case U'C': case U'D': {
      const int64_t n = a.empty() ? 1 : a[0];
      const int dy = command == U'A' ? -1 : command == U'B' ? 1 : 0;
      const int dx = command == U'D' ? -1 : command == U'C' ? 1 : 0;
      home(clamp_int(cursor_.y + dy * n), clamp_int(cursor_.x + dx * n));
      break;
    }
    case U'H':
    case U'f':
      if (a.size() >= 2)
        home(clamp_int(a[0] - 1), clamp_int(a[1] - 1));
      else
        home(0, 0);
      break;
    case U'K': {
      const int64_t d = a.empty() ? 0 : a[0];
      const int y = cursor_.y, x = cursor_.x;
      if (d == 0) erase_region(y, x, y, width_ - 1);
      else if (d == 1) erase_region(y, 0, y, x);
      else if (d == 2) erase_region(y, 0, y, width_ - 1);
      break;
    }
    case U'J': {
      const int64_t d = a.empty() ? 0 : a[0];
      const int y = cursor_.y;
      if (d == 0) erase_region(y, 0, height_ - 1, width_ - 1);
      else if (d == 1) erase_region(0, 0, y, width_ - 1);
      else if (d == 2) erase_region(0, 0, height_ - 1, width_ - 1);
      break;
    }
    default:  // 'm': colours and styles do not change the text
      break;
  }
}

void Vt100::erase_region(int y1, int x1, int y2, int x2) {
  if (y1 > y2) std::swap(y1, y2);
  if (x1 > x2) std::swap(x1, x2);
  for (int y = y1; y <= y2; ++y)
    for (int x = x1; x <= x2; ++x) clear(y, x);
}

void Vt100::clear(int y, int x) {
  if (y >= height_ || x >= width_ || y < 0 || x < 0) return;
  content_[y][x] = U' ';
}

}  // namespace kbuild::progress
