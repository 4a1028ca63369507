// The caller's registry credentials, read from its docker config as docker does
// ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), and handed to the daemon only for
// the registries a call needs. The daemon never reads a home directory.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>

#include "dbus/value.h"

namespace kbuild::cli {

// The config.json to read: $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json.
std::string docker_config_path();

// The registry a config.json "auths" key names: "https://index.docker.io/v1/" is docker.io,
// "https://host:5000/v2/" is host:5000.
std::string registry_domain_of_key(const std::string& key);

// What the caller's docker config holds for one registry: config.json's "auth" (base64
// "user:password"), its "identitytoken" (an OAuth2 refresh token), or both.
struct RegistryCredential {
  std::string auth;
  std::string identity_token;
  bool empty() const { return auth.empty() && identity_token.empty(); }
  bool operator==(const RegistryCredential&) const = default;
};

// The user name under which docker's credential helpers keep an identity token.
inline constexpr const char* kIdentityTokenUsername = "<token>";

// Runs a credential helper ("desktop" → docker-credential-desktop get) for one server; returns
// what it gives (empty when it has nothing).
using CredentialHelper = std::function<RegistryCredential(const std::string& helper, const std::string& server)>;

// The credentials for each of `domains` that `config_text` (config.json) has, by domain: from
// the domain's "credHelpers" entry or the "credsStore", else from "auths", as docker resolves
// them. Throws kbuild::Error (user) naming `source` for JSON that does not parse.
std::map<std::string, RegistryCredential> credentials_for(const std::string& config_text, const std::string& source,
                                                          const std::set<std::string>& domains,
                                                          const CredentialHelper& helper = {});

// docker-credential-HELPER get, run as the caller with the server on stdin. A helper answers
// Username "<token>" for an identity token, as docker's do.
RegistryCredential run_credential_helper(const std::string& helper, const std::string& server);

// Puts credentials into a call's options as the daemon takes them: "registry-auth" and
// "registry-identity-tokens", each a{ss} by domain, each only when there is one.
void add_registry_credentials(dbus::Options& options, const std::map<std::string, RegistryCredential>& credentials);

// config.json's text with `domain`'s "auths" entry set to `credential` ("auth", and
// "identitytoken" when there is one), or removed when it is empty (logout); `removed` says
// whether there was one. When a credential helper keeps the credentials, the entry is left
// empty, as docker writes it.
std::string with_login(const std::string& config_text, const std::string& source, const std::string& domain,
                       const RegistryCredential& credential, bool* removed = nullptr, bool helper_keeps_it = false);

// The credential helper that keeps `domain`'s credentials ("" for none): its credHelpers entry,
// else the credsStore.
std::string credential_helper_of(const std::string& config_text, const std::string& domain);

// docker-credential-HELPER store / erase, as docker login and logout run them.
void store_in_credential_helper(const std::string& helper, const std::string& server, const std::string& username,
                                const std::string& secret);
void erase_from_credential_helper(const std::string& helper, const std::string& server);

// base64 of "user:password", as config.json's "auth" holds it.
std::string base64_credentials(const std::string& username, const std::string& password);

// The "auths" key docker writes for a domain ("https://index.docker.io/v1/" for docker.io).
std::string auths_key(const std::string& domain);

// Writes config.json (0600, its directory 0700) in place of the old one, whole or not at all.
void write_docker_config(const std::string& path, const std::string& text);

// The same from the caller's own config file (none: no credentials).
std::map<std::string, RegistryCredential> caller_credentials(const std::set<std::string>& domains);

}  // namespace kbuild::cli
