// Registry authentication as the distribution spec and Docker do it: a 401's WWW-Authenticate
// challenge (Basic, or Bearer with realm, service and scope) answered with the caller's
// credentials, or a token fetched from the realm.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace kbuild::registry {

// What the caller gave for one registry (from its docker config).
struct Credentials {
  std::string username;
  std::string password;
  std::string identity_token;  // an OAuth refresh token, used instead of the password
};

struct Challenge {
  std::string scheme;  // "basic" or "bearer", lower-cased
  std::map<std::string, std::string> parameters;  // realm, service, scope, ...
};

// Parses one WWW-Authenticate header value; nullopt for a malformed one.
std::optional<Challenge> parse_challenge(std::string_view header);

std::string base64_encode(std::string_view data);
std::string base64_decode(std::string_view text);

// Docker's config.json "auth" value: base64 of "user:password".
Credentials credentials_from_auth(std::string_view auth);

}  // namespace kbuild::registry
