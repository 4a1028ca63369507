#include "dbus/progress_events.h"

#include <poll.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <limits>
#include <memory>

#include "common/client_stream.h"
#include "common/error.h"
#include "common/go_text.h"
#include "common/syscall.h"

namespace kbuild::progress {

namespace {

constexpr int64_t kNanosPerSecond = 1'000'000'000;

[[noreturn]] void fail(const std::string& message) {
  throw Error(ErrorKind::internal, "progress event: " + message);
}

int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Howard Hinnant's civil-date algorithms, proleptic Gregorian, valid far beyond 1..9999.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = floor_div(y, 400);
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

struct Civil {
  int64_t year;
  unsigned month;
  unsigned day;
};

Civil civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = floor_div(z, 146097);
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2), m, d};
}

bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(int64_t y, unsigned m) {
  static constexpr std::array<unsigned, 12> days = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

// ---- Go-compatible JSON output ----

class GoJsonWriter {
 public:
  std::string out;

  void raw(std::string_view s) { out += s; }
  void string(std::string_view s) { out += go_json_quote(s); }
  void bytes(std::string_view s) {
    out += '"';
    out += base64_encode(s);
    out += '"';
  }
  void time(const Timestamp& t) {
    out += '"';
    out += format_rfc3339_nano(t);
    out += '"';
  }
  void integer(int64_t v) { out += std::to_string(v); }

  // Object fields: key() writes the separator and the name.
  void begin_object() {
    out += '{';
    first_.push_back(true);
  }
  void end_object() {
    out += '}';
    first_.pop_back();
  }
  void key(std::string_view name) {
    if (!first_.back()) out += ',';
    first_.back() = false;
    out += '"';
    out += name;
    out += "\":";
  }

  void generic(const nlohmann::ordered_json& j) {
    switch (j.type()) {
      case nlohmann::ordered_json::value_t::object:
        begin_object();
        for (const auto& [k, v] : j.items()) {
          if (!first_.back()) out += ',';
          first_.back() = false;
          string(k);
          out += ':';
          generic(v);
        }
        end_object();
        break;
      case nlohmann::ordered_json::value_t::array: {
        out += '[';
        bool first = true;
        for (const auto& v : j) {
          if (!first) out += ',';
          first = false;
          generic(v);
        }
        out += ']';
        break;
      }
      case nlohmann::ordered_json::value_t::string:
        string(j.get_ref<const std::string&>());
        break;
      default:
        out += j.dump();
        break;
    }
  }

 private:
  std::vector<bool> first_;
};

void write_time_field(GoJsonWriter& w, std::string_view name, const std::optional<Timestamp>& t) {
  if (!t) return;
  w.key(name);
  w.time(*t);
}

void write_string_field(GoJsonWriter& w, std::string_view name, const std::string& s) {
  if (s.empty()) return;
  w.key(name);
  w.string(s);
}

void write_vertex(GoJsonWriter& w, const Vertex& v) {
  w.begin_object();
  write_string_field(w, "digest", v.digest);
  if (!v.inputs.empty()) {
    w.key("inputs");
    w.raw("[");
    for (size_t i = 0; i < v.inputs.size(); ++i) {
      if (i) w.raw(",");
      w.string(v.inputs[i]);
    }
    w.raw("]");
  }
  write_string_field(w, "name", v.name);
  write_time_field(w, "started", v.started);
  write_time_field(w, "completed", v.completed);
  if (v.cached) {
    w.key("cached");
    w.raw("true");
  }
  write_string_field(w, "error", v.error);
  if (v.progress_group) {
    w.key("progressGroup");
    w.begin_object();
    write_string_field(w, "id", v.progress_group->id);
    write_string_field(w, "name", v.progress_group->name);
    if (v.progress_group->weak) {
      w.key("weak");
      w.raw("true");
    }
    w.end_object();
  }
  w.end_object();
}

void write_status(GoJsonWriter& w, const VertexStatus& s) {
  w.begin_object();
  w.key("id");
  w.string(s.id);
  write_string_field(w, "vertex", s.vertex);
  write_string_field(w, "name", s.name);
  if (s.total != 0) {
    w.key("total");
    w.integer(s.total);
  }
  w.key("current");
  w.integer(s.current);
  w.key("timestamp");
  w.time(s.timestamp);
  write_time_field(w, "started", s.started);
  write_time_field(w, "completed", s.completed);
  w.end_object();
}

void write_log(GoJsonWriter& w, const VertexLog& l) {
  w.begin_object();
  write_string_field(w, "vertex", l.vertex);
  if (l.stream != 0) {
    w.key("stream");
    w.integer(l.stream);
  }
  // []byte without omitempty: "" for empty, as a line that had "data":"" prints back (BuildKit
  // never sends an empty chunk; "data":null reads as empty too).
  w.key("data");
  w.bytes(l.data);
  w.key("timestamp");
  w.time(l.timestamp);
  w.end_object();
}

void write_position(GoJsonWriter& w, std::string_view name, const std::optional<Position>& p) {
  if (!p) return;
  w.key(name);
  w.begin_object();
  if (p->line != 0) {
    w.key("line");
    w.integer(p->line);
  }
  if (p->character != 0) {
    w.key("character");
    w.integer(p->character);
  }
  w.end_object();
}

void write_warning(GoJsonWriter& w, const VertexWarning& v) {
  w.begin_object();
  write_string_field(w, "vertex", v.vertex);
  if (v.level != 0) {
    w.key("level");
    w.integer(v.level);
  }
  if (!v.short_text.empty()) {
    w.key("short");
    w.bytes(v.short_text);
  }
  if (!v.detail.empty()) {
    w.key("detail");
    w.raw("[");
    for (size_t i = 0; i < v.detail.size(); ++i) {
      if (i) w.raw(",");
      w.bytes(v.detail[i]);
    }
    w.raw("]");
  }
  write_string_field(w, "url", v.url);
  if (v.source_info) {
    const SourceInfo& si = *v.source_info;
    w.key("sourceInfo");
    w.begin_object();
    write_string_field(w, "filename", si.filename);
    if (!si.data.empty()) {
      w.key("data");
      w.bytes(si.data);
    }
    if (!si.definition.is_null()) {
      w.key("definition");
      w.generic(si.definition);
    }
    write_string_field(w, "language", si.language);
    w.end_object();
  }
  if (!v.range.empty()) {
    w.key("range");
    w.raw("[");
    for (size_t i = 0; i < v.range.size(); ++i) {
      if (i) w.raw(",");
      w.begin_object();
      write_position(w, "start", v.range[i].start);
      write_position(w, "end", v.range[i].end);
      w.end_object();
    }
    w.raw("]");
  }
  w.end_object();
}

template <typename T, typename F>
void write_array_field(GoJsonWriter& w, std::string_view name, const std::vector<T>& items, F write_item) {
  if (items.empty()) return;
  w.key(name);
  w.raw("[");
  for (size_t i = 0; i < items.size(); ++i) {
    if (i) w.raw(",");
    write_item(w, items[i]);
  }
  w.raw("]");
}

// ---- parsing ----

using Json = nlohmann::ordered_json;

bool equal_fold(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// Calls `apply(value)` for each non-null member whose name matches `name` as Go's decoder
// matches struct fields (case-insensitively; a later member overwrites an earlier one).
template <typename F>
void with_field(const Json& object, std::string_view name, F apply) {
  for (const auto& [k, v] : object.items()) {
    if (!equal_fold(k, name) || v.is_null()) continue;
    apply(v);
  }
}

const Json& expect(const Json& j, Json::value_t type, std::string_view what) {
  if (j.type() != type) fail(std::string(what) + ": unexpected JSON " + j.type_name());
  return j;
}

std::string get_string(const Json& j, std::string_view what) {
  return expect(j, Json::value_t::string, what).get<std::string>();
}

template <typename Int>
Int get_integer(const Json& j, std::string_view what) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<uint64_t>();
    if (v > static_cast<uint64_t>(std::numeric_limits<Int>::max())) fail(std::string(what) + ": number out of range");
    return static_cast<Int>(v);
  }
  if (j.is_number_integer()) {
    const auto v = j.get<int64_t>();
    if (v < std::numeric_limits<Int>::min() || v > std::numeric_limits<Int>::max())
      fail(std::string(what) + ": number out of range");
    return static_cast<Int>(v);
  }
  fail(std::string(what) + ": expected an integer, got " + j.dump());
}

