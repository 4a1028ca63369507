#include "engine/dockerfile/json_array.h"

#include <cmath>
#include <cstdlib>

#include "common/go_text.h"

namespace kbuild::dockerfile::parsing {
namespace {

class JsonArrayReader {
 public:
  explicit JsonArrayReader(std::string_view text) : s_(text) {}

  JsonOutcome read(std::vector<std::string>& items) {
    bool all_strings = true;
    skip_ws();
    if (!consume('[')) return JsonOutcome::invalid;
    skip_ws();
    if (!consume(']')) {
      while (true) {
        skip_ws();
        if (peek() == '"') {
          std::string item;
          if (!read_string(&item)) return JsonOutcome::invalid;
          items.push_back(std::move(item));
        } else {
          all_strings = false;
          if (!skip_value()) return JsonOutcome::invalid;
        }
        skip_ws();
        if (consume(']')) break;
        if (!consume(',')) return JsonOutcome::invalid;
      }
    }
    skip_ws();
    if (pos_ != s_.size()) return JsonOutcome::invalid;
    if (range_error_) return JsonOutcome::invalid;
    return all_strings ? JsonOutcome::strings : JsonOutcome::non_string;
  }

 private:
  // encoding/json's scanner refuses nesting deeper than this.
  static constexpr size_t kMaxDepth = 10000;

  int peek() const { return pos_ < s_.size() ? static_cast<unsigned char>(s_[pos_]) : -1; }
  bool consume(char c) {
    if (peek() != static_cast<unsigned char>(c)) return false;
    ++pos_;
    return true;
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }

  static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  // Four hex digits at pos, or -1.
  int32_t hex4(size_t pos) const {
    if (pos + 4 > s_.size()) return -1;
    int32_t v = 0;
    for (size_t i = pos; i < pos + 4; ++i) {
      int h = hex_value(s_[i]);
      if (h < 0) return -1;
      v = v * 16 + h;
    }
    return v;
  }

  // A string at pos_ ('"'), decoded into out when out is not null.
  bool read_string(std::string* out) {
    ++pos_;
    while (pos_ < s_.size()) {
      unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (pos_ + 1 >= s_.size()) return false;
        char e = s_[pos_ + 1];
        pos_ += 2;
        char simple = 0;
        switch (e) {
          case '"': simple = '"'; break;
          case '\\': simple = '\\'; break;
          case '/': simple = '/'; break;
          case 'b': simple = '\b'; break;
          case 'f': simple = '\f'; break;
          case 'n': simple = '\n'; break;
          case 'r': simple = '\r'; break;
          case 't': simple = '\t'; break;
          case 'u': break;
          default: return false;
        }
        if (simple != 0) {
          if (out) *out += simple;
          continue;
        }
        int32_t r = hex4(pos_);
        if (r < 0) return false;
        pos_ += 4;
        if (r >= 0xD800 && r < 0xE000) {
          // A surrogate pair makes one character; a lone surrogate becomes U+FFFD.
          int32_t r2 = pos_ + 1 < s_.size() && s_[pos_] == '\\' && s_[pos_ + 1] == 'u' ? hex4(pos_ + 2) : -1;
          if (r < 0xDC00 && r2 >= 0xDC00 && r2 < 0xE000) {
            r = 0x10000 + ((r - 0xD800) << 10) + (r2 - 0xDC00);
            pos_ += 6;
          } else {
            r = kRuneError;
          }
        }
        if (out) append_utf8(*out, static_cast<char32_t>(r));
        continue;
      }
      if (c < 0x80) {
        if (out) *out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      DecodedRune r = decode_rune(s_, pos_);
      if (out) {
        if (r.value == kRuneError && r.width == 1) {
          append_utf8(*out, kRuneError);
        } else {
          out->append(s_.substr(pos_, r.width));
        }
      }
      pos_ += r.width;
    }
    return false;
  }

  bool read_literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  bool read_number() {
    size_t start = pos_;
    consume('-');
    if (consume('0')) {
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++pos_;
    } else {
      return false;
    }
    if (consume('.')) {
      if (!(peek() >= '0' && peek() <= '9')) return false;
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++pos_;
      if (peek() == '+' || peek() == '-') ++pos_;
      if (!(peek() >= '0' && peek() <= '9')) return false;
      while (peek() >= '0' && peek() <= '9') ++pos_;
    }
    // Decoding into any yields a float64; one that overflows is an error, not a syntax error.
    std::string text(s_.substr(start, pos_ - start));
    if (std::isinf(std::strtod(text.c_str(), nullptr))) range_error_ = true;
    return true;
  }

  // Any value, nested ones included, without recursion.
  bool skip_value() {
    std::vector<char> open;  // '[' or '{' of the containers we are in
    while (true) {
      skip_ws();
      // One value starts here.
      int c = peek();
      if (c == '[' || c == '{') {
        ++pos_;
        open.push_back(static_cast<char>(c));
        if (open.size() + 1 > kMaxDepth) return false;  // the outer array is one level
        skip_ws();
        if (consume(c == '[' ? ']' : '}')) {
          open.pop_back();
        } else {
          if (c == '{' && !read_member_key()) return false;
          continue;
        }
      } else if (c == '"') {
        if (!read_string(nullptr)) return false;
      } else if (c == 't') {
        if (!read_literal("true")) return false;
      } else if (c == 'f') {
        if (!read_literal("false")) return false;
      } else if (c == 'n') {
        if (!read_literal("null")) return false;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (!read_number()) return false;
      } else {
        return false;
      }
      // After a value: close containers or move to the next element.
      while (true) {
        if (open.empty()) return true;
        skip_ws();
        if (consume(',')) {
          if (open.back() == '{' && !read_member_key()) return false;
          break;
        }
        if (!consume(open.back() == '[' ? ']' : '}')) return false;
        open.pop_back();
      }
    }
  }

  bool read_member_key() {
    skip_ws();
    if (peek() != '"' || !read_string(nullptr)) return false;
    skip_ws();
    return consume(':');
  }

  std::string_view s_;
  size_t pos_ = 0;
  bool range_error_ = false;
};

}  // namespace

JsonOutcome read_json_array(std::string_view text, std::vector<std::string>& items) {
  return JsonArrayReader(text).read(items);
}

}  // namespace kbuild::dockerfile::parsing
