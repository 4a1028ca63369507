#include "engine/registry/client.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/image/oci.h"

namespace kbuild::registry {
namespace {

using nlohmann::json;

const char* const kManifestTypes =
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

std::string url_escape(std::string_view text) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

// The registry's own words from an error body ({"errors":[{"code":..., "message":...}]}).
std::string registry_message(const std::string& body) {
  try {
    json doc = json::parse(body);
    std::string out;
    for (const auto& e : doc.at("errors")) {
      std::string message = e.value("message", "");
      std::string code = e.value("code", "");
      for (char& c : code) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::replace(code.begin(), code.end(), '_', ' ');
      out += (out.empty() ? "" : "; ") + (message.empty() ? code : code + ": " + message);
    }
    return out;
  } catch (const std::exception&) {
    return "";
  }
}

std::string status_text(long status) {
  switch (status) {
    case 400: return "400 Bad Request";
    case 401: return "401 Unauthorized";
    case 403: return "403 Forbidden";
    case 404: return "404 Not Found";
    case 405: return "405 Method Not Allowed";
    case 413: return "413 Request Entity Too Large";
    case 429: return "429 Too Many Requests";
    case 500: return "500 Internal Server Error";
    case 502: return "502 Bad Gateway";
    case 503: return "503 Service Unavailable";
    default: return std::to_string(status);
  }
}

// An OAuth2 error answer's words (RFC 6749 5.2: {"error": ..., "error_description": ...}),
// or the registry's.
std::string oauth_message(const std::string& body) {
  try {
    json doc = json::parse(body);
    if (doc.is_object() && doc.contains("error") && doc["error"].is_string()) {
      std::string description = doc.value("error_description", "");
      return doc["error"].get<std::string>() + (description.empty() ? "" : ": " + description);
    }
  } catch (const std::exception&) {
  }
  return registry_message(body);
}

std::string media_type_of(const HttpResponse& response, const std::string& bytes) {
  std::string type = response.header("content-type");
  type = type.substr(0, type.find(';'));
  while (!type.empty() && type.back() == ' ') type.pop_back();
  if (type.empty() || type == "application/json" || type == "text/plain") {
    try {
      std::string inner = image::document_media_type(bytes);
      if (!inner.empty()) return inner;
    } catch (const Error&) {
    }
  }
  return type;
}

}  // namespace

const char* const kManifestAccept = kManifestTypes;

struct RegistryClient::Host {
  std::string domain;
  bool mirror = false;
  std::string base_url;
  TlsConfig tls;
  std::mutex mutex;
  std::string basic;                           // "Basic ..." once the registry asked for it
  std::map<std::string, std::string> tokens;  // scope → "Bearer ..."
};

RegistryClient::Host& RegistryClient::host(const std::string& domain) {
  std::lock_guard lock(mutex_);
  if (auto it = hosts_by_domain_.find(domain); it != hosts_by_domain_.end()) return *it->second;
  // The first endpoint that answers /v2/ as a registry does (200, or 401 asking for auth).
  std::optional<Error> last;
  for (const Endpoint& endpoint : endpoints_for(domain, hosts_)) {
    if (endpoint.mirror && without_mirrors_.count(domain)) continue;
    std::vector<std::string> bases{endpoint.base_url};
    if (endpoint.plain_http_fallback && endpoint.base_url.starts_with("https://")) {
      bases.push_back("http://" + endpoint.base_url.substr(8));
    }
    for (const std::string& base : bases) {
      HttpRequest ping;
      ping.url = base + "/v2/";
      try {
        HttpResponse response = transport_.send(ping, endpoint.tls, {});
        if (response.status != 200 && response.status != 401) {
          last = Error(ErrorKind::user, domain + ": " + ping.url + " answered " + status_text(response.status) +
                                            ", not as a registry");
          continue;
        }
      } catch (const Error& e) {
        if (e.kind() == ErrorKind::canceled) throw;
        last = e;
        // Plain HTTP only where TLS is not spoken at all (the server answers the handshake
        // with something else, or hangs up on it): a certificate that does not verify, a
        // handshake the server refuses or never answers, is an answer.
        std::string text = e.what();
        bool not_tls = text.find("wrong version number") != std::string::npos ||
                       text.find("SSL_ERROR_SYSCALL") != std::string::npos ||
                       text.find("unexpected eof") != std::string::npos;
        if (!not_tls) break;
        continue;
      }
      auto host = std::make_shared<Host>();
      host->domain = domain;
      host->mirror = endpoint.mirror;
      host->base_url = base;
      host->tls = endpoint.tls;
      hosts_by_domain_[domain] = host;
      return *host;
    }
  }
  throw last ? *last : Error(ErrorKind::user, domain + ": no endpoint");
}

void RegistryClient::authorize(Host& host, const image::Reference& reference, const std::string& actions,
                               const HttpResponse& response) {
  std::optional<Challenge> challenge = parse_challenge(response.header("www-authenticate"));
  std::optional<Credentials> credentials = credentials_ ? credentials_(host.domain) : std::nullopt;
  if (!challenge) throw Error(ErrorKind::permission, host.domain + ": unauthorized, and the registry gives no way to authenticate");
  if (challenge->scheme == "basic") {
    if (!credentials) throw Error(ErrorKind::permission, host.domain + ": unauthorized: authentication required (no credentials for it in your docker config.json)");
    if (credentials->password.empty() && !credentials->identity_token.empty()) {
      throw Error(ErrorKind::permission, host.domain + ": the registry asks for a username and password (Basic "
                                                       "authentication), and your docker config.json has only an "
                                                       "identity token for it, which only token authentication takes");
    }
    std::lock_guard lock(host.mutex);
    host.basic = "Basic " + base64_encode(credentials->username + ":" + credentials->password);
    return;
  }
  if (challenge->scheme != "bearer") {
    throw Error(ErrorKind::user, host.domain + ": unsupported authentication scheme " + challenge->scheme);
  }
  std::string scope = "repository:" + reference.path + ":" + actions;
  std::string token = fetch_token(host, *challenge, credentials, {scope});
  std::lock_guard lock(host.mutex);
  host.tokens[scope] = "Bearer " + token;
}

std::string RegistryClient::fetch_token(Host& host, const Challenge& challenge, const std::optional<Credentials>& credentials,
                                        const std::vector<std::string>& scopes) {
  auto parameter = [&](const std::string& name) {
    auto it = challenge.parameters.find(name);
    return it == challenge.parameters.end() ? std::string() : it->second;
  };
  std::string realm = parameter("realm"), service = parameter("service");
  if (realm.empty()) throw Error(ErrorKind::user, host.domain + ": a bearer challenge without a realm");
  bool oauth = credentials && !credentials->identity_token.empty();
  HttpRequest request;
  std::string form;
  if (oauth) {
    // Docker's distribution client trades an identity token with an OAuth2 refresh-token grant.
    form = refresh_token_form(credentials->identity_token, service, scopes);
    request.method = "POST";
    request.url = realm;
    request.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
    size_t offset = 0;
    request.body = [&form, offset](char* buffer, size_t room) mutable {
      size_t n = std::min(room, form.size() - offset);
      std::memcpy(buffer, form.data() + offset, n);
      offset += n;
      return n;
    };
    request.body_size = form.size();
    // The refresh token goes to the realm the registry named, not wherever that redirects.
    request.follow_redirects = false;
  } else {
    request.url = realm + (realm.find('?') == std::string::npos ? "?" : "&") + "service=" + url_escape(service);
    for (const std::string& scope : scopes) request.url += "&scope=" + url_escape(scope);
    if (credentials && !credentials->username.empty()) {
      request.headers.emplace_back("Authorization",
                                   "Basic " + base64_encode(credentials->username + ":" + credentials->password));
    }
  }
  std::string body, error_body;
  HttpResponse response = transport_.send(
      request, host.tls, [&](std::string_view data) {
        if (body.size() + data.size() > (1 << 20)) throw Error(ErrorKind::user, host.domain + ": token too large");
        body.append(data);
      },
      &error_body);
  std::string what = oauth ? "failed to fetch an OAuth token with the identity token: " : "failed to fetch token: ";
  if (response.status != 200) {
    std::string reason = oauth ? oauth_message(error_body) : "";
    if (oauth && reason.find(credentials->identity_token) != std::string::npos) reason.clear();  // never echoed
    bool refused = response.status == 401 || response.status == 403 || reason.starts_with("invalid_grant");
    std::string hint = !refused || !credentials ? ""
                       : oauth               ? " (has the identity token expired? log in again)"
                                             : " (incorrect username or password?)";
    throw Error(refused ? ErrorKind::permission : ErrorKind::user,
                host.domain + ": " + (refused ? "failed to authorize: " : "") + what +
                    status_text(response.status) + (reason.empty() ? "" : ": " + reason) + hint);
  }
  std::string token;
  try {
    // Both names are in use; Docker takes access_token when a server sends both.
    json doc = json::parse(body);
    token = doc.value("access_token", "");
    if (token.empty()) token = doc.value("token", "");
  } catch (const std::exception&) {
  }
  if (token.empty()) throw Error(ErrorKind::user, host.domain + ": the token server's answer holds no token");
  return token;
}

HttpResponse RegistryClient::send(const image::Reference& reference, const std::string& actions, HttpRequest request,
                                  const BodySink& sink, std::string* error_body) {
  Host& h = host(reference.domain);
  std::string path = request.url;
  auto attempt = [&] {
    HttpRequest r = request;
    if (!path.starts_with("http://") && !path.starts_with("https://")) r.url = h.base_url + "/v2/" + path;
    {
      std::lock_guard lock(h.mutex);
      auto token = h.tokens.find("repository:" + reference.path + ":" + actions);
      if (token != h.tokens.end()) {
        r.headers.emplace_back("Authorization", token->second);
      } else if (!h.basic.empty()) {
        r.headers.emplace_back("Authorization", h.basic);
      }
    }
    if (error_body) error_body->clear();
    return transport_.send(r, h.tls, sink, error_body);
  };
  HttpResponse response = attempt();
  if (response.status == 401 && !request.body) {
    authorize(h, reference, actions, response);
    response = attempt();
    if (response.status == 401) {
      throw Error(ErrorKind::permission, h.domain + ": unauthorized: the registry refused the credentials "
                                                    "(incorrect username or password?)");
    }
  }
  return response;
}

void RegistryClient::fail(const image::Reference& reference, const std::string& what, const HttpResponse& response,
                          const std::string& body) {
  std::string message = registry_message(body);
  (void)reference;
  std::string text = what + ": " + status_text(response.status) +
                     (message.empty() ? "" : ": " + message);
  ErrorKind kind = response.status == 404   ? ErrorKind::not_found
                   : response.status == 401 || response.status == 403 ? ErrorKind::permission
                                                                       : ErrorKind::user;
  throw Error(kind, text);
}

std::string RegistryClient::check_login(const std::string& domain) {
  Host& h = host(domain);
  std::optional<Credentials> credentials = credentials_ ? credentials_(domain) : std::nullopt;
  if (!credentials) throw Error(ErrorKind::user, domain + ": no credentials to check");
  std::string basic = "Basic " + base64_encode(credentials->username + ":" + credentials->password);
  HttpRequest ping;
  ping.url = h.base_url + "/v2/";
  HttpResponse first = transport_.send(ping, h.tls, {});
  if (first.status == 200) return "";  // a registry that asks for nothing takes anything
  std::optional<Challenge> challenge = parse_challenge(first.header("www-authenticate"));
  if (first.status != 401 || !challenge) {
    throw Error(ErrorKind::user, domain + ": " + ping.url + " answered " + status_text(first.status));
  }
  HttpRequest check;
  if (challenge->scheme == "basic") {
    check.url = ping.url;
  } else if (challenge->scheme == "bearer" && !challenge->parameters["realm"].empty()) {
    std::string realm = challenge->parameters["realm"];
    // docker login asks for a refresh token too, to keep in place of the password.
    check.url = realm + (realm.find('?') == std::string::npos ? "?" : "&") + "service=" +
                url_escape(challenge->parameters["service"]) + "&offline_token=true&client_id=" + kOAuthClientId;
  } else {
    throw Error(ErrorKind::user, domain + ": unsupported authentication scheme " + challenge->scheme);
  }
  check.headers.emplace_back("Authorization", basic);
  std::string body;
  HttpResponse answer = transport_.send(check, h.tls, [&](std::string_view data) {
    if (body.size() + data.size() > (1 << 20)) throw Error(ErrorKind::user, domain + ": token too large");
    body.append(data);
  });
  if (answer.status == 401 || answer.status == 403) {
    throw Error(ErrorKind::permission, domain + ": unauthorized: incorrect username or password");
  }
  if (answer.status != 200) throw Error(ErrorKind::user, domain + ": login check answered " + status_text(answer.status));
  if (challenge->scheme != "bearer") return "";
  try {
    json doc = json::parse(body);
    if (doc.is_object() && doc.contains("refresh_token") && doc["refresh_token"].is_string()) {
      return doc["refresh_token"].get<std::string>();
    }
  } catch (const std::exception&) {
    // The check passed; an answer that is not JSON just holds no refresh token.
  }
  return "";
}

FetchedManifest RegistryClient::manifest(const image::Reference& reference, const std::string& tag_or_digest) {
  try {
    return fetch_manifest(reference, tag_or_digest);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::canceled) throw;
    std::lock_guard lock(mutex_);
    // Only a mirror already chosen gives way; a host that could not be reached was the answer.
    auto chosen = hosts_by_domain_.find(reference.domain);
    if (chosen == hosts_by_domain_.end() || !chosen->second->mirror) throw;
    without_mirrors_.insert(reference.domain);
    retired_.push_back(chosen->second);  // a request still running may hold it
    hosts_by_domain_.erase(chosen);
  }
  return fetch_manifest(reference, tag_or_digest);
}

