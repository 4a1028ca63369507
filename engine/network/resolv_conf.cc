#include "engine/network/resolv_conf.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <vector>

namespace kbuild::network {
namespace {

constexpr std::string_view kBlanks = " \t";

std::vector<std::string_view> words(std::string_view line) {
  std::vector<std::string_view> out;
  size_t at = 0;
  while ((at = line.find_first_not_of(kBlanks, at)) != std::string_view::npos) {
    size_t end = line.find_first_of(kBlanks, at);
    if (end == std::string_view::npos) end = line.size();
    out.push_back(line.substr(at, end - at));
    at = end;
  }
  return out;
}

// Whether a step in its own network namespace can use the nameserver at `address`.
bool usable_from_step(std::string_view address, bool ipv6) {
  std::string text(address);
  in_addr v4{};
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) != 127;
  if (!ipv6 || text.find('%') != std::string::npos) return false;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, text.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_LOOPBACK(&v6)) return false;
  if (IN6_IS_ADDR_V4MAPPED(&v6)) return v6.s6_addr[12] != 127;
  return true;
}

}  // namespace

StepResolvConf step_resolv_conf(std::string_view host, std::string_view forwarder, bool ipv6, const DnsSettings& dns) {
  StepResolvConf out;
  bool kept_any = false;
  size_t start = 0;
  while (start < host.size()) {
    size_t end = host.find('\n', start);
    std::string_view line = host.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    start = end == std::string_view::npos ? host.size() : end + 1;
    std::vector<std::string_view> fields = words(line);
    const std::string_view kind = fields.empty() ? std::string_view() : fields[0];
    if (kind == "nameserver") {
      if (!dns.nameservers.empty() || fields.size() < 2 || !usable_from_step(fields[1], ipv6)) continue;
      kept_any = true;
    }
    if ((kind == "search" || kind == "domain") && !dns.search.empty()) continue;
    if (kind == "options" && !dns.options.empty()) continue;
    out.text.append(line);
    out.text.push_back('\n');
  }
  for (const std::string& address : dns.nameservers) {
    if (!usable_from_step(address, ipv6)) continue;
    out.text += "nameserver " + address + "\n";
    kept_any = true;
  }
  auto joined = [](const std::vector<std::string>& items) {
    std::string text;
    for (const std::string& item : items) text += " " + item;
    return text;
  };
  if (!dns.search.empty()) out.text += "search" + joined(dns.search) + "\n";
  if (!dns.options.empty()) out.text += "options" + joined(dns.options) + "\n";
  if (!kept_any) {
    out.text += "nameserver " + std::string(forwarder) + "\n";
    out.uses_forwarder = true;
  }
  return out;
}

}  // namespace kbuild::network
