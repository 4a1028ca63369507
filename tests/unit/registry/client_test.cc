#include "engine/registry/client.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <functional>

#include "common/error.h"

namespace kbuild::registry {
namespace {

// Answers requests from a script: a handler per "METHOD URL" (without the query for
// uploads), and records every request it saw.
class FakeTransport : public HttpTransport {
 public:
  struct Seen {
    std::string method, url, authorization;
    std::string body;
  };
  using Handler = std::function<HttpResponse(const HttpRequest&, const BodySink&)>;

  void on(const std::string& method_and_url, Handler handler) { handlers_[method_and_url] = std::move(handler); }

  HttpResponse send(const HttpRequest& request, const TlsConfig&, const BodySink& sink, std::string* error_body) override {
    Seen seen{request.method, request.url, "", ""};
    for (const auto& [name, value] : request.headers) {
      if (name == "Authorization") seen.authorization = value;
    }
    if (request.body) {
      char buffer[4096];
      for (size_t n; (n = request.body(buffer, sizeof buffer)) > 0;) seen.body.append(buffer, n);
    }
    requests.push_back(seen);
    std::string key = request.method + " " + request.url.substr(0, request.url.find('?'));
    auto it = handlers_.find(key);
    if (it == handlers_.end()) throw Error(ErrorKind::user, "no route to " + key);
    HttpResponse response = it->second(request, sink);
    if (error_body && (response.status < 200 || response.status >= 300)) *error_body = response_body;
    return response;
  }

  std::vector<Seen> requests;
  std::string response_body;  // the error body of the next non-2xx answer

