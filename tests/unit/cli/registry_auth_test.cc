#include "cli/registry_auth.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

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
  EXPECT_EQ(sent, (std::map<std::string, RegistryCredential>{{"docker.io", {"aHViOnB3", ""}}}));
  EXPECT_TRUE(credentials_for(config, "config.json", {}).empty());
  EXPECT_EQ(credentials_for(config, "config.json", {"localhost:5000"}).at("localhost:5000").auth, "bG9jYWw6cHc=");
  EXPECT_TRUE(credentials_for("{}", "config.json", {"docker.io"}).empty());
}

TEST(RegistryAuth, IdentityTokensAreReadFromAuthsAsDockerWritesThem) {
  // docker login keeps "user:" and the token when the registry gave one; either may be alone.
  std::string config = R"({"auths": {
      "https://index.docker.io/v1/": {"auth": "dTo=", "identitytoken": "refresh-hub"},
      "t.io": {"identitytoken": "refresh-t"},
      "e.io": {"auth": "", "identitytoken": ""}}})";
  auto sent = credentials_for(config, "config.json", {"docker.io", "t.io", "e.io"});
  EXPECT_EQ(sent, (std::map<std::string, RegistryCredential>{{"docker.io", {"dTo=", "refresh-hub"}},
                                                             {"t.io", {"", "refresh-t"}}}));
}

TEST(RegistryAuth, CredentialsCrossToTheDaemonAsTwoMapsByDomain) {
  dbus::Options options;
  add_registry_credentials(options, {});
  EXPECT_TRUE(options.empty());
  add_registry_credentials(options, {{"a.io", {"YTpi", ""}}, {"t.io", {"", "rt"}}, {"b.io", {"dTo=", "rb"}}});
  EXPECT_EQ(dbus::option_or(options, "registry-auth", dbus::StringMap{}),
            (dbus::StringMap{{"a.io", "YTpi"}, {"b.io", "dTo="}}));
  EXPECT_EQ(dbus::option_or(options, "registry-identity-tokens", dbus::StringMap{}),
            (dbus::StringMap{{"b.io", "rb"}, {"t.io", "rt"}}));
}

TEST(RegistryAuth, HelpersComeBeforeAuths) {
  std::string config = R"({"auths": {"a.io": {"auth": "YTpi"}}, "credHelpers": {"b.io": "special"}, "credsStore": "store"})";
  std::vector<std::pair<std::string, std::string>> asked;
  auto helper = [&](const std::string& name, const std::string& server) {
    asked.emplace_back(name, server);
    return server == "c.io" ? RegistryCredential{} : RegistryCredential{name + "@" + server, ""};
  };
  auto sent = credentials_for(config, "config.json", {"a.io", "b.io", "c.io", "docker.io"}, helper);
  // The helpers come first, as docker asks them; auths answers what they do not know.
  EXPECT_EQ(sent, (std::map<std::string, RegistryCredential>{{"a.io", {"store@a.io", ""}},
                                                             {"b.io", {"special@b.io", ""}},
                                                             {"docker.io", {"store@https://index.docker.io/v1/", ""}}}));
  EXPECT_EQ(asked.size(), 4u);
  auto unknown = credentials_for(config, "config.json", {"a.io"},
                                 [](const std::string&, const std::string&) { return RegistryCredential{}; });
  EXPECT_EQ(unknown.at("a.io").auth, "YTpi");
}

