// The /etc/resolv.conf a step on the build's own network gets, made from the host's.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace kbuild::network {

struct StepResolvConf {
  std::string text;
  bool uses_forwarder = false;  // the step asks the user-mode stack's DNS forwarder
};

// daemon.json's dns, dns-search and dns-opts: each, when given, replaces the host's
// nameserver, search (and domain), or options lines, as in dockerd's containers.
struct DnsSettings {
  std::vector<std::string> nameservers;
  std::vector<std::string> search;
  std::vector<std::string> options;
};

// Docker's rule for containers on a bridge (libnetwork's resolvconf.FilterResolvDNS): the
// host's nameservers on loopback (systemd-resolved's 127.0.0.53, a local dnsmasq, ::1) cannot
// be reached from another network namespace and are dropped, as are IPv6 ones when the
// namespace has no IPv6 and link-local ones with a zone (the step's interfaces are not the
// host's). Where Docker then falls back to public resolvers, the step asks `forwarder`, the
// stack's DNS forwarder, which queries the host's resolvers from the host. Every other line
// (search, options, comments) is kept as it is, unless `dns` replaces it; its nameservers are
// filtered by the same rule.
StepResolvConf step_resolv_conf(std::string_view host, std::string_view forwarder, bool ipv6,
                                const DnsSettings& dns = {});

}  // namespace kbuild::network