FetchedManifest RegistryClient::fetch_manifest(const image::Reference& reference, const std::string& tag_or_digest) {
  HttpRequest request;
  request.url = reference.path + "/manifests/" + tag_or_digest;
  request.headers.emplace_back("Accept", kManifestTypes);
  std::string bytes, error_body;
  HttpResponse response = send(reference, "pull", request, [&](std::string_view data) {
    if (bytes.size() + data.size() > kManifestLimit) {
      throw Error(ErrorKind::user, "the manifest is larger than " +
                                       std::to_string(kManifestLimit >> 20) + " MiB");
    }
    bytes.append(data);
  }, &error_body);
  if (response.status != 200) fail(reference, "fetching manifest " + tag_or_digest, response, error_body);
  FetchedManifest out;
  out.bytes = std::move(bytes);
  out.digest = store::Digest::of(out.bytes);
  out.media_type = media_type_of(response, out.bytes);
  if (tag_or_digest.starts_with("sha256:") && out.digest.str() != tag_or_digest) {
    throw Error(ErrorKind::user, "the registry sent a manifest whose digest is " +
                                     out.digest.str() + ", not " + tag_or_digest);
  }
  return out;
}

void RegistryClient::blob(const image::Reference& reference, const store::Digest& digest, int64_t size,
                          const std::function<void(std::string_view)>& sink) {
  HttpRequest request;
  request.url = reference.path + "/blobs/" + digest.str();
  store::Sha256 hasher;
  uint64_t received = 0;
  std::string error_body;
  HttpResponse response;
  try {
  response = send(reference, "pull", request, [&](std::string_view data) {
    received += data.size();
    if (size >= 0 && received > static_cast<uint64_t>(size)) {
      throw Error(ErrorKind::user, "blob " + digest.str() + " is larger than its " +
                                       std::to_string(size) + " bytes");
    }
    hasher.update(data);
    sink(data);
  }, &error_body);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::canceled || std::string(e.what()).find(digest.str()) != std::string::npos) throw;
    throw e.with_context("fetching blob " + digest.str());
  }
  if (response.status != 200) fail(reference, "fetching blob " + digest.str(), response, error_body);
  if (size >= 0 && received != static_cast<uint64_t>(size)) {
    throw Error(ErrorKind::user, "blob " + digest.str() + " ended after " +
                                     std::to_string(received) + " of its " + std::to_string(size) + " bytes");
  }
  store::Digest got = hasher.finish();
  if (got != digest) {
    throw Error(ErrorKind::user, "blob " + digest.str() + " arrived with digest " + got.str());
  }
}