TEST(RegistryAuth, ACredentialHelperIsRunAsDockerRunsIt) {
  char dir_template[] = "/tmp/kbuild-helper-XXXXXX";
  std::string dir = ::mkdtemp(dir_template);
  std::string script = dir + "/docker-credential-fake";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread server\n"
           "if [ \"$server\" = reg.io ]; then echo '{\"ServerURL\":\"reg.io\",\"Username\":\"u\",\"Secret\":\"p\"}';"
           " elif [ \"$server\" = token.io ]; then echo '{\"ServerURL\":\"token.io\",\"Username\":\"<token>\",\"Secret\":\"rt\"}';"
           " else echo 'credentials not found in native keychain'; exit 1; fi\n";
  }
  ::chmod(script.c_str(), 0755);
  std::string path = dir + ":" + (std::getenv("PATH") ? std::getenv("PATH") : "");
  ::setenv("PATH", path.c_str(), 1);
  EXPECT_EQ(run_credential_helper("fake", "reg.io"), (RegistryCredential{"dTpw", ""}));  // base64 of u:p
  // docker's mark of an identity token: the user name "<token>".
  EXPECT_EQ(run_credential_helper("fake", "token.io"), (RegistryCredential{"", "rt"}));
  EXPECT_TRUE(run_credential_helper("fake", "other.io").empty());
  EXPECT_THROW(run_credential_helper("missing-helper", "reg.io"), Error);
  EXPECT_THROW(run_credential_helper("../evil", "reg.io"), Error);
  // store and erase: what docker login and logout send a helper.
  std::string saved = dir + "/saved";
  {
    std::ofstream out(dir + "/docker-credential-keeper");
    out << "#!/bin/sh\ncat > " << saved << ".$1\n";
  }
  ::chmod((dir + "/docker-credential-keeper").c_str(), 0755);
  store_in_credential_helper("keeper", "reg.io", "u", "p");
  std::ifstream stored(saved + ".store");
  nlohmann::json entry = nlohmann::json::parse(stored);
  EXPECT_EQ(entry, (nlohmann::json{{"ServerURL", "reg.io"}, {"Username", "u"}, {"Secret", "p"}}));
  erase_from_credential_helper("keeper", "reg.io");
  std::ifstream erased(saved + ".erase");
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(erased), {}), "reg.io");
  std::remove((saved + ".store").c_str());
  std::remove((saved + ".erase").c_str());
  std::remove((dir + "/docker-credential-keeper").c_str());
  std::remove(script.c_str());
  ::rmdir(dir.c_str());
}

TEST(RegistryAuth, LoginKeepsOtherSettingsAndLogoutRemovesEveryKeyOfTheRegistry) {
  std::string config = R"({"auths": {"https://index.docker.io/v1/": {"auth": "b2xk"}, "x.io": {"auth": "eA=="}},
                           "psFormat": "table"})";
  std::string in = with_login(config, "c", "docker.io", {"bmV3", ""});
  nlohmann::json written = nlohmann::json::parse(in);
  EXPECT_EQ(written["auths"]["https://index.docker.io/v1/"]["auth"], "bmV3");
  EXPECT_EQ(written["auths"]["x.io"]["auth"], "eA==");
  EXPECT_EQ(written["psFormat"], "table");
  bool removed = false;
  nlohmann::json out = nlohmann::json::parse(with_login(in, "c", "docker.io", {}, &removed));
  EXPECT_TRUE(removed);
  EXPECT_FALSE(out["auths"].contains("https://index.docker.io/v1/"));
  with_login(out.dump(), "c", "docker.io", {}, &removed);
  EXPECT_FALSE(removed);
  EXPECT_EQ(nlohmann::json::parse(with_login("", "c", "localhost:5000", {"YQ==", ""}))["auths"]["localhost:5000"]["auth"], "YQ==");
  // A helper keeps the secret; config.json only marks the registry, as docker's does.
  nlohmann::json kept = nlohmann::json::parse(with_login(R"({"credsStore": "desktop"})", "c", "docker.io", {"YQ==", ""},
                                                         nullptr, true));
  EXPECT_EQ(kept["auths"]["https://index.docker.io/v1/"], nlohmann::json::object());
  EXPECT_EQ(kept["credsStore"], "desktop");
  // An identity token from the registry is kept as docker keeps it: beside "user:", no password.
  nlohmann::json token = nlohmann::json::parse(with_login("", "c", "t.io", {"dTo=", "refresh"}));
  EXPECT_EQ(token["auths"]["t.io"], (nlohmann::json{{"auth", "dTo="}, {"identitytoken", "refresh"}}));
  EXPECT_EQ(credentials_for(token.dump(), "c", {"t.io"}).at("t.io"), (RegistryCredential{"dTo=", "refresh"}));
  EXPECT_EQ(credential_helper_of(R"({"credsStore": "desktop", "credHelpers": {"a.io": "pass"}})", "a.io"), "pass");
  EXPECT_EQ(credential_helper_of(R"({"credsStore": "desktop"})", "b.io"), "desktop");
  EXPECT_EQ(credential_helper_of("{}", "b.io"), "");
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
