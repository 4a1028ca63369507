// Registry authentication as the distribution spec and Docker do it: a 401's WWW-Authenticate
// challenge (Basic, or Bearer with realm, service and scope) answered with the caller's
// credentials, or a token fetched from the realm.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

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

// The caller's credentials by registry domain from what a call carries: base64 "user:password"
// values and identity tokens, each by domain; a domain may have either or both.
std::map<std::string, Credentials> credentials_by_domain(const std::map<std::string, std::string>& auths,
                                                         const std::map<std::string, std::string>& identity_tokens);

// The client_id of OAuth token requests (Docker's distribution client sends "docker").
inline constexpr const char* kOAuthClientId = "kbuild";

// One application/x-www-form-urlencoded value, as Go's url.QueryEscape writes it (space as '+').
std::string form_escape(std::string_view text);

// The body Docker's distribution client POSTs to a bearer realm to trade an identity token (an
// OAuth2 refresh token) for an access token: client_id, grant_type=refresh_token,
// refresh_token, scope (the scopes space-separated) and service, in Go's sorted key order.
std::string refresh_token_form(const std::string& refresh_token, const std::string& service,
                               const std::vector<std::string>& scopes);

}  // namespace kbuild::registry