bool get_bool(const Json& j, std::string_view what) {
  return expect(j, Json::value_t::boolean, what).get<bool>();
}

Timestamp get_time(const Json& j, std::string_view what) {
  try {
    return parse_rfc3339(get_string(j, what));
  } catch (const Error& e) {
    fail(std::string(what) + ": " + e.what());
  }
}

std::string get_bytes(const Json& j, std::string_view what) {
  try {
    return base64_decode(get_string(j, what));
  } catch (const Error& e) {
    fail(std::string(what) + ": " + e.what());
  }
}

template <typename T, typename F>
std::vector<T> get_array(const Json& j, std::string_view what, F parse_item) {
  expect(j, Json::value_t::array, what);
  std::vector<T> out;
  for (const auto& item : j) out.push_back(item.is_null() ? T{} : parse_item(item));
  return out;
}

Vertex parse_vertex(const Json& j) {
  expect(j, Json::value_t::object, "vertex");
  Vertex v;
  with_field(j, "digest", [&](const Json& x) { v.digest = get_string(x, "vertex digest"); });
  with_field(j, "inputs", [&](const Json& x) {
    v.inputs = get_array<std::string>(x, "vertex inputs", [](const Json& i) { return get_string(i, "vertex input"); });
  });
  with_field(j, "name", [&](const Json& x) { v.name = get_string(x, "vertex name"); });
  with_field(j, "started", [&](const Json& x) { v.started = get_time(x, "vertex started"); });
  with_field(j, "completed", [&](const Json& x) { v.completed = get_time(x, "vertex completed"); });
  with_field(j, "cached", [&](const Json& x) { v.cached = get_bool(x, "vertex cached"); });
  with_field(j, "error", [&](const Json& x) { v.error = get_string(x, "vertex error"); });
  with_field(j, "progressGroup", [&](const Json& x) {
    expect(x, Json::value_t::object, "progressGroup");
    ProgressGroup g;
    with_field(x, "id", [&](const Json& y) { g.id = get_string(y, "progressGroup id"); });
    with_field(x, "name", [&](const Json& y) { g.name = get_string(y, "progressGroup name"); });
    with_field(x, "weak", [&](const Json& y) { g.weak = get_bool(y, "progressGroup weak"); });
    v.progress_group = g;
  });
  return v;
}

