// The caller's registry credentials, read from its docker config as docker does
// ($DOCKER_CONFIG/config.json, else ~/.docker/config.json), and handed to the daemon only for
// the registries a call needs. The daemon never reads a home directory.
#pragma once

#include <functional>
#include <map>
#include <set>
#include <string>

namespace kbuild::cli {

// The config.json to read: $DOCKER_CONFIG/config.json, else $HOME/.docker/config.json.
std::string docker_config_path();

// The registry a config.json "auths" key names: "https://index.docker.io/v1/" is docker.io,
// "https://host:5000/v2/" is host:5000.
std::string registry_domain_of_key(const std::string& key);

// Runs a credential helper ("desktop" → docker-credential-desktop get) for one server; returns
// the base64 "user:password" it gives, or "" when it has none.
using CredentialHelper = std::function<std::string(const std::string& helper, const std::string& server)>;

// The base64 "user:password" for each of `domains` that `config_text` (config.json) has, by
// domain: from "auths", else from the domain's "credHelpers" entry or the "credsStore", as
// docker resolves them. Throws kbuild::Error (user) naming `source` for JSON that does not parse.
std::map<std::string, std::string> credentials_for(const std::string& config_text, const std::string& source,
                                                   const std::set<std::string>& domains,
                                                   const CredentialHelper& helper = {});

// docker-credential-HELPER get, run as the caller with the server on stdin.
std::string run_credential_helper(const std::string& helper, const std::string& server);

// config.json's text with `domain`'s "auths" entry set to `auth` (base64 "user:password"), or
// removed when `auth` is empty (logout); `removed` says whether there was one. When a credential
// helper keeps the credentials, the entry is left empty, as docker writes it.
std::string with_login(const std::string& config_text, const std::string& source, const std::string& domain,
                       const std::string& auth, bool* removed = nullptr, bool helper_keeps_it = false);

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
std::map<std::string, std::string> caller_credentials(const std::set<std::string>& domains);

}  // namespace kbuild::cli
