#include "engine/image/reference.h"

#include <locale.h>
#include <wctype.h>

#include <algorithm>
#include <optional>

#include "common/error.h"
#include "common/go_text.h"

// The grammar and the order of the checks are distribution/reference's (normalize.go,
// reference.go, regexp.go) and go-digest's, so that the same text gets the same error as from
// docker; the matchers below are hand-written equivalents of its regular expressions.
namespace kbuild::image {
namespace {

constexpr std::string_view kDefaultDomain = "docker.io";
constexpr std::string_view kLegacyDefaultDomain = "index.docker.io";
constexpr std::string_view kOfficialPrefix = "library/";
constexpr size_t kMaxPathLength = 255;  // RepositoryNameTotalLengthMax, checked on the path

[[noreturn]] void refuse(const std::string& message) { throw Error(ErrorKind::user, message); }

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alnum(char c) { return is_alpha(c) || is_digit(c); }
bool is_xdigit(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
bool is_lower_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f'); }
bool is_word(char c) { return is_alnum(c) || c == '_'; }

template <typename Pred>
bool all(std::string_view s, Pred pred) {
  return std::all_of(s.begin(), s.end(), pred);
}

// identifier: [a-f0-9]{64}, an image ID.
bool is_identifier(std::string_view s) { return s.size() == 64 && all(s, is_lower_hex); }

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
    if (s[i] == '.') {
      ++i;
    } else if (s[i] == '_') {
      i += i + 1 < s.size() && s[i + 1] == '_' ? 2 : 1;
    } else if (s[i] == '-') {
      while (i < s.size() && s[i] == '-') ++i;
    } else {
      return false;
    }
    if (!alnum_run()) return false;
  }
  return true;
}

// remoteName: pathComponent joined by "/".
bool valid_remote_name(std::string_view s) {
  for (size_t start = 0;;) {
    size_t slash = s.find('/', start);
    if (!valid_path_component(s.substr(start, slash == std::string_view::npos ? slash : slash - start))) return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

// domainAndPort: dot-separated labels of letters, digits and inner hyphens, or an IPv6 address
// in brackets; then an optional :port.
bool valid_domain(std::string_view s) {
  std::string_view host = s, port;
  bool has_port = false;
  if (s.starts_with('[')) {
    size_t close = s.find(']');
    if (close == std::string_view::npos) return false;
    host = s.substr(0, close + 1);
    std::string_view rest = s.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return false;
    has_port = !rest.empty();
    if (has_port) port = rest.substr(1);
    std::string_view inner = host.substr(1, host.size() - 2);
    if (inner.empty() || !all(inner, [](char c) { return is_xdigit(c) || c == ':'; })) return false;
  } else {
    if (size_t colon = s.find(':'); colon != std::string_view::npos) {
      host = s.substr(0, colon);
      port = s.substr(colon + 1);
      has_port = true;
    }
    for (size_t start = 0;;) {
      size_t dot = host.find('.', start);
      std::string_view label = host.substr(start, dot == std::string_view::npos ? dot : dot - start);
      if (label.empty() || !is_alnum(label.front()) || !is_alnum(label.back())) return false;
      if (!all(label, [](char c) { return is_alnum(c) || c == '-'; })) return false;
      if (dot == std::string_view::npos) break;
      start = dot + 1;
    }
  }
  return !has_port || (!port.empty() && all(port, is_digit));
}

// tag: [\w][\w.-]{0,127}
bool valid_tag(std::string_view s) {
  if (s.empty() || s.size() > 128 || !is_word(s.front())) return false;
  return all(s, [](char c) { return is_word(c) || c == '.' || c == '-'; });
}

// digestPat: [A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[[:xdigit:]]{32,}
bool valid_digest_syntax(std::string_view s) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view algorithm = s.substr(0, colon), hex = s.substr(colon + 1);
  for (size_t start = 0;;) {
    size_t separator = algorithm.find_first_of("-_+.", start);
    std::string_view part = algorithm.substr(start, separator == std::string_view::npos ? separator : separator - start);
    if (part.empty() || !is_alpha(part.front()) || !all(part, is_alnum)) return false;
    if (separator == std::string_view::npos) break;
    start = separator + 1;
  }
  return hex.size() >= 32 && all(hex, is_xdigit);
}

// The hex length of the algorithms go-digest has, 0 for others.
size_t digest_hex_length(std::string_view algorithm) {
  return algorithm == "sha256" ? 64 : algorithm == "sha384" ? 96 : algorithm == "sha512" ? 128 : 0;
}

// go-digest's Digest.Validate, after the reference grammar has matched.
void check_digest(std::string_view s) {
  size_t colon = s.find(':');
  std::string_view algorithm = s.substr(0, colon), hex = s.substr(colon + 1);
  size_t length = digest_hex_length(algorithm);
  if (length == 0) {
    // DigestRegexp: [a-z0-9]+([.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+ tells a bad name from an unknown one.
    bool lower = all(algorithm, [](char c) { return is_lower_alnum(c) || c == '.' || c == '+' || c == '_' || c == '-'; });
    refuse(lower ? "unsupported digest algorithm" : "invalid checksum digest format");
  }
  if (hex.size() != length) refuse("invalid checksum digest length");
  if (!all(hex, is_lower_hex)) refuse("invalid checksum digest format");
}

// What ReferenceRegexp captures: the name split as anchoredNameRegexp splits it (the domain
// when the first component can be one), the tag and the digest.
struct Match {
  std::string_view domain, path, tag, digest;
};

std::optional<Match> match_reference(std::string_view s) {
  Match m;
  // Neither a name nor a tag has "@"; a tag has neither ":" nor "/", so a ":" after the last
  // "/" starts it, and one before can only be a port.
  if (size_t at = s.find('@'); at != std::string_view::npos) {
    m.digest = s.substr(at + 1);
    s = s.substr(0, at);
    if (!valid_digest_syntax(m.digest)) return std::nullopt;
  }
  size_t last_slash = s.rfind('/');
  if (size_t colon = s.rfind(':'); colon != std::string_view::npos && (last_slash == std::string_view::npos || colon > last_slash)) {
    m.tag = s.substr(colon + 1);
    s = s.substr(0, colon);
    if (!valid_tag(m.tag)) return std::nullopt;
  }
  if (size_t slash = s.find('/'); slash != std::string_view::npos && valid_domain(s.substr(0, slash)) &&
                                  valid_remote_name(s.substr(slash + 1))) {
    m.domain = s.substr(0, slash);
    m.path = s.substr(slash + 1);
    return m;
  }
  if (!valid_remote_name(s)) return std::nullopt;
  m.path = s;
  return m;
}

// The code point of the UTF-8 sequence at s[i], and its length; nullopt where the bytes are not
// UTF-8 (a stray byte, a truncated, overlong or surrogate sequence).
std::optional<std::pair<wint_t, size_t>> decode_utf8(std::string_view s, size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  size_t length = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  if (length == 0 || i + length > s.size()) return std::nullopt;
  auto rune = static_cast<wint_t>(c & (0x7f >> length));
  for (size_t k = 1; k < length; ++k) {
    auto next = static_cast<unsigned char>(s[i + k]);
    if ((next & 0xc0) != 0x80) return std::nullopt;
    rune = (rune << 6) | (next & 0x3f);
  }
  bool overlong = (length == 3 && rune < 0x800) || (length == 4 && rune < 0x10000);
  if (overlong || rune > 0x10ffff || (rune >= 0xd800 && rune <= 0xdfff)) return std::nullopt;
  return std::pair{rune, length};
}

// Go's strings.ToLower(s) != s: an upper-case letter (of any script), or bytes that are not
// UTF-8, which ToLower replaces.
bool changes_when_lowered(std::string_view s) {
  static const locale_t utf8 = ::newlocale(LC_CTYPE_MASK, "C.UTF-8", nullptr);
  for (size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c >= 'A' && c <= 'Z') return true;
      ++i;
      continue;
    }
    auto rune = decode_utf8(s, i);
    if (!rune) return true;
    if (utf8 && ::towlower_l(rune->first, utf8) != rune->first) return true;
    i += rune->second;
  }
  return false;
}

