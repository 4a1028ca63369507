#include "engine/registry/hosts.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <dirent.h>

#include <algorithm>
#include <cstring>

#include "common/directory.h"
#include "common/unique_fd.h"

namespace kbuild::registry {
namespace {

// "host:port" → "host"; "[::1]:5000" → "::1".
std::string host_part(const std::string& domain) {
  if (domain.starts_with("[")) {
    size_t end = domain.find(']');
    return domain.substr(1, end == std::string::npos ? std::string::npos : end - 1);
  }
  size_t colon = domain.rfind(':');
  if (colon != std::string::npos && domain.find(':') == colon) return domain.substr(0, colon);
  return domain;
}

bool in_cidr(const std::string& host, const std::string& cidr) {
  size_t slash = cidr.find('/');
  if (slash == std::string::npos) return false;
  in_addr address{}, network{};
  if (inet_pton(AF_INET, host.c_str(), &address) != 1) return false;
  if (inet_pton(AF_INET, cidr.substr(0, slash).c_str(), &network) != 1) return false;
  int bits = std::atoi(cidr.c_str() + slash + 1);
  if (bits < 0 || bits > 32) return false;
  uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (ntohl(address.s_addr) & mask) == (ntohl(network.s_addr) & mask);
}

// certs.d/<domain>/: *.crt are CAs, *.cert + *.key a client certificate, as Docker reads them.
TlsConfig tls_from_certs_dir(const std::string& dir) {
  TlsConfig tls;
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return tls;
  std::vector<DirEntry> entries = list_directory(fd.get(), dir);
  std::sort(entries.begin(), entries.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  for (const DirEntry& entry : entries) {
    const std::string& name = entry.name;
    if (name.ends_with(".crt")) tls.ca_files.push_back(dir + "/" + name);
    if (name.ends_with(".cert")) {
      std::string key = name.substr(0, name.size() - 5) + ".key";
      tls.client_cert = dir + "/" + name;
      tls.client_key = dir + "/" + key;
    }
  }
  return tls;
}

}  // namespace

bool is_loopback(const std::string& domain) {
  std::string host = host_part(domain);
  return host == "localhost" || host == "::1" || in_cidr(host, "127.0.0.0/8");
}

bool is_insecure(const std::string& domain, const HostsConfig& config) {
  std::string host = host_part(domain);
  for (const std::string& entry : config.insecure_registries) {
    if (entry == domain || entry == host || in_cidr(host, entry)) return true;
  }
  return false;
}

std::vector<Endpoint> endpoints_for(const std::string& domain, const HostsConfig& config) {
  std::vector<Endpoint> out;
  if (domain == "docker.io") {
    for (std::string mirror : config.mirrors) {
      while (mirror.ends_with("/")) mirror.pop_back();
      Endpoint endpoint;
      endpoint.base_url = mirror;
      endpoint.mirror = true;
      std::string mirror_host = mirror.substr(mirror.find("://") == std::string::npos ? 0 : mirror.find("://") + 3);
      endpoint.tls = tls_from_certs_dir(config.certs_dir + "/" + mirror_host);
      if (is_insecure(mirror_host, config)) endpoint.tls.verify = false;
      out.push_back(std::move(endpoint));
    }
  }
  Endpoint origin;
  std::string host = domain == "docker.io" ? "registry-1.docker.io" : domain;
  origin.base_url = "https://" + host;
  origin.tls = tls_from_certs_dir(config.certs_dir + "/" + domain);
  origin.tls.certs_dir = config.certs_dir + "/" + domain;
  bool insecure = is_insecure(domain, config);
  if (insecure) origin.tls.verify = false;
  origin.plain_http_fallback = insecure || is_loopback(domain);
  out.push_back(std::move(origin));
  return out;
}

}  // namespace kbuild::registry
