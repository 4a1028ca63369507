#include "cli/registry_auth.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::cli {
namespace {

TEST(RegistryAuth, ConfigKeysNameRegistriesAsDockerDoes) {
  EXPECT_EQ(registry_domain_of_key("https://index.docker.io/v1/"), "docker.io");
  EXPECT_EQ(registry_domain_of_key("registry-1.docker.io"), "docker.io");
  EXPECT_EQ(registry_domain_of_key("https://localhost:5000/v2/"), "localhost:5000");
  EXPECT_EQ(registry_domain_of_key("quay.io"), "quay.io");
}

TEST(RegistryAuth, OnlyTheRegistriesAskedForAreSent) {
  std::string config = R"({"auths": {
      "https://index.docker.io/v1/": {"auth": "aHViOnB3"},
      "localhost:5000": {"auth": "bG9jYWw6cHc="},
      "quay.io": {"auth": ""},
      "other.io": {"email": "x"}},
    "credsStore": "desktop"})";
  auto sent = credentials_for(config, "config.json", {"docker.io", "quay.io", "other.io"});
  EXPECT_EQ(sent, (std::map<std::string, std::string>{{"docker.io", "aHViOnB3"}}));
  EXPECT_TRUE(credentials_for(config, "config.json", {}).empty());
  EXPECT_EQ(credentials_for(config, "config.json", {"localhost:5000"}).at("localhost:5000"), "bG9jYWw6cHc=");
  EXPECT_TRUE(credentials_for("{}", "config.json", {"docker.io"}).empty());
}

TEST(RegistryAuth, ABrokenConfigIsOneClearError) {
  try {
    credentials_for("{\"auths\": ", "/home/u/.docker/config.json", {"docker.io"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("reading /home/u/.docker/config.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kbuild::cli
