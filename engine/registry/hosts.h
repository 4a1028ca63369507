// How to reach a registry host: its endpoints in the order tried (mirrors first for
// docker.io), each with the TLS trust it gets, as Docker's daemon decides them from
// daemon.json and /etc/docker/certs.d.
#pragma once

#include <string>
#include <vector>

#include "engine/registry/http.h"

namespace kbuild::registry {

struct HostsConfig {
  std::vector<std::string> insecure_registries;  // "host[:port]" or a CIDR ("10.0.0.0/8")
  std::vector<std::string> mirrors;              // URLs, for docker.io only
  std::string certs_dir = "/etc/docker/certs.d";
};

struct Endpoint {
  std::string base_url;  // "https://host:port" (no trailing slash)
  TlsConfig tls;
  // Plain HTTP may be tried when TLS cannot be spoken there at all (insecure hosts, and
  // loopback, where Docker allows it without configuration).
  bool plain_http_fallback = false;
  bool mirror = false;
};

// The endpoints for a reference's domain ("docker.io", "localhost:5000", "10.1.2.3:443").
std::vector<Endpoint> endpoints_for(const std::string& domain, const HostsConfig& config);

// Whether `domain` is listed (by name or CIDR) as insecure, or is on loopback.
bool is_insecure(const std::string& domain, const HostsConfig& config);
bool is_loopback(const std::string& domain);

}  // namespace kbuild::registry