 private:
  std::map<std::string, Handler> handlers_;
};

HttpResponse status(long code, Headers headers = {}) { return HttpResponse{code, std::move(headers), ""}; }

HttpResponse body(const BodySink& sink, const std::string& data, Headers headers = {}) {
  if (sink) sink(data);
  return HttpResponse{200, std::move(headers), ""};
}

class ClientTest : public ::testing::Test {
 protected:
  RegistryClient client(std::optional<Credentials> credentials = std::nullopt) {
    return RegistryClient(transport, HostsConfig{}, [credentials](const std::string&) { return credentials; });
  }
  image::Reference ref = image::parse_reference("127.0.0.1:5000/team/app:1");
  FakeTransport transport;
  const std::string base = "http://127.0.0.1:5000";
};

TEST_F(ClientTest, LoopbackFallsBackToPlainHttpWhenTlsIsNotSpoken) {
  transport.on("GET https://127.0.0.1:5000/v2/", [](const HttpRequest&, const BodySink&) -> HttpResponse {
    throw Error(ErrorKind::user, "127.0.0.1:5000: error:0A00010B:SSL routines::wrong version number");
  });
  transport.on("GET " + base + "/v2/", [](const HttpRequest&, const BodySink&) { return status(200); });
  transport.on("HEAD " + base + "/v2/team/app/blobs/" + store::Digest::of("x").str(),
               [](const HttpRequest&, const BodySink&) { return status(404); });
  auto c = client();
  EXPECT_FALSE(c.has_blob(ref, store::Digest::of("x")));
  ASSERT_EQ(transport.requests.size(), 3u);
  EXPECT_EQ(transport.requests[2].url, base + "/v2/team/app/blobs/" + store::Digest::of("x").str());
}

TEST_F(ClientTest, AnUntrustedCertificateIsNotAReasonToTryPlainHttp) {
  transport.on("GET https://127.0.0.1:5000/v2/", [](const HttpRequest&, const BodySink&) -> HttpResponse {
    throw Error(ErrorKind::user, "127.0.0.1:5000: the registry's TLS certificate is not trusted (x)");
  });
  transport.on("GET " + base + "/v2/", [](const HttpRequest&, const BodySink&) { return status(200); });
  auto c = client();
  EXPECT_THROW(c.has_blob(ref, store::Digest::of("x")), Error);
  EXPECT_EQ(transport.requests.size(), 1u);
}

class HttpClientTest : public ClientTest {
 protected:
  void SetUp() override {
    transport.on("GET https://127.0.0.1:5000/v2/", [](const HttpRequest&, const BodySink&) -> HttpResponse {
      throw Error(ErrorKind::user, "127.0.0.1:5000: wrong version number");
    });
    transport.on("GET " + base + "/v2/", [](const HttpRequest&, const BodySink&) { return status(401); });
  }
};

TEST_F(HttpClientTest, BearerTokensAreFetchedWithTheCredentialsAndReused) {
  int token_requests = 0;
  transport.on("GET http://auth.local/token", [&](const HttpRequest& r, const BodySink& sink) {
    ++token_requests;
    EXPECT_NE(r.url.find("service=reg"), std::string::npos);
    EXPECT_NE(r.url.find("scope=repository%3Ateam%2Fapp%3Apull"), std::string::npos);
    EXPECT_EQ(r.headers.at(0).second, "Basic " + base64_encode("u:p"));
    return body(sink, R"({"token":"T1"})");
  });
  std::string manifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"})";
  transport.on("GET " + base + "/v2/team/app/manifests/1", [&](const HttpRequest& r, const BodySink& sink) {
    for (const auto& [name, value] : r.headers) {
      if (name == "Authorization" && value == "Bearer T1") {
        return body(sink, manifest, {{"content-type", "application/vnd.oci.image.manifest.v1+json"}});
      }
    }
    return status(401, {{"www-authenticate", R"(Bearer realm="http://auth.local/token",service="reg",scope="repository:team/app:pull")"}});
  });
  auto c = client(Credentials{"u", "p", ""});
  FetchedManifest first = c.manifest(ref, "1");
  FetchedManifest second = c.manifest(ref, "1");
  EXPECT_EQ(first.bytes, manifest);
  EXPECT_EQ(first.media_type, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(first.digest, store::Digest::of(manifest));
  EXPECT_EQ(token_requests, 1);
  EXPECT_EQ(transport.requests.back().authorization, "Bearer T1");
}

TEST_F(HttpClientTest, BasicChallengesNeedCredentials) {
  transport.on("GET " + base + "/v2/team/app/manifests/1", [&](const HttpRequest& r, const BodySink& sink) {
    for (const auto& [name, value] : r.headers) {
      if (name == "Authorization" && value == "Basic " + base64_encode("u:p")) return body(sink, "{}");
    }
    return status(401, {{"www-authenticate", R"(Basic realm="Registry")"}});
  });
  try {
    client().manifest(ref, "1");
    FAIL() << "no error without credentials";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::permission);
    EXPECT_NE(std::string(e.what()).find("authentication required"), std::string::npos) << e.what();
  }
  EXPECT_EQ(client(Credentials{"u", "p", ""}).manifest(ref, "1").bytes, "{}");
}

TEST_F(HttpClientTest, RefusedBasicCredentialsSaySo) {
  transport.on("GET " + base + "/v2/team/app/manifests/1", [](const HttpRequest&, const BodySink&) {
    return status(401, {{"www-authenticate", R"(Basic realm="Registry")"}});
  });
  try {
    client(Credentials{"u", "wrong", ""}).manifest(ref, "1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::permission);
    EXPECT_NE(std::string(e.what()).find("incorrect username or password"), std::string::npos) << e.what();
  }
}

TEST_F(HttpClientTest, ARefusedTokenSaysSo) {
  transport.on("GET http://auth.local/token", [](const HttpRequest&, const BodySink&) { return status(401); });
  transport.on("GET " + base + "/v2/team/app/manifests/1", [](const HttpRequest&, const BodySink&) {
    return status(401, {{"www-authenticate", R"(Bearer realm="http://auth.local/token",service="reg")"}});
  });
  try {
    client(Credentials{"u", "wrong", ""}).manifest(ref, "1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::permission);
    EXPECT_NE(std::string(e.what()).find("401 Unauthorized"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("wrong"), std::string::npos) << "the password leaked: " << e.what();
  }
}

std::string header_of(const HttpRequest& request, const std::string& name) {
  for (const auto& [key, value] : request.headers) {
    if (key == name) return value;
  }
  return "";
}

class IdentityTokenTest : public HttpClientTest {
 protected:
  void SetUp() override {
    HttpClientTest::SetUp();
    transport.on("GET " + base + "/v2/team/app/manifests/1", [this](const HttpRequest& r, const BodySink& sink) {
      if (header_of(r, "Authorization") == "Bearer A1") return body(sink, manifest);
      return status(401, {{"www-authenticate", R"(Bearer realm="http://auth.local/token",service="reg")"}});
    });
  }
  // No request but the token POST carries the identity token, in its body only.
  void expect_token_only_posted(const std::string& token) {
    for (const auto& seen : transport.requests) {
      EXPECT_EQ(seen.url.find(token), std::string::npos) << seen.url;
      EXPECT_EQ(seen.authorization.find(token), std::string::npos) << seen.url;
      if (seen.method != "POST") {
        EXPECT_EQ(seen.body.find(token), std::string::npos) << seen.url;
      }
    }
  }
  std::string manifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"})";
};

TEST_F(IdentityTokenTest, AnIdentityTokenIsTradedWithARefreshTokenGrant) {
  int grants = 0;
  transport.on("POST http://auth.local/token", [&](const HttpRequest& r, const BodySink& sink) {
    ++grants;
    EXPECT_EQ(r.url, "http://auth.local/token");
    EXPECT_EQ(header_of(r, "Content-Type"), "application/x-www-form-urlencoded");
    EXPECT_EQ(header_of(r, "Authorization"), "");
    EXPECT_FALSE(r.follow_redirects);
    return body(sink, R"({"access_token":"A1","refresh_token":"R2","expires_in":300})");
  });
  auto c = client(Credentials{"u", "", "R1/x"});
  EXPECT_EQ(c.manifest(ref, "1").bytes, manifest);
  EXPECT_EQ(c.manifest(ref, "1").bytes, manifest);
  EXPECT_EQ(grants, 1);
  auto post = std::find_if(transport.requests.begin(), transport.requests.end(),
                           [](const auto& seen) { return seen.method == "POST"; });
  ASSERT_NE(post, transport.requests.end());
  EXPECT_EQ(post->body, "client_id=kbuild&grant_type=refresh_token&refresh_token=R1%2Fx"
                        "&scope=repository%3Ateam%2Fapp%3Apull&service=reg");
  expect_token_only_posted("R1");
}

TEST_F(IdentityTokenTest, ATokenServerMayAnswerWithTokenInsteadOfAccessToken) {
  transport.on("POST http://auth.local/token",
               [](const HttpRequest&, const BodySink& sink) { return body(sink, R"({"token":"A1"})"); });
  EXPECT_EQ(client(Credentials{"", "", "R1"}).manifest(ref, "1").bytes, manifest);
}

TEST_F(IdentityTokenTest, ARefusedIdentityTokenSaysSoAndNeverShowsIt) {
  transport.on("POST http://auth.local/token", [](const HttpRequest&, const BodySink&) { return status(400); });
  transport.response_body = R"({"error":"invalid_grant","error_description":"refresh token is expired"})";
  try {
    client(Credentials{"u", "", "R-secret"}).manifest(ref, "1");
    FAIL();
  } catch (const Error& e) {
    std::string text = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::permission);
    EXPECT_NE(text.find("identity token"), std::string::npos) << text;
    EXPECT_NE(text.find("400 Bad Request: invalid_grant: refresh token is expired"), std::string::npos) << text;
  }
  // A token server that echoes the token back: its words are left out.
  transport.response_body = R"({"error":"invalid_grant","error_description":"R-secret is unknown"})";
  try {
    client(Credentials{"u", "", "R-secret"}).manifest(ref, "1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).find("R-secret"), std::string::npos) << e.what();
  }
  EXPECT_EQ(std::count_if(transport.requests.begin(), transport.requests.end(),
                          [](const auto& seen) { return seen.method == "GET" && seen.url.starts_with("http://auth.local"); }),
            0);
  expect_token_only_posted("R-secret");
}

TEST_F(HttpClientTest, BasicRegistriesAreNotGivenAnIdentityTokenAsAPassword) {
  transport.on("GET " + base + "/v2/team/app/manifests/1", [](const HttpRequest&, const BodySink&) {
    return status(401, {{"www-authenticate", R"(Basic realm="Registry")"}});
  });
  try {
    client(Credentials{"u", "", "R1"}).manifest(ref, "1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::permission);
    EXPECT_NE(std::string(e.what()).find("only an identity token"), std::string::npos) << e.what();
  }
  for (const auto& seen : transport.requests) EXPECT_EQ(seen.authorization, "") << seen.url;
}

TEST_F(HttpClientTest, LoginIsCheckedAgainstTheTokenServer) {
  transport.on("GET " + base + "/v2/", [](const HttpRequest&, const BodySink&) {
    return status(401, {{"www-authenticate", R"(Bearer realm="http://auth.local/token",service="reg")"}});
  });
  transport.on("GET http://auth.local/token", [](const HttpRequest& r, const BodySink& sink) {
    EXPECT_EQ(r.url.find("scope="), std::string::npos) << r.url;  // no repository: docker login's check
    for (const auto& [name, value] : r.headers) {
      if (name == "Authorization" && value == "Basic " + base64_encode("u:p")) return body(sink, R"({"token":"T"})");
    }
    return status(401);
  });
  EXPECT_EQ(client(Credentials{"u", "p", ""}).check_login("127.0.0.1:5000"), "");
  try {
    client(Credentials{"u", "wrong", ""}).check_login("127.0.0.1:5000");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::permission);
  }
}

TEST_F(HttpClientTest, LoginAsksForARefreshTokenAsDockerDoesAndReturnsIt) {
  transport.on("GET " + base + "/v2/", [](const HttpRequest&, const BodySink&) {
    return status(401, {{"www-authenticate", R"(Bearer realm="http://auth.local/token",service="reg")"}});
  });
  transport.on("GET http://auth.local/token", [](const HttpRequest& r, const BodySink& sink) {
    EXPECT_EQ(r.url, "http://auth.local/token?service=reg&offline_token=true&client_id=kbuild");
    return body(sink, R"({"token":"T","refresh_token":"R-login"})");
  });
  EXPECT_EQ(client(Credentials{"u", "p", ""}).check_login("127.0.0.1:5000"), "R-login");
}

TEST(MirrorTest, AMirrorWithoutTheImageGivesWayToTheOrigin) {
  FakeTransport transport;
  HostsConfig hosts;
  hosts.mirrors = {"http://mirror.local"};
  RegistryClient client(transport, hosts, [](const std::string&) { return std::nullopt; });
  image::Reference hub = image::parse_reference("alpine:3.20");
  transport.on("GET http://mirror.local/v2/", [](const HttpRequest&, const BodySink&) { return status(200); });
  transport.on("GET http://mirror.local/v2/library/alpine/manifests/3.20",
               [](const HttpRequest&, const BodySink&) { return status(404); });
  transport.on("GET https://registry-1.docker.io/v2/", [](const HttpRequest&, const BodySink&) { return status(200); });
  transport.on("GET https://registry-1.docker.io/v2/library/alpine/manifests/3.20",
               [](const HttpRequest&, const BodySink& sink) { return body(sink, "{}"); });
  EXPECT_EQ(client.manifest(hub, "3.20").bytes, "{}");
  EXPECT_EQ(transport.requests.back().url, "https://registry-1.docker.io/v2/library/alpine/manifests/3.20");
  // The rest of the pull goes to the origin too.
  transport.on("HEAD https://registry-1.docker.io/v2/library/alpine/blobs/" + store::Digest::of("x").str(),
               [](const HttpRequest&, const BodySink&) { return status(200); });
  EXPECT_TRUE(client.has_blob(hub, store::Digest::of("x")));
}

TEST(MirrorTest, AMirrorWithTheImageServesIt) {
  FakeTransport transport;
  HostsConfig hosts;
  hosts.mirrors = {"http://mirror.local"};
  RegistryClient client(transport, hosts, [](const std::string&) { return std::nullopt; });
  transport.on("GET http://mirror.local/v2/", [](const HttpRequest&, const BodySink&) { return status(200); });
  transport.on("GET http://mirror.local/v2/library/alpine/manifests/3.20",
               [](const HttpRequest&, const BodySink& sink) { return body(sink, "{}"); });
  EXPECT_EQ(client.manifest(image::parse_reference("alpine:3.20"), "3.20").bytes, "{}");
  for (const auto& seen : transport.requests) EXPECT_EQ(seen.url.find("docker.io"), std::string::npos) << seen.url;
}

class OpenClientTest : public ClientTest {
 protected:
  void SetUp() override {
    transport.on("GET https://127.0.0.1:5000/v2/", [](const HttpRequest&, const BodySink&) -> HttpResponse {
      throw Error(ErrorKind::user, "127.0.0.1:5000: wrong version number");
    });
    transport.on("GET " + base + "/v2/", [](const HttpRequest&, const BodySink&) { return status(200); });
  }
};

TEST_F(OpenClientTest, AManifestByDigestMustHaveThatDigest) {
  store::Digest asked = store::Digest::of("what was asked");
  transport.on("GET " + base + "/v2/team/app/manifests/" + asked.str(),
               [](const HttpRequest&, const BodySink& sink) { return body(sink, "something else"); });
  EXPECT_THROW(client().manifest(ref, asked.str()), Error);
}

TEST_F(OpenClientTest, AHugeManifestIsRefusedWhileItStreams) {
  transport.on("GET " + base + "/v2/team/app/manifests/1", [](const HttpRequest&, const BodySink& sink) {
    std::string chunk(1 << 20, ' ');
    for (int i = 0; i < 5; ++i) sink(chunk);
    return status(200);
  });
  try {
    client().manifest(ref, "1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("larger than 4 MiB"), std::string::npos) << e.what();
  }
}

TEST_F(OpenClientTest, MissingManifestsAreNotFoundInTheRegistrysWords) {
  transport.response_body = R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})";
  transport.on("GET " + base + "/v2/team/app/manifests/1", [](const HttpRequest&, const BodySink&) { return status(404); });
  try {
    client().manifest(ref, "1");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::not_found);
    EXPECT_EQ(std::string(e.what()), "fetching manifest 1: 404 Not Found: manifest unknown: manifest unknown");
  }
}

TEST_F(OpenClientTest, BlobsAreCheckedForDigestAndSize) {
  std::string data = "layer bytes";
  store::Digest digest = store::Digest::of(data);
  std::string served = data;
  transport.on("GET " + base + "/v2/team/app/blobs/" + digest.str(),
               [&](const HttpRequest&, const BodySink& sink) { return body(sink, served); });
  std::string got;
  client().blob(ref, digest, static_cast<int64_t>(data.size()), [&](std::string_view d) { got.append(d); });
  EXPECT_EQ(got, data);
  served = "LAYER BYTES";  // same size, other bytes
  EXPECT_THROW(client().blob(ref, digest, static_cast<int64_t>(data.size()), [](std::string_view) {}), Error);
  served = data.substr(0, 4);  // truncated
  try {
    client().blob(ref, digest, static_cast<int64_t>(data.size()), [](std::string_view) {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ended after 4 of its 11 bytes"), std::string::npos) << e.what();
  }
  served = data + "more";  // longer than the manifest said
  EXPECT_THROW(client().blob(ref, digest, static_cast<int64_t>(data.size()), [](std::string_view) {}), Error);
}

TEST_F(OpenClientTest, UploadsStartThenPutTheBytesWithTheirDigest) {
  std::string data = "blob";
  store::Digest digest = store::Digest::of(data);
  transport.on("POST " + base + "/v2/team/app/blobs/uploads/", [](const HttpRequest&, const BodySink&) {
    return status(202, {{"location", "/v2/team/app/blobs/uploads/abc?_state=s"}});
  });
  transport.on("PUT " + base + "/v2/team/app/blobs/uploads/abc", [&](const HttpRequest& r, const BodySink&) {
    EXPECT_NE(r.url.find("_state=s&digest=sha256%3A" + std::string(digest.hex())), std::string::npos) << r.url;
    return status(201);
  });
  size_t offset = 0;
  client().upload_blob(ref, digest, data.size(), [&](char* buffer, size_t room) {
    size_t n = std::min(room, data.size() - offset);
    std::copy_n(data.data() + offset, n, buffer);
    offset += n;
    return n;
  });
  ASSERT_EQ(transport.requests.back().method, "PUT");
  EXPECT_EQ(transport.requests.back().body, data);
}

TEST_F(OpenClientTest, AMountedBlobIsNotUploaded) {
  store::Digest digest = store::Digest::of("blob");
  transport.on("POST " + base + "/v2/team/app/blobs/uploads/", [&](const HttpRequest& r, const BodySink&) {
    EXPECT_NE(r.url.find("mount=sha256%3A"), std::string::npos);
    EXPECT_NE(r.url.find("from=team%2Fbase"), std::string::npos);
    return status(201);
  });
  client().upload_blob(ref, digest, 4, [](char*, size_t) -> size_t { ADD_FAILURE() << "read"; return 0; }, "team/base");
  EXPECT_EQ(transport.requests.back().method, "POST");
}

}  // namespace
}  // namespace kbuild::registry