// strings.ToLower(s) as far as the grammar can tell: it matches ASCII only, and the only
// letters outside ASCII that lower to ASCII are the Kelvin sign (k) and the dotted capital I (i).
std::string lower_for_grammar(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s.substr(i, 3) == "\xe2\x84\xaa") {  // U+212A
      out += 'k';
      i += 2;
    } else if (s.substr(i, 2) == "\xc4\xb0") {  // U+0130
      out += 'i';
      i += 1;
    } else {
      out += s[i] >= 'A' && s[i] <= 'Z' ? static_cast<char>(s[i] - 'A' + 'a') : s[i];
    }
  }
  return out;
}

// reference.Parse: the grammar, then the path's length and the digest.
Match parse(std::string_view s) {
  std::optional<Match> m = match_reference(s);
  if (!m) {
    if (s.empty()) refuse("repository name must have at least one component");
    if (match_reference(lower_for_grammar(s))) refuse("repository name must be lowercase");
    refuse("invalid reference format");
  }
  if (m->path.size() > kMaxPathLength) refuse("repository name must not be more than 255 characters");
  if (!m->digest.empty()) check_digest(m->digest);
  return *m;
}

// splitDockerDomain: the first component names a registry when it is "localhost", has a dot,
// a port or an upper-case letter; Docker Hub's names gain "library/".
std::pair<std::string, std::string> split_docker_domain(std::string_view name) {
  std::string domain, remainder;
  size_t slash = name.find('/');
  std::string_view first = name.substr(0, slash);
  if (slash == std::string_view::npos) {
    domain = kDefaultDomain;
    remainder = name;
  } else if (first == "localhost" || first.find_first_of(".:") != std::string_view::npos ||
             std::any_of(first.begin(), first.end(), [](char c) { return c >= 'A' && c <= 'Z'; }) ||
             first == kLegacyDefaultDomain) {
    domain = first == kLegacyDefaultDomain ? kDefaultDomain : first;
    remainder = name.substr(slash + 1);
  } else {
    domain = kDefaultDomain;
    remainder = name;
  }
  if (domain == kDefaultDomain && remainder.find('/') == std::string::npos) remainder.insert(0, kOfficialPrefix);
  return {domain, remainder};
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
    if (out.starts_with(kOfficialPrefix) && out.find('/', kOfficialPrefix.size()) == std::string::npos) {
      out = out.substr(kOfficialPrefix.size());
    }
  }
  if (!tag.empty()) out += ":" + tag;
  if (!digest.empty()) out += "@" + digest;
  return out;
}