bool RegistryClient::has_blob(const image::Reference& reference, const store::Digest& digest) {
  HttpRequest request;
  request.method = "HEAD";
  request.url = reference.path + "/blobs/" + digest.str();
  std::string error_body;
  HttpResponse response = send(reference, "pull,push", request, {}, &error_body);
  if (response.status == 200) return true;
  if (response.status == 404) return false;
  fail(reference, "checking blob " + digest.str(), response, error_body);
}

void RegistryClient::upload_blob(const image::Reference& reference, const store::Digest& digest, uint64_t size,
                                 const std::function<size_t(char*, size_t)>& read, const std::string& from_repository) {
  HttpRequest start;
  start.method = "POST";
  start.url = reference.path + "/blobs/uploads/";
  if (!from_repository.empty()) start.url += "?mount=" + url_escape(digest.str()) + "&from=" + url_escape(from_repository);
  std::string error_body;
  HttpResponse started = send(reference, "pull,push", start, {}, &error_body);
  if (started.status == 201) return;  // mounted from the other repository
  if (started.status != 202) fail(reference, "starting the upload of " + digest.str(), started, error_body);
  std::string location = started.header("location");
  if (location.empty()) throw Error(ErrorKind::user, "the registry gave no upload location");
  Host& h = host(reference.domain);
  if (location.starts_with("/")) location = h.base_url + location;
  HttpRequest put;
  put.method = "PUT";
  put.url = location + (location.find('?') == std::string::npos ? "?" : "&") + "digest=" + url_escape(digest.str());
  put.headers.emplace_back("Content-Type", "application/octet-stream");
  put.body = read;
  put.body_size = size;
  HttpResponse finished = send(reference, "pull,push", put, {}, &error_body);
  if (finished.status != 201) fail(reference, "uploading blob " + digest.str(), finished, error_body);
}