VertexStatus parse_status(const Json& j) {
  expect(j, Json::value_t::object, "status");
  VertexStatus s;
  with_field(j, "id", [&](const Json& x) { s.id = get_string(x, "status id"); });
  with_field(j, "vertex", [&](const Json& x) { s.vertex = get_string(x, "status vertex"); });
  with_field(j, "name", [&](const Json& x) { s.name = get_string(x, "status name"); });
  with_field(j, "total", [&](const Json& x) { s.total = get_integer<int64_t>(x, "status total"); });
  with_field(j, "current", [&](const Json& x) { s.current = get_integer<int64_t>(x, "status current"); });
  with_field(j, "timestamp", [&](const Json& x) { s.timestamp = get_time(x, "status timestamp"); });
  with_field(j, "started", [&](const Json& x) { s.started = get_time(x, "status started"); });
  with_field(j, "completed", [&](const Json& x) { s.completed = get_time(x, "status completed"); });
  return s;
}

VertexLog parse_log(const Json& j) {
  expect(j, Json::value_t::object, "log");
  VertexLog l;
  with_field(j, "vertex", [&](const Json& x) { l.vertex = get_string(x, "log vertex"); });
  with_field(j, "stream", [&](const Json& x) { l.stream = get_integer<int>(x, "log stream"); });
  with_field(j, "data", [&](const Json& x) { l.data = get_bytes(x, "log data"); });
  with_field(j, "timestamp", [&](const Json& x) { l.timestamp = get_time(x, "log timestamp"); });
  return l;
}

