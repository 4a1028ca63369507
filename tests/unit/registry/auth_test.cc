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

}  // namespace
}  // namespace kbuild::registry
