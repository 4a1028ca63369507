#include <curl/curl.h>

#include <cctype>
#include <exception>
#include <fstream>
#include <iterator>
#include <mutex>

#include "common/error.h"
#include "engine/registry/http.h"

namespace kbuild::registry {
namespace {

constexpr size_t kErrorBodyLimit = 64 << 10;

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

std::string host_of(const std::string& url) {
  size_t start = url.find("://");
  start = start == std::string::npos ? 0 : start + 3;
  size_t end = url.find('/', start);
  return url.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// One transfer's state, reached from libcurl's callbacks.
struct Transfer {
  CURL* curl = nullptr;
  const HttpRequest* request = nullptr;
  const BodySink* sink = nullptr;
  std::string* error_body = nullptr;
  HttpResponse response;
  std::exception_ptr error;
  const std::function<bool()>* canceled = nullptr;

  long status() const {
    long code = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &code);
    return code;
  }
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    t->response.headers.clear();  // a new response (after a redirect or a 100)
  } else if (size_t colon = line.find(':'); colon != std::string_view::npos) {
    t->response.headers.emplace(lower(trim(line.substr(0, colon))), std::string(trim(line.substr(colon + 1))));
  }
  return size * count;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t bytes = size * count;
  long status = t->status();
  if (status >= 200 && status < 300) {
    try {
      if (*t->sink) (*t->sink)(std::string_view(data, bytes));
    } catch (...) {
      t->error = std::current_exception();
      return 0;
    }
  } else if (t->error_body && t->error_body->size() < kErrorBodyLimit) {
    t->error_body->append(data, std::min(bytes, kErrorBodyLimit - t->error_body->size()));
  }
  return bytes;
}

size_t on_read(char* buffer, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  try {
    return t->request->body(buffer, size * count);
  } catch (...) {
    t->error = std::current_exception();
    return CURL_READFUNC_ABORT;
  }
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  return (*t->canceled && (*t->canceled)()) ? 1 : 0;
}

class CurlTransport : public HttpTransport {
 public:
  CurlTransport(std::function<bool()> canceled, ProxyConfig proxies)
      : canceled_(std::move(canceled)), proxies_(std::move(proxies)) {
    global_init();
  }

  HttpResponse send(const HttpRequest& request, const TlsConfig& tls, const BodySink& sink,
                    std::string* error_body) override {
    CURL* curl = curl_easy_init();
    if (!curl) throw Error(ErrorKind::internal, "curl_easy_init failed");
    struct Cleanup {
      CURL* curl;
      curl_slist* headers = nullptr;
      ~Cleanup() {
        curl_slist_free_all(headers);
        curl_easy_cleanup(curl);
      }
    } cleanup{curl};
    Transfer t;
    t.curl = curl;
    t.request = &request;
    t.sink = &sink;
    t.error_body = error_body;
    t.canceled = &canceled_;
    for (const auto& [name, value] : request.headers) {
      cleanup.headers = curl_slist_append(cleanup.headers, (name + ": " + value).c_str());
    }
    // No "Expect: 100-continue" round trip before uploads.
    cleanup.headers = curl_slist_append(cleanup.headers, "Expect:");
    curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, cleanup.headers);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, request.follow_redirects ? 1L : 0L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    // A registry that stops sending is given up on after a minute below 1 byte/s.
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &t);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &t);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "kbuild/" KBUILD_VERSION);
    // Proxies come from the daemon's configuration only, never from its environment.
    const std::string& proxy = request.url.starts_with("https://") ? proxies_.https_proxy : proxies_.http_proxy;
    curl_easy_setopt(curl, CURLOPT_PROXY, proxy.c_str());
    if (!proxies_.no_proxy.empty()) curl_easy_setopt(curl, CURLOPT_NOPROXY, proxies_.no_proxy.c_str());
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, tls.verify ? 1L : 0L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, tls.verify ? 2L : 0L);
    if (!tls.client_cert.empty()) {
      curl_easy_setopt(curl, CURLOPT_SSLCERT, tls.client_cert.c_str());
      curl_easy_setopt(curl, CURLOPT_SSLKEY, tls.client_key.c_str());
    }
    std::string ca_bundle;
    if (!tls.ca_files.empty()) {
      curl_blob blob{};
      ca_bundle = extra_ca_bundle(tls.ca_files);
      blob.data = ca_bundle.data();
      blob.len = ca_bundle.size();
      blob.flags = CURL_BLOB_NOCOPY;
      curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &blob);
    }
    if (request.method == "HEAD") {
      curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (request.method == "GET") {
      curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
      if (request.body) {
        curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(curl, CURLOPT_READDATA, &t);
        if (request.body_size) {
          curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(*request.body_size));
        }
      } else {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, 0L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
      }
    }
    char error_text[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_text);
    CURLcode code = curl_easy_perform(curl);
    if (t.error) std::rethrow_exception(t.error);
    if (code == CURLE_ABORTED_BY_CALLBACK) throw Error(ErrorKind::canceled, "build canceled");
    if (code != CURLE_OK) {
      std::string detail = error_text[0] ? error_text : curl_easy_strerror(code);
      std::string host = host_of(request.url);
      if (code == CURLE_PEER_FAILED_VERIFICATION || code == CURLE_SSL_CACERT_BADFILE) {
        std::string dir = tls.certs_dir.empty() ? "/etc/docker/certs.d/" + host : tls.certs_dir;
        throw Error(ErrorKind::user, host + ": the registry's TLS certificate is not trusted (" + detail +
                                         "): put its CA certificate in " + dir +
                                         "/ca.crt, or list the host in daemon.json's insecure-registries");
      }
      if (code == CURLE_OPERATION_TIMEDOUT) throw Error(ErrorKind::user, host + ": the registry timed out: " + detail);
      throw Error(ErrorKind::user, host + ": " + detail);
    }
    t.response.status = t.status();
    char* effective = nullptr;
    curl_easy_getinfo(curl, CURLINFO_EFFECTIVE_URL, &effective);
    if (effective) t.response.effective_url = effective;
    return t.response;
  }

 private:
  // libcurl takes one CA bundle: the system's and the host's together.
  static std::string extra_ca_bundle(const std::vector<std::string>& files);

  std::function<bool()> canceled_;
  ProxyConfig proxies_;
};

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::user, "reading " + path + ": cannot open it");
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string CurlTransport::extra_ca_bundle(const std::vector<std::string>& files) {
  std::string bundle;
  std::ifstream system("/etc/ssl/certs/ca-certificates.crt", std::ios::binary);
  if (system) bundle.assign(std::istreambuf_iterator<char>(system), std::istreambuf_iterator<char>());
  for (const std::string& file : files) bundle += "\n" + read_text_file(file) + "\n";
  return bundle;
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  auto it = headers.find(std::string(name));
  return it == headers.end() ? std::string() : it->second;
}

std::unique_ptr<HttpTransport> make_curl_transport(std::function<bool()> canceled, ProxyConfig proxies) {
  return std::make_unique<CurlTransport>(std::move(canceled), std::move(proxies));
}

}  // namespace kbuild::registry
