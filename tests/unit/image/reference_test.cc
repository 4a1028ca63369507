// Image references, held to distribution/reference's grammar and Docker's normalisation.
#include "engine/image/reference.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::image {
namespace {

using ::testing::HasSubstr;

std::string error_of(std::string_view text) {
  try {
    parse_reference(text);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Reference, NormalizesAsDocker) {
  EXPECT_EQ(normalize_reference("alpine"), "docker.io/library/alpine:latest");
  EXPECT_EQ(normalize_reference("alpine:3.20"), "docker.io/library/alpine:3.20");
  EXPECT_EQ(normalize_reference("me/app"), "docker.io/me/app:latest");
  EXPECT_EQ(normalize_reference("user/app:v1"), "docker.io/user/app:v1");
  EXPECT_EQ(normalize_reference("index.docker.io/library/alpine"), "docker.io/library/alpine:latest");
  EXPECT_EQ(normalize_reference("localhost/app"), "localhost/app:latest");
  EXPECT_EQ(normalize_reference("localhost:5000/app"), "localhost:5000/app:latest");
  EXPECT_EQ(normalize_reference("registry.example/app:1"), "registry.example/app:1");
  EXPECT_EQ(normalize_reference("[::1]:5000/app"), "[::1]:5000/app:latest");
  std::string digest = "sha256:" + std::string(64, 'a');
  EXPECT_EQ(normalize_reference("alpine@" + digest), "docker.io/library/alpine@" + digest);
  EXPECT_EQ(normalize_reference("ghcr.io/o/r:t@" + digest), "ghcr.io/o/r:t@" + digest);
  EXPECT_EQ(normalize_reference("me/a.b-c__d---e_f"), "docker.io/me/a.b-c__d---e_f:latest");
  EXPECT_EQ(normalize_reference("my-registry.example:443/a/b/c"), "my-registry.example:443/a/b/c:latest");
}

TEST(Reference, FamiliarFormDropsTheDefaultDomainAndLibrary) {
  EXPECT_EQ(familiar_reference("docker.io/library/alpine:3.20"), "alpine:3.20");
  EXPECT_EQ(familiar_reference("docker.io/user/app"), "user/app:latest");
  EXPECT_EQ(familiar_reference("docker.io/library/a/b"), "library/a/b:latest");
  EXPECT_EQ(familiar_reference("registry:5000/x/y:tag"), "registry:5000/x/y:tag");
}

TEST(Reference, RefusesWhatDockerRefuses) {
  EXPECT_EQ(error_of("Alpine"), "invalid reference format: repository name (library/Alpine) must be lowercase");
  EXPECT_EQ(error_of("me/App:1"), "invalid reference format: repository name (me/App) must be lowercase");
  for (const char* bad : {"", ":tag", "alpine:", "alpine:-x", "a//b", "/a", "a/", "a..b/c/", "me/-app", "me/app_",
                          "me/a___b", "bad host!/x", "under_score.example/x", "host:port/x", "alpine:" "tag with space"}) {
    EXPECT_THAT(error_of(bad), HasSubstr("invalid reference format")) << bad;
  }
  EXPECT_EQ(error_of("alpine:" + std::string(129, 't')), "invalid reference format");
  EXPECT_EQ(error_of(std::string(64, 'a')),
            "invalid repository name (" + std::string(64, 'a') + "), cannot specify 64-byte hexadecimal strings");
  EXPECT_EQ(error_of("alpine@sha256:abc"), "invalid checksum digest length");
  EXPECT_EQ(error_of("alpine@md5:" + std::string(32, 'a')), "unsupported digest algorithm");
  EXPECT_EQ(error_of("alpine@sha256:" + std::string(64, 'G')), "invalid checksum digest format");
  EXPECT_EQ(error_of("me/" + std::string(300, 'a')), "repository name must not be more than 255 characters");
}

}  // namespace
}  // namespace kbuild::image
