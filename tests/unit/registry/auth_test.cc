#include "engine/registry/auth.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::registry {
namespace {

TEST(Challenge, BearerWithQuotedParameters) {
  auto c = parse_challenge(R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull")");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->scheme, "bearer");
  EXPECT_EQ(c->parameters.at("realm"), "https://auth.docker.io/token");
  EXPECT_EQ(c->parameters.at("service"), "registry.docker.io");
  EXPECT_EQ(c->parameters.at("scope"), "repository:library/alpine:pull");
}

TEST(Challenge, BasicAndUnquotedAndEscapedValues) {
  auto basic = parse_challenge("Basic realm=\"Registry Realm\"");
  ASSERT_TRUE(basic);
  EXPECT_EQ(basic->scheme, "basic");
  EXPECT_EQ(basic->parameters.at("realm"), "Registry Realm");
  auto odd = parse_challenge(R"(Bearer realm=http://x/t, service="a\"b")");
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->parameters.at("realm"), "http://x/t");
  EXPECT_EQ(odd->parameters.at("service"), "a\"b");
}

TEST(Challenge, MalformedOnesAreRefused) {
  EXPECT_FALSE(parse_challenge(""));
  EXPECT_FALSE(parse_challenge(R"(Bearer realm="unterminated)"));
  EXPECT_FALSE(parse_challenge("Bearer noequals"));
}

TEST(Base64, RoundTripsEveryLength) {
  std::string data;
  for (int i = 0; i < 40; ++i) {
    EXPECT_EQ(base64_decode(base64_encode(data)), data) << i;
    data += static_cast<char>(i * 37);
  }
  EXPECT_EQ(base64_encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_THROW(base64_decode("a*b="), Error);
}

TEST(Credentials, FromDockerConfigAuth) {
  Credentials c = credentials_from_auth("dXNlcjpwYTpzcw==");  // user:pa:ss
  EXPECT_EQ(c.username, "user");
  EXPECT_EQ(c.password, "pa:ss");
  EXPECT_THROW(credentials_from_auth(base64_encode("nocolon")), Error);
}

TEST(Credentials, IdentityTokensJoinOrStandInForTheAuthOfTheirDomain) {
  auto by_domain = credentials_by_domain({{"a.io", base64_encode("u:")}, {"b.io", base64_encode("v:pw")}},
                                         {{"a.io", "refresh-a"}, {"c.io", "refresh-c"}, {"d.io", ""}});
  ASSERT_EQ(by_domain.size(), 3u);
  EXPECT_EQ(by_domain.at("a.io").username, "u");
  EXPECT_EQ(by_domain.at("a.io").password, "");
  EXPECT_EQ(by_domain.at("a.io").identity_token, "refresh-a");
  EXPECT_EQ(by_domain.at("b.io").password, "pw");
  EXPECT_EQ(by_domain.at("b.io").identity_token, "");
  EXPECT_EQ(by_domain.at("c.io").username, "");
  EXPECT_EQ(by_domain.at("c.io").identity_token, "refresh-c");
  try {
    credentials_by_domain({{"bad.io", "!!"}}, {});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("credentials for bad.io"), std::string::npos) << e.what();
  }
}

TEST(OAuth, FormValuesAreEscapedAsGoEscapesThem) {
  EXPECT_EQ(form_escape("aZ09-_.~"), "aZ09-_.~");
  EXPECT_EQ(form_escape("a b+c/d:e=f&g"), "a+b%2Bc%2Fd%3Ae%3Df%26g");
}

TEST(OAuth, TheRefreshTokenGrantIsDockersFormWithOurClientId) {
  EXPECT_EQ(refresh_token_form("r/t+1", "registry.docker.io", {"repository:library/alpine:pull"}),
            "client_id=kbuild&grant_type=refresh_token&refresh_token=r%2Ft%2B1"
            "&scope=repository%3Alibrary%2Falpine%3Apull&service=registry.docker.io");
  // Several scopes go in one value, space-separated; none is an empty value, as Docker sends it.
  EXPECT_EQ(refresh_token_form("t", "s", {"repository:a:pull", "repository:b:pull,push"}),
            "client_id=kbuild&grant_type=refresh_token&refresh_token=t"
            "&scope=repository%3Aa%3Apull+repository%3Ab%3Apull%2Cpush&service=s");
  EXPECT_EQ(refresh_token_form("t", "", {}), "client_id=kbuild&grant_type=refresh_token&refresh_token=t&scope=&service=");
}

}  // namespace
}  // namespace kbuild::registry