std::optional<Position> parse_position(const Json& j) {
  expect(j, Json::value_t::object, "position");
  Position p;
  with_field(j, "line", [&](const Json& x) { p.line = get_integer<int32_t>(x, "position line"); });
  with_field(j, "character", [&](const Json& x) { p.character = get_integer<int32_t>(x, "position character"); });
  return p;
}

VertexWarning parse_warning(const Json& j) {
  expect(j, Json::value_t::object, "warning");
  VertexWarning w;
  with_field(j, "vertex", [&](const Json& x) { w.vertex = get_string(x, "warning vertex"); });
  with_field(j, "level", [&](const Json& x) { w.level = get_integer<int>(x, "warning level"); });
  with_field(j, "short", [&](const Json& x) { w.short_text = get_bytes(x, "warning short"); });
  with_field(j, "detail", [&](const Json& x) {
    w.detail = get_array<std::string>(x, "warning detail", [](const Json& d) { return get_bytes(d, "warning detail"); });
  });
  with_field(j, "url", [&](const Json& x) { w.url = get_string(x, "warning url"); });
  with_field(j, "sourceInfo", [&](const Json& x) {
    expect(x, Json::value_t::object, "sourceInfo");
    SourceInfo si;
    with_field(x, "filename", [&](const Json& y) { si.filename = get_string(y, "sourceInfo filename"); });
    with_field(x, "data", [&](const Json& y) { si.data = get_bytes(y, "sourceInfo data"); });
    with_field(x, "definition", [&](const Json& y) { si.definition = expect(y, Json::value_t::object, "definition"); });
    with_field(x, "language", [&](const Json& y) { si.language = get_string(y, "sourceInfo language"); });
    w.source_info = std::move(si);
  });
  with_field(j, "range", [&](const Json& x) {
    w.range = get_array<Range>(x, "warning range", [](const Json& r) {
      expect(r, Json::value_t::object, "range");
      Range out;
      with_field(r, "start", [&](const Json& p) { out.start = parse_position(p); });
      with_field(r, "end", [&](const Json& p) { out.end = parse_position(p); });
      return out;
    });
  });
  return w;
}

}  // namespace

// ---- Timestamp ----

Timestamp Timestamp::from_unix_nanos(int64_t unix_nanos) {
  Timestamp t;
  t.seconds = floor_div(unix_nanos, kNanosPerSecond);
  t.nanos = static_cast<int32_t>(unix_nanos - t.seconds * kNanosPerSecond);
  t.utc_offset = 0;
  return t;
}

Timestamp Timestamp::now() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  Timestamp t;
  t.seconds = ts.tv_sec;
  t.nanos = static_cast<int32_t>(ts.tv_nsec);
  t.utc_offset = 0;
  return t;
}

int64_t Timestamp::unix_nanos() const {
  // Wraps like Go's int64 arithmetic outside its range.
  return static_cast<int64_t>(static_cast<uint64_t>(seconds) * static_cast<uint64_t>(kNanosPerSecond) +
                              static_cast<uint64_t>(static_cast<int64_t>(nanos)));
}

Timestamp Timestamp::operator+(Duration d) const {
  const int64_t ns = d.count();
  Timestamp t = *this;
  t.seconds += ns / kNanosPerSecond;
  int64_t n = static_cast<int64_t>(t.nanos) + ns % kNanosPerSecond;
  if (n < 0) {
    n += kNanosPerSecond;
    --t.seconds;
  } else if (n >= kNanosPerSecond) {
    n -= kNanosPerSecond;
    ++t.seconds;
  }
  t.nanos = static_cast<int32_t>(n);
  return t;
}

