// A distribution (OCI registry) API client for one operation: manifests and blobs by
// repository, with the host's endpoints tried in order and authentication answered as the
// registry asks. Tokens are kept for the client's life (one pull or push).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/image/reference.h"
#include "engine/registry/auth.h"
#include "engine/registry/hosts.h"
#include "engine/registry/http.h"
#include "engine/store/digest.h"

namespace kbuild::registry {

// The caller's credentials by registry domain ("docker.io", "localhost:5000").
using CredentialLookup = std::function<std::optional<Credentials>(const std::string& domain)>;

struct FetchedManifest {
  std::string media_type;
  std::string bytes;
  store::Digest digest;  // of the bytes, checked against the reference's digest when it had one
};

// Media types a manifest fetch accepts: OCI and Docker, images and indexes.
extern const char* const kManifestAccept;
// Manifests and indexes larger than this are refused (as containerd bounds them).
constexpr size_t kManifestLimit = 4 << 20;

class RegistryClient {
 public:
  RegistryClient(HttpTransport& transport, HostsConfig hosts, CredentialLookup credentials)
      : transport_(transport), hosts_(std::move(hosts)), credentials_(std::move(credentials)) {}

  // The manifest or index a tag or digest names in `reference`'s repository. A mirror that
  // fails to give it is left for the rest of the client's life, and the origin is asked.
  FetchedManifest manifest(const image::Reference& reference, const std::string& tag_or_digest);
  // A blob, streamed to `sink`, verified against `digest` and `size` (-1: unknown).
  void blob(const image::Reference& reference, const store::Digest& digest, int64_t size,
            const std::function<void(std::string_view)>& sink);
  bool has_blob(const image::Reference& reference, const store::Digest& digest);
  // Uploads a blob whose bytes `read` produces (size known), unless a mount from `from_repository`
  // of the same registry gives it.
  void upload_blob(const image::Reference& reference, const store::Digest& digest, uint64_t size,
                   const std::function<size_t(char*, size_t)>& read, const std::string& from_repository = "");
  // Uploads a blob as it is made, its digest known only at the end: the bytes `read` produces
  // go in one PATCH, then `finished` (called once they are all sent) gives the digest that
  // completes the upload. Returns that digest.
  store::Digest upload_blob_streamed(const image::Reference& reference, const std::function<size_t(char*, size_t)>& read,
                                     const std::function<store::Digest()>& finished);
  void put_manifest(const image::Reference& reference, const std::string& tag_or_digest, const std::string& media_type,
                    const std::string& bytes);
  // docker login's check: the registry at `domain` takes the caller's credentials (for
  // /v2/ itself with Basic, or for a token without a scope with Bearer). Throws a permission
  // error when it refuses them. Returns the identity token (OAuth2 refresh token) the token
  // server gave for them, asked for as docker asks (offline_token=true), or "".
  std::string check_login(const std::string& domain);

 private:
  struct Host;
  // Sends a request to the repository's registry (path after /v2/), answering a 401 once.
  HttpResponse send(const image::Reference& reference, const std::string& actions, HttpRequest request,
                    const BodySink& sink, std::string* error_body = nullptr);
  Host& host(const std::string& domain);
  void authorize(Host& host, const image::Reference& reference, const std::string& actions, const HttpResponse& challenge);
  // A bearer token for `scopes` from the challenge's realm: with an identity token, Docker's
  // OAuth2 refresh-token grant (a form POST); otherwise a GET, with the credentials as Basic.
  std::string fetch_token(Host& host, const Challenge& challenge, const std::optional<Credentials>& credentials,
                          const std::vector<std::string>& scopes);
  [[noreturn]] void fail(const image::Reference& reference, const std::string& what, const HttpResponse& response,
                         const std::string& body);

  HttpTransport& transport_;
  HostsConfig hosts_;
  CredentialLookup credentials_;
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Host>> hosts_by_domain_;
  std::set<std::string> without_mirrors_;  // domains whose mirrors failed a manifest
  std::vector<std::shared_ptr<Host>> retired_;
  FetchedManifest fetch_manifest(const image::Reference& reference, const std::string& tag_or_digest);
};

}  // namespace kbuild::registry
