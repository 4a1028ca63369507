#include "engine/registry/auth.h"

#include <cctype>
#include <cstdint>
#include <cstring>

#include "common/error.h"

namespace kbuild::registry {
namespace {

constexpr const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void skip_spaces(std::string_view& text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t' || text.front() == ',')) text.remove_prefix(1);
}

}  // namespace

std::optional<Challenge> parse_challenge(std::string_view header) {
  Challenge challenge;
  size_t space = header.find(' ');
  std::string_view scheme = header.substr(0, space);
  if (scheme.empty()) return std::nullopt;
  for (char c : scheme) challenge.scheme += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view rest = space == std::string_view::npos ? std::string_view() : header.substr(space + 1);
  for (skip_spaces(rest); !rest.empty(); skip_spaces(rest)) {
    size_t eq = rest.find('=');
    if (eq == std::string_view::npos) return std::nullopt;
    std::string key;
    for (char c : rest.substr(0, eq)) {
      if (c != ' ') key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    rest.remove_prefix(eq + 1);
    std::string value;
    if (!rest.empty() && rest.front() == '"') {
      rest.remove_prefix(1);
      while (!rest.empty() && rest.front() != '"') {
        if (rest.front() == '\\' && rest.size() > 1) rest.remove_prefix(1);
        value += rest.front();
        rest.remove_prefix(1);
      }
      if (rest.empty()) return std::nullopt;  // unterminated
      rest.remove_prefix(1);
    } else {
      size_t end = rest.find(',');
      value = std::string(rest.substr(0, end));
      rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
    }
    challenge.parameters[key] = value;
  }
  return challenge;
}

std::string base64_encode(std::string_view data) {
  std::string out;
  size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    uint32_t n = (static_cast<unsigned char>(data[i]) << 16) | (static_cast<unsigned char>(data[i + 1]) << 8) |
                 static_cast<unsigned char>(data[i + 2]);
    for (int shift : {18, 12, 6, 0}) out += kAlphabet[(n >> shift) & 63];
  }
  if (i < data.size()) {
    uint32_t n = static_cast<unsigned char>(data[i]) << 16;
    if (i + 1 < data.size()) n |= static_cast<unsigned char>(data[i + 1]) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < data.size() ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view text) {
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : text) {
    if (c == '=') break;
    const char* at = std::strchr(kAlphabet, c);
    if (!at || c == '\0') throw Error(ErrorKind::user, "invalid base64 in a registry credential");
    bits = (bits << 6) | static_cast<uint32_t>(at - kAlphabet);
    if (++count == 4) {
      out += static_cast<char>((bits >> 16) & 255);
      out += static_cast<char>((bits >> 8) & 255);
      out += static_cast<char>(bits & 255);
      bits = 0;
      count = 0;
    }
  }
  if (count == 2) out += static_cast<char>((bits >> 4) & 255);
  if (count == 3) {
    out += static_cast<char>((bits >> 10) & 255);
    out += static_cast<char>((bits >> 2) & 255);
  }
  return out;
}

Credentials credentials_from_auth(std::string_view auth) {
  std::string decoded = base64_decode(auth);
  size_t colon = decoded.find(':');
  if (colon == std::string::npos) throw Error(ErrorKind::user, "a registry credential is not user:password");
  return Credentials{decoded.substr(0, colon), decoded.substr(colon + 1), ""};
}

std::map<std::string, Credentials> credentials_by_domain(const std::map<std::string, std::string>& auths,
                                                         const std::map<std::string, std::string>& identity_tokens) {
  std::map<std::string, Credentials> out;
  for (const auto& [domain, auth] : auths) {
    try {
      out[domain] = credentials_from_auth(auth);
    } catch (const Error& e) {
      throw e.with_context("credentials for " + domain);
    }
  }
  for (const auto& [domain, token] : identity_tokens) {
    if (!token.empty()) out[domain].identity_token = token;
  }
  return out;
}

std::string form_escape(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else if (c == ' ') {
      out += '+';
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string refresh_token_form(const std::string& refresh_token, const std::string& service,
                               const std::vector<std::string>& scopes) {
  std::string scope;
  for (const std::string& s : scopes) scope += (scope.empty() ? "" : " ") + s;
  return "client_id=" + form_escape(kOAuthClientId) + "&grant_type=refresh_token&refresh_token=" +
         form_escape(refresh_token) + "&scope=" + form_escape(scope) + "&service=" + form_escape(service);
}

}  // namespace kbuild::registry