Duration Timestamp::operator-(const Timestamp& other) const {
  const __int128 d = static_cast<__int128>(seconds - other.seconds) * kNanosPerSecond + (nanos - other.nanos);
  if (d > std::numeric_limits<int64_t>::max()) return Duration(std::numeric_limits<int64_t>::max());
  if (d < std::numeric_limits<int64_t>::min()) return Duration(std::numeric_limits<int64_t>::min());
  return Duration(static_cast<int64_t>(d));
}

double seconds_of(Duration d) {
  const int64_t sec = d.count() / kNanosPerSecond;
  const int64_t nsec = d.count() % kNanosPerSecond;
  return static_cast<double>(sec) + static_cast<double>(nsec) / 1e9;
}

std::string format_rfc3339_nano(const Timestamp& t) {
  const int64_t local = t.seconds + t.utc_offset;
  const int64_t days = floor_div(local, 86400);
  const int64_t of_day = local - days * 86400;
  const Civil c = civil_from_days(days);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02uT%02lld:%02lld:%02lld", static_cast<long long>(c.year), c.month,
                c.day, static_cast<long long>(of_day / 3600), static_cast<long long>(of_day / 60 % 60),
                static_cast<long long>(of_day % 60));
  std::string out = buf;
  if (t.nanos != 0) {
    std::snprintf(buf, sizeof buf, ".%09d", t.nanos);
    std::string frac = buf;
    while (frac.back() == '0') frac.pop_back();
    out += frac;
  }
  if (t.utc_offset == 0) {
    out += 'Z';
  } else {
    const int32_t minutes = (t.utc_offset < 0 ? -t.utc_offset : t.utc_offset) / 60;
    std::snprintf(buf, sizeof buf, "%c%02d:%02d", t.utc_offset < 0 ? '-' : '+', minutes / 60, minutes % 60);
    out += buf;
  }
  return out;
}

Timestamp parse_rfc3339(std::string_view s) {
  auto bad = [&]() -> Error { return Error(ErrorKind::internal, "invalid RFC 3339 time \"" + std::string(s) + "\""); };
  size_t pos = 0;
  auto digits = [&](size_t n) -> int64_t {
    if (pos + n > s.size()) throw bad();
    int64_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      const char c = s[pos + i];
      if (c < '0' || c > '9') throw bad();
      v = v * 10 + (c - '0');
    }
    pos += n;
    return v;
  };
  auto literal = [&](char a, char b = 0) {
    if (pos >= s.size() || (s[pos] != a && (b == 0 || s[pos] != b))) throw bad();
    ++pos;
  };
  const int64_t year = digits(4);
  literal('-');
  const auto month = static_cast<unsigned>(digits(2));
  literal('-');
  const auto day = static_cast<unsigned>(digits(2));
  literal('T', 't');
  const int64_t hour = digits(2);
  literal(':');
  const int64_t minute = digits(2);
  literal(':');
  const int64_t second = digits(2);
  if (month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23 || minute > 59 ||
      second > 59)
    throw bad();
  int32_t nanos = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    size_t n = 0;
    int32_t scale = 100'000'000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      if (n < 9) {
        nanos += (s[pos] - '0') * scale;
        scale /= 10;
      }
      ++pos;
      ++n;
    }
    if (n == 0) throw bad();
  }
  int32_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    const bool negative = s[pos] == '-';
    ++pos;
    const int64_t oh = digits(2);
    literal(':');
    const int64_t om = digits(2);
    if (oh > 23 || om > 59) throw bad();
    offset = static_cast<int32_t>((oh * 60 + om) * 60) * (negative ? -1 : 1);
  } else {
    throw bad();
  }
  if (pos != s.size()) throw bad();
  Timestamp t;
  t.seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
  t.nanos = nanos;
  t.utc_offset = offset;
  return t;
}

// ---- JSON ----


