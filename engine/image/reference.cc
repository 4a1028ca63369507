#include "engine/image/reference.h"

#include <algorithm>
#include <cctype>

#include "common/error.h"

namespace kbuild::image {
namespace {

constexpr std::string_view kDefaultDomain = "docker.io";
constexpr size_t kMaxNameLength = 255;

[[noreturn]] void invalid(const std::string& why = {}) {
  throw Error(ErrorKind::user, "invalid reference format" + (why.empty() ? "" : ": " + why));
}

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }
bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

// pathComponent: [a-z0-9]+ joined by ".", "_", "__" or runs of "-".
bool valid_path_component(std::string_view s) {
  size_t i = 0;
  auto alnum_run = [&] {
    size_t start = i;
    while (i < s.size() && is_lower_alnum(s[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return false;
  while (i < s.size()) {
    if (s[i] == '.' || s[i] == '_') {
      ++i;
      if (s[i - 1] == '_' && i < s.size() && s[i] == '_') ++i;  // "__"
    } else if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// domainAndPort: dot-separated labels of letters, digits and inner hyphens, or an IPv6 address
// in brackets; then an optional :port.
bool valid_domain(std::string_view s) {
  std::string_view host = s;
  if (size_t colon = s.rfind(':'); colon != std::string_view::npos && s.find(']', colon) == std::string_view::npos) {
    std::string_view port = s.substr(colon + 1);
    if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
    host = s.substr(0, colon);
  }
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    std::string_view inner = host.substr(1, host.size() - 2);
    return std::all_of(inner.begin(), inner.end(),
                       [](char c) { return std::isxdigit(static_cast<unsigned char>(c)) || c == ':'; });
  }
  size_t start = 0;
  while (true) {
    size_t dot = host.find('.', start);
    std::string_view label = host.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || !is_alnum(label.front()) || !is_alnum(label.back())) return false;
    if (!std::all_of(label.begin(), label.end(), [](char c) { return is_alnum(c) || c == '-'; })) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// tag: [\w][\w.-]{0,127}
bool valid_tag(std::string_view s) {
  auto word = [](char c) { return is_alnum(c) || c == '_'; };
  if (s.empty() || s.size() > 128 || !word(s.front())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return word(c) || c == '.' || c == '-'; });
}

// algorithm:hex, with the algorithms and lengths go-digest knows.
void check_digest(std::string_view s) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos || colon == 0) throw Error(ErrorKind::user, "invalid checksum digest format");
  std::string_view algorithm = s.substr(0, colon), hex = s.substr(colon + 1);
  size_t length = algorithm == "sha256" ? 64 : algorithm == "sha384" ? 96 : algorithm == "sha512" ? 128 : 0;
  if (length == 0) throw Error(ErrorKind::user, "unsupported digest algorithm");
  if (!std::all_of(hex.begin(), hex.end(), is_hex)) throw Error(ErrorKind::user, "invalid checksum digest format");
  if (hex.size() != length) throw Error(ErrorKind::user, "invalid checksum digest length");
}

}  // namespace

std::string Reference::name() const { return domain + "/" + path; }

std::string Reference::str() const {
  std::string out = name();
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

std::string Reference::familiar() const {
  std::string out = name();
  if (domain == kDefaultDomain) {
    out = path;
    if (out.starts_with("library/") && out.find('/', 8) == std::string::npos) out = out.substr(8);
  }
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

Reference parse_reference(std::string_view text) {
  if (text.size() == 64 && std::all_of(text.begin(), text.end(), is_hex)) {
    throw Error(ErrorKind::user,
                "invalid repository name (" + std::string(text) + "), cannot specify 64-byte hexadecimal strings");
  }
  Reference r;
  std::string_view name = text;
  if (size_t at = name.find('@'); at != std::string_view::npos) {
    r.digest = name.substr(at + 1);
    name = name.substr(0, at);
    check_digest(r.digest);
  }
  size_t last_slash = name.rfind('/');
  if (size_t colon = name.rfind(':');
      colon != std::string_view::npos && (last_slash == std::string_view::npos || colon > last_slash)) {
    r.tag = name.substr(colon + 1);
    name = name.substr(0, colon);
    if (!valid_tag(r.tag)) invalid();
  }
  // splitDockerDomain: the first component names a registry when it has a dot, a port or an
  // upper-case letter, or is "localhost".
  size_t slash = name.find('/');
  std::string_view first = name.substr(0, slash);
  bool upper = std::any_of(first.begin(), first.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
  if (slash != std::string_view::npos &&
      (first.find_first_of(".:") != std::string_view::npos || first == "localhost" || upper)) {
    r.domain = first;
    r.path = name.substr(slash + 1);
  } else {
    r.domain = kDefaultDomain;
    r.path = name;
  }
  if (r.domain == "index.docker.io") r.domain = kDefaultDomain;
  if (r.domain == kDefaultDomain && r.path.find('/') == std::string::npos) r.path = "library/" + r.path;
  if (std::any_of(r.path.begin(), r.path.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    invalid("repository name (" + r.path + ") must be lowercase");
  }
  if (r.path.empty()) invalid();
  if (!valid_domain(r.domain)) invalid();
  for (size_t start = 0;;) {
    size_t next = r.path.find('/', start);
    if (!valid_path_component(std::string_view(r.path).substr(start, next - start))) invalid();
    if (next == std::string::npos) break;
    start = next + 1;
  }
  if (r.name().size() > kMaxNameLength) {
    throw Error(ErrorKind::user, "repository name must not be more than 255 characters");
  }
  if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
  return r;
}

std::string normalize_reference(std::string_view text) { return parse_reference(text).str(); }

std::string familiar_reference(std::string_view text) { return parse_reference(text).familiar(); }

}  // namespace kbuild::image
