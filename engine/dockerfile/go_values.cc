#include "engine/dockerfile/go_values.h"

#include <cctype>
#include <cmath>
#include <limits>
#include <regex>

#include "common/error.h"

namespace kbuild::dockerfile {
namespace {

[[noreturn]] void fail(const std::string& message) { throw Error(ErrorKind::user, message); }

bool is_digit(char c) { return c >= '0' && c <= '9'; }

}  // namespace

int64_t parse_go_duration(std::string_view original) {
  const std::string quoted = go_quote(original);
  std::string_view s = original;
  bool negative = false;
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return 0;
  if (s.empty()) fail("time: invalid duration " + quoted);
  long double total = 0;
  while (!s.empty()) {
    if (!(is_digit(s[0]) || s[0] == '.')) fail("time: invalid duration " + quoted);
    size_t i = 0;
    std::string number;
    bool digits_before = false, digits_after = false;
    while (i < s.size() && is_digit(s[i])) number += s[i++], digits_before = true;
    if (i < s.size() && s[i] == '.') {
      number += s[i++];
      while (i < s.size() && is_digit(s[i])) number += s[i++], digits_after = true;
    }
    if (!digits_before && !digits_after) fail("time: invalid duration " + quoted);
    size_t unit_start = i;
    while (i < s.size() && !is_digit(s[i]) && s[i] != '.') ++i;
    std::string_view unit = s.substr(unit_start, i - unit_start);
    if (unit.empty()) fail("time: missing unit in duration " + quoted);
    long double scale;
    if (unit == "ns") scale = 1;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") scale = 1e3;
    else if (unit == "ms") scale = 1e6;
    else if (unit == "s") scale = 1e9;
    else if (unit == "m") scale = 60e9;
    else if (unit == "h") scale = 3600e9;
    else fail("time: unknown unit " + go_quote(unit) + " in duration " + quoted);
    total += std::stold(number) * scale;
    if (total > static_cast<long double>(std::numeric_limits<int64_t>::max())) {
      fail("time: invalid duration " + quoted);
    }
    s.remove_prefix(i);
  }
  int64_t ns = static_cast<int64_t>(total);
  return negative ? -ns : ns;
}

int64_t parse_go_int(std::string_view s, int bits) {
  const std::string prefix = "strconv.ParseInt: parsing " + go_quote(s) + ": ";
  std::string_view digits = s;
  bool negative = false;
  if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
    negative = digits[0] == '-';
    digits.remove_prefix(1);
  }
  if (digits.empty()) fail(prefix + "invalid syntax");
  const long double limit = std::ldexp(1.0L, bits - 1);
  long double value = 0;
  for (char c : digits) {
    if (c == '_' || !is_digit(c)) fail(prefix + "invalid syntax");
    value = value * 10 + (c - '0');
  }
  if (negative ? value > limit : value > limit - 1) fail(prefix + "value out of range");
  return negative ? -static_cast<int64_t>(value) : static_cast<int64_t>(value);
}

std::optional<uint64_t> parse_go_uint(std::string_view s, int base, int bits) {
  if (s.empty()) return std::nullopt;
  const long double limit = std::ldexp(1.0L, bits);
  long double value = 0;
  for (char c : s) {
    int digit;
    if (is_digit(c)) digit = c - '0';
    else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    else return std::nullopt;
    if (digit >= base) return std::nullopt;
    value = value * base + digit;
    if (value >= limit) return std::nullopt;
  }
  return static_cast<uint64_t>(value);
}

std::optional<bool> parse_go_bool(std::string_view s) {
  if (s == "1" || s == "t" || s == "T" || s == "TRUE" || s == "true" || s == "True") return true;
  if (s == "0" || s == "f" || s == "F" || s == "FALSE" || s == "false" || s == "False") return false;
  return std::nullopt;
}

std::optional<int64_t> parse_ram_in_bytes(std::string_view s) {
  static const std::regex size_pattern(R"(^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$)");
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_match(s.begin(), s.end(), m, size_pattern)) return std::nullopt;
  long double value;
  try {
    value = std::stold(m[1].str());
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (m[3].matched) {
    static const std::string units = "kmgtp";
    size_t power = units.find(static_cast<char>(std::tolower(m[3].str()[0]))) + 1;
    value *= std::pow(1024.0L, static_cast<long double>(power));
  }
  if (value > static_cast<long double>(std::numeric_limits<int64_t>::max())) return std::nullopt;
  return static_cast<int64_t>(value);
}

std::vector<std::string> parse_csv_fields(std::string_view line) {
  std::vector<std::string> fields;
  size_t i = 0;
  while (true) {
    std::string field;
    if (i < line.size() && line[i] == '"') {
      ++i;
      while (true) {
        if (i >= line.size()) fail("extraneous or missing \" in quoted-field");
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += line[i++];
      }
      if (i < line.size() && line[i] != ',') fail("extraneous or missing \" in quoted-field");
    } else {
      while (i < line.size() && line[i] != ',') {
        if (line[i] == '"') fail("bare \" in non-quoted-field");
        field += line[i++];
      }
    }
    fields.push_back(std::move(field));
    if (i >= line.size()) break;
    ++i;  // the comma
  }
  return fields;
}

}  // namespace kbuild::dockerfile