std::string base64_encode(std::string_view in) {
  static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= in.size(); i += 3) {
    const uint32_t v = (static_cast<unsigned char>(in[i]) << 16) | (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  if (const size_t rest = in.size() - i; rest > 0) {
    uint32_t v = static_cast<unsigned char>(in[i]) << 16;
    if (rest == 2) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += alphabet[v >> 18];
    out += alphabet[(v >> 12) & 63];
    out += rest == 2 ? alphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  // Go's StdEncoding skips CR and LF.
  std::string clean;
  clean.reserve(in.size());
  for (char c : in)
    if (c != '\r' && c != '\n') clean += c;
  if (clean.size() % 4 != 0) throw Error(ErrorKind::internal, "illegal base64 data: length " + std::to_string(clean.size()));
  std::string out;
  out.reserve(clean.size() / 4 * 3);
  for (size_t i = 0; i < clean.size(); i += 4) {
    const bool last = i + 4 == clean.size();
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = clean[i + k];
      if (c == '=' && last && k >= 2) {
        v[k] = 0;
        ++pad;
        continue;
      }
      if (pad > 0 || (v[k] = value(c)) < 0)
        throw Error(ErrorKind::internal, "illegal base64 data at input byte " + std::to_string(i + k));
    }
    const uint32_t bits = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>(bits >> 16);
    if (pad < 2) out += static_cast<char>((bits >> 8) & 0xFF);
    if (pad < 1) out += static_cast<char>(bits & 0xFF);
  }
  return out;
}

std::string to_json(const SolveStatus& status) {
  GoJsonWriter w;
  w.begin_object();
  write_array_field(w, "vertexes", status.vertexes, write_vertex);
  write_array_field(w, "statuses", status.statuses, write_status);
  write_array_field(w, "logs", status.logs, write_log);
  write_array_field(w, "warnings", status.warnings, write_warning);
  w.end_object();
  return std::move(w.out);
}

SolveStatus parse_solve_status(std::string_view text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    fail(std::string("invalid JSON: ") + e.what());
  }
  expect(j, Json::value_t::object, "solve status");
  SolveStatus s;
  with_field(j, "vertexes", [&](const Json& x) { s.vertexes = get_array<Vertex>(x, "vertexes", parse_vertex); });
  with_field(j, "statuses", [&](const Json& x) { s.statuses = get_array<VertexStatus>(x, "statuses", parse_status); });
  with_field(j, "logs", [&](const Json& x) { s.logs = get_array<VertexLog>(x, "logs", parse_log); });
  with_field(j, "warnings", [&](const Json& x) { s.warnings = get_array<VertexWarning>(x, "warnings", parse_warning); });
  return s;
}

// ---- the pipe ----

namespace {

// The vertex that tells the user where events went missing.
std::string dropped_note(std::uint64_t count, std::uint64_t sequence) {
  SolveStatus status;
  Vertex v;
  v.digest = "kbuild:progress-dropped:" + std::to_string(sequence);
  v.name = "progress: " + std::to_string(count) + " events dropped, the client reads too slowly";
  v.started = v.completed = Timestamp::now();
  status.vertexes.push_back(std::move(v));
  return to_json(status) + "\n";
}

}  // namespace

ProgressWriter::ProgressWriter(UniqueFd fd, ProgressWriterOptions options)
    : fd_(std::move(fd)), options_(options), last_progress_(std::chrono::steady_clock::now()) {
  if (!fd_) {
    closed_ = true;
    return;
  }
  thread_ = std::thread([this] { drain(); });
}

ProgressWriter::~ProgressWriter() { close(); }

bool ProgressWriter::closed() const {
  std::lock_guard lock(mutex_);
  return closed_;
}

std::uint64_t ProgressWriter::dropped() const {
  std::lock_guard lock(mutex_);
  return dropped_;
}

bool ProgressWriter::write(const SolveStatus& status) {
  std::string line = to_json(status);
  line += '\n';
  // Vertex events are few (a handful per step) and what a display needs most: they may use
  // twice the room of logs and counters.
  const bool vertices_only = status.logs.empty() && status.statuses.empty() && status.warnings.empty();
  const std::size_t limit = vertices_only ? 2 * options_.buffer_limit : options_.buffer_limit;
  std::lock_guard lock(mutex_);
  if (closed_ || stopping_) return false;
  if (queued_bytes_ + line.size() > limit) {
    ++dropped_;
    ++gap_;
    return true;
  }
  enqueue_gap_note();
  queued_bytes_ += line.size();
  queue_.push_back(std::move(line));
  wake_.notify_all();
  return true;
}

