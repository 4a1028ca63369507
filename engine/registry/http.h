// The HTTP a registry client needs, behind an interface: libcurl in the daemon, a fake in
// tests. Bodies stream both ways; nothing holds a layer in memory.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kbuild::registry {

// Header names are compared without case; kept lower-cased.
using Headers = std::multimap<std::string, std::string>;

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  // The body, read in pieces until it returns 0; unset: no body. `body_size` is sent as
  // Content-Length when known.
  std::function<size_t(char* buffer, size_t size)> body;
  std::optional<uint64_t> body_size;
  bool follow_redirects = true;
};

struct HttpResponse {
  long status = 0;
  Headers headers;
  std::string effective_url;
  // The first value of a header (lower-case name), or "".
  std::string header(std::string_view name) const;
};

// Where a response body goes: called with each piece; throwing stops the transfer.
using BodySink = std::function<void(std::string_view data)>;

// What the transport knows of a host: TLS trust and whether plain HTTP or an unverified
// certificate is acceptable.
struct TlsConfig {
  std::vector<std::string> ca_files;  // PEM files trusted besides the system's
  std::string client_cert, client_key;
  bool verify = true;
  std::string certs_dir;  // where the host's CA would go, for the message when it is missing
};

class HttpTransport {
 public:
  virtual ~HttpTransport() = default;
  // Sends the request; the body goes to `sink` (only for 2xx responses; other bodies are kept,
  // up to a bound, in `error_body`). Throws kbuild::Error for a failure to connect, a TLS
  // failure or a timeout, naming the host.
  virtual HttpResponse send(const HttpRequest& request, const TlsConfig& tls, const BodySink& sink,
                            std::string* error_body = nullptr) = 0;
};

// The daemon's own proxies (daemon.json "proxies"); its environment is never read for them.
struct ProxyConfig {
  std::string http_proxy, https_proxy;
  std::string no_proxy;  // comma-separated hosts, as curl and Go take it
};

// libcurl with OpenSSL. `cancel` is polled while transfers run (true stops them).
std::unique_ptr<HttpTransport> make_curl_transport(std::function<bool()> canceled = {}, ProxyConfig proxies = {});

}  // namespace kbuild::registry