store::Digest RegistryClient::upload_blob_streamed(const image::Reference& reference,
                                                  const std::function<size_t(char*, size_t)>& read,
                                                  const std::function<store::Digest()>& finished) {
  HttpRequest start;
  start.method = "POST";
  start.url = reference.path + "/blobs/uploads/";
  std::string error_body;
  HttpResponse started = send(reference, "pull,push", start, {}, &error_body);
  if (started.status != 202) fail(reference, "starting an upload", started, error_body);
  Host& h = host(reference.domain);
  auto absolute = [&](std::string location) {
    if (location.empty()) throw Error(ErrorKind::user, "the registry gave no upload location");
    return location.starts_with("/") ? h.base_url + location : location;
  };
  std::string location = absolute(started.header("location"));
  HttpRequest patch;
  patch.method = "PATCH";
  patch.url = location;
  patch.headers.emplace_back("Content-Type", "application/octet-stream");
  patch.body = read;  // no size: sent chunked, as docker push streams a layer
  HttpResponse patched = send(reference, "pull,push", patch, {}, &error_body);
  if (patched.status != 202) fail(reference, "uploading a blob", patched, error_body);
  if (!patched.header("location").empty()) location = absolute(patched.header("location"));
  store::Digest digest = finished();
  HttpRequest put;
  put.method = "PUT";
  put.url = location + (location.find('?') == std::string::npos ? "?" : "&") + "digest=" + url_escape(digest.str());
  put.headers.emplace_back("Content-Type", "application/octet-stream");
  put.body = [](char*, size_t) { return size_t{0}; };
  put.body_size = 0;
  HttpResponse done = send(reference, "pull,push", put, {}, &error_body);
  if (done.status != 201) fail(reference, "completing the upload of blob " + digest.str(), done, error_body);
  return digest;
}

void RegistryClient::put_manifest(const image::Reference& reference, const std::string& tag_or_digest,
                                  const std::string& media_type, const std::string& bytes) {
  HttpRequest request;
  request.method = "PUT";
  request.url = reference.path + "/manifests/" + tag_or_digest;
  request.headers.emplace_back("Content-Type", media_type);
  size_t offset = 0;
  request.body = [&](char* buffer, size_t room) {
    size_t n = std::min(room, bytes.size() - offset);
    std::memcpy(buffer, bytes.data() + offset, n);
    offset += n;
    return n;
  };
  request.body_size = bytes.size();
  std::string error_body;
  HttpResponse response = send(reference, "pull,push", request, {}, &error_body);
  if (response.status != 201 && response.status != 200) {
    fail(reference, "pushing manifest " + tag_or_digest, response, error_body);
  }
}

}  // namespace kbuild::registry