void ProgressWriter::enqueue_gap_note() {
  if (gap_ == 0) return;
  std::string note = dropped_note(gap_, ++notes_);
  gap_ = 0;
  queued_bytes_ += note.size();
  queue_.push_back(std::move(note));
}

void ProgressWriter::drain() {
  std::unique_ptr<ClientStream> stream;
  try {
    stream = std::make_unique<ClientStream>(fd_.get(), ClientStream::Direction::write, options_.cancel_fd, "progress");
  } catch (const Error&) {
    std::lock_guard lock(mutex_);
    gone_ = true;
    drained_.notify_all();
    return;
  }
  for (;;) {
    std::string line;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return !queue_.empty() || stopping_ || abort_; });
      if (abort_ || queue_.empty()) break;
      line = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= line.size();
      writing_ = true;
    }
    std::string_view rest = line;
    try {
      while (!rest.empty()) {
        // Short waits, so that close() can give up on a reader that stopped reading.
        const std::size_t n = stream->write_some(rest.data(), rest.size(), std::chrono::milliseconds(100));
        std::lock_guard lock(mutex_);
        if (n > 0) last_progress_ = std::chrono::steady_clock::now();
        rest.remove_prefix(n);
        if (abort_) break;
      }
    } catch (const Error&) {
      std::lock_guard lock(mutex_);
      gone_ = true;
      writing_ = false;
      break;
    }
    std::lock_guard lock(mutex_);
    writing_ = false;
    if (queue_.empty()) drained_.notify_all();
  }
  std::lock_guard lock(mutex_);
  gone_ = gone_ || abort_;
  writing_ = false;
  drained_.notify_all();
}

void ProgressWriter::close() {
  std::unique_lock lock(mutex_);
  if (closed_) return;
  stopping_ = true;
  enqueue_gap_note();
  last_progress_ = std::chrono::steady_clock::now();
  wake_.notify_all();
  // Everything still queued goes out while the reader keeps taking bytes; a reader that takes
  // nothing for close_grace is not reading, and the rest is dropped.
  while (!gone_ && (writing_ || !queue_.empty())) {
    drained_.wait_for(lock, std::chrono::milliseconds(50));
    if (std::chrono::steady_clock::now() - last_progress_ > options_.close_grace) break;
  }
  abort_ = true;
  wake_.notify_all();
  lock.unlock();
  if (thread_.joinable()) thread_.join();
  lock.lock();
  closed_ = true;
  fd_.reset();
}

ProgressReader::ProgressReader(UniqueFd fd) : fd_(std::move(fd)) {}

bool ProgressReader::take_line(std::string& line) {
  const size_t nl = buffer_.find('\n');
  if (nl == std::string::npos) return false;
  line.assign(buffer_, 0, nl);
  buffer_.erase(0, nl + 1);
  return true;
}

ProgressReader::Result ProgressReader::read_line(std::string& line, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (take_line(line)) return Result::line;
    if (eof_) {
      if (buffer_.empty()) return Result::end;
      line = std::move(buffer_);
      buffer_.clear();
      return Result::line;
    }
    int wait_ms = -1;
    if (timeout.count() >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      wait_ms = static_cast<int>(std::max<int64_t>(0, left.count()));
    }
    pollfd p{fd_.get(), POLLIN, 0};
    const int ready = ::poll(&p, 1, wait_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      throw_errno("reading progress: poll");
    }
    if (ready == 0) return Result::timeout;
    char chunk[65536];
    const ssize_t n = ::read(fd_.get(), chunk, sizeof chunk);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      throw_errno("reading progress: read");
    }
    if (n == 0)
      eof_ = true;
    else
      buffer_.append(chunk, static_cast<size_t>(n));
  }
}

std::optional<SolveStatus> ProgressReader::next() {
  std::string line;
  while (read_line(line) == Result::line) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    return parse_solve_status(line);
  }
  return std::nullopt;
}

}  // namespace kbuild::progress