Reference parse_reference(std::string_view text) {
  if (is_identifier(text)) {
    refuse("invalid repository name (" + std::string(text) + "), cannot specify 64-byte hexadecimal strings");
  }
  auto [domain, remainder] = split_docker_domain(text);
  std::string_view remote = std::string_view(remainder).substr(0, remainder.find(':'));
  if (changes_when_lowered(remote)) {
    refuse("invalid reference format: repository name (" + std::string(remote) + ") must be lowercase");
  }
  std::string full = domain + "/" + remainder;
  Match m = parse(full);
  Reference r;
  // The domain as splitDockerDomain chose it: the grammar may read one that is no host name
  // ("a_b.c/x") as a path component, but the name is the same text either way.
  size_t suffix = (m.tag.empty() ? 0 : m.tag.size() + 1) + (m.digest.empty() ? 0 : m.digest.size() + 1);
  r.domain = domain;
  r.path = full.substr(domain.size() + 1, full.size() - suffix - domain.size() - 1);
  r.tag = m.tag;
  r.digest = m.digest;
  if (r.tag.empty() && r.digest.empty()) r.tag = "latest";
  return r;
}

std::string normalize_reference(std::string_view text) { return parse_reference(text).str(); }

std::string familiar_reference(std::string_view text) { return parse_reference(text).familiar(); }

void check_image_reference(std::string_view text) {
  if (is_identifier(text)) return;
  // digest.Parse: a known algorithm and its length of lower-case hex.
  size_t colon = text.find(':');
  if (colon != std::string_view::npos) {
    std::string_view hex = text.substr(colon + 1);
    size_t length = digest_hex_length(text.substr(0, colon));
    if (length != 0 && hex.size() == length && all(hex, is_lower_hex)) return;
  }
  parse_reference(text);
}

void check_build_tag(std::string_view text) {
  try {
    parse(text);
    parse_reference(text);
  } catch (const Error& e) {
    throw e.with_context("invalid tag \"" + std::string(text) + "\"");
  }
}

void check_tag_names(std::string_view source, std::string_view target) {
  auto wrap = [](std::string_view name, auto check) {
    try {
      check(name);
    } catch (const Error& e) {
      throw e.with_context("error parsing reference: " + go_quote(name) + " is not a valid repository/tag");
    }
  };
  wrap(source, check_image_reference);
  wrap(target, parse_reference);
  if (!parse_reference(target).digest.empty()) refuse("refusing to create a tag with a digest reference");
}

std::vector<std::string> output_image_names(std::string_view output_type, std::string_view name) {
  if (output_type == "oci" || output_type == "docker") return {std::string(name)};
  if (output_type != "image" && output_type != "registry") return {};
  std::vector<std::string> names;
  for (size_t start = 0; start <= name.size();) {
    size_t comma = std::min(name.find(',', start), name.size());
    if (comma > start) names.emplace_back(name.substr(start, comma - start));
    start = comma + 1;
  }
  return names;
}

}  // namespace kbuild::image
