// Image references, held to distribution/reference's grammar and Docker's normalisation.
#include "engine/image/reference.h"

#include <gtest/gtest.h>

#include <utility>
#include <vector>

#include "common/error.h"

namespace kbuild::image {
namespace {

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

TEST(Reference, FollowsCurrentDockerOnUpperCaseFirstComponentsAndOddDomains) {
  // An upper-case first component can only be a registry (splitDockerDomain).
  Reference upper = parse_reference("UPPER/x:1");
  EXPECT_EQ(upper.domain, "UPPER");
  EXPECT_EQ(upper.path, "x");
  EXPECT_EQ(upper.str(), "UPPER/x:1");
  EXPECT_EQ(upper.familiar(), "UPPER/x:1");
  EXPECT_EQ(normalize_reference("Registry.Example:5000/team/app"), "Registry.Example:5000/team/app:latest");
  // A first component with a dot that is no host name still reads as a path component.
  EXPECT_EQ(normalize_reference("under_score.example/x"), "under_score.example/x:latest");
  EXPECT_EQ(familiar_reference("under_score.example/x"), "under_score.example/x:latest");
  // A name alone that looks like host:port is a Docker Hub name with a tag.
  EXPECT_EQ(normalize_reference("localhost:5000"), "docker.io/library/localhost:5000");
  EXPECT_EQ(normalize_reference("alpine:Tag_1.0-x"), "docker.io/library/alpine:Tag_1.0-x");
  EXPECT_EQ(normalize_reference("alpine:" + std::string(128, 't')), "docker.io/library/alpine:" + std::string(128, 't'));
  // The 255-character limit is on the path, not on the domain too.
  EXPECT_EQ(normalize_reference(std::string(247, 'a')), "docker.io/library/" + std::string(247, 'a') + ":latest");
  EXPECT_EQ(normalize_reference("example.com/" + std::string(255, 'a')), "example.com/" + std::string(255, 'a') + ":latest");
  std::string sha512 = "sha512:" + std::string(128, 'f');
  EXPECT_EQ(normalize_reference("a@" + sha512), "docker.io/library/a@" + sha512);
}

// Every invalid form, with the exact message docker prints for it (ParseNormalizedNamed).
TEST(Reference, RefusesWhatDockerRefusesInItsWords) {
  const std::string format = "invalid reference format";
  const std::string hex64(64, 'a');
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", format},
      {" ", format},
      {":", format},
      {":tag", format},
      {"alpine:", format},
      {"alpine:-x", format},
      {"alpine:tag with space", format},
      {"alpine:" + std::string(129, 't'), format},
      {"bad tag", format},
      {"Bad Tag", format + ": repository name (library/Bad Tag) must be lowercase"},
      {"Alpine", format + ": repository name (library/Alpine) must be lowercase"},
      {"me/App:1", format + ": repository name (me/App) must be lowercase"},
      {"localhost:5000/Foo", format + ": repository name (Foo) must be lowercase"},
      {"\xc3\x89", format + ": repository name (library/\xc3\x89) must be lowercase"},  // É
      {"\xff", format + ": repository name (library/\xff) must be lowercase"},          // not UTF-8
      {"\xc3\xa9", format},                                                           // é
      {"A_B/foo", "repository name must be lowercase"},
      {"alpine:\xe2\x84\xaa", "repository name must be lowercase"},  // a Kelvin sign lowers to "k"
      {"a/", format},
      {"/a", format},
      {"a//b", format},
      {"app\nevil", format},
      {"me\\app", format},
      {"a,b", format},
      {"../app", format},
      {"me/../app", format},
      {"a..b/c", format},
      {"me/-app", format},
      {"me/app_", format},
      {"me/a___b", format},
      {"bad host!/x", format},
      {"host:port/x", format},
      {"[::1/app", format},
      {"alpine@", format},
      {"alpine@sha256:abc", format},
      {"alpine@sha256:" + std::string(64, 'g'), format},
      {"alpine@sha256:" + std::string(63, 'a'), "invalid checksum digest length"},
      {"alpine@sha256:" + std::string(65, 'a'), "invalid checksum digest length"},
      {"alpine@sha256:" + std::string(64, 'A'), "invalid checksum digest format"},
      {"alpine@md5:" + std::string(32, 'a'), "unsupported digest algorithm"},
      {"alpine:1@MD5:" + std::string(32, 'a'), "invalid checksum digest format"},
      {"alpine@MD5:" + std::string(32, 'a'), format + ": repository name (library/alpine@MD5) must be lowercase"},
      {hex64, "invalid repository name (" + hex64 + "), cannot specify 64-byte hexadecimal strings"},
      {std::string(248, 'a'), "repository name must not be more than 255 characters"},
      {"me/" + std::string(253, 'a'), "repository name must not be more than 255 characters"},
  };
  for (const auto& [text, message] : cases) EXPECT_EQ(error_of(text), message) << "[" << text << "]";
}

TEST(Reference, ImageReferencesAlsoTakeIdsAndDigests) {
  check_image_reference(std::string(64, 'a'));
  check_image_reference("sha256:" + std::string(64, 'a'));
  check_image_reference("abc123");  // an ID prefix reads as a name
  check_image_reference("alpine");
  auto error = [](const std::string& text) {
    try {
      check_image_reference(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error("Bad"), "invalid reference format: repository name (library/Bad) must be lowercase");
  EXPECT_EQ(error("a//b"), "invalid reference format");
  EXPECT_EQ(error(""), "invalid reference format");
}

// buildx checks -t with reference.Parse (no normalisation), then the exporter normalises.
TEST(Reference, BuildTagsAreRefusedInBuildxWords) {
  auto error = [](const std::string& text) {
    try {
      check_build_tag(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_EQ(error("app:1"), "");
  EXPECT_EQ(error("UPPER/x:1"), "");
  EXPECT_EQ(error("Bad"), "invalid tag \"Bad\": repository name must be lowercase");
  EXPECT_EQ(error("me/Upper"), "invalid tag \"me/Upper\": repository name must be lowercase");
  EXPECT_EQ(error("Bad Tag"), "invalid tag \"Bad Tag\": invalid reference format");
  EXPECT_EQ(error(""), "invalid tag \"\": repository name must have at least one component");
  EXPECT_EQ(error("a:" + std::string(129, 't')), "invalid tag \"a:" + std::string(129, 't') + "\": invalid reference format");
  EXPECT_EQ(error("a@sha256:" + std::string(63, 'a')),
            "invalid tag \"a@sha256:" + std::string(63, 'a') + "\": invalid checksum digest length");
  std::string hex64(64, 'b');
  EXPECT_EQ(error(hex64), "invalid tag \"" + hex64 + "\": invalid repository name (" + hex64 +
                              "), cannot specify 64-byte hexadecimal strings");
  std::string long_name(250, 'a');  // a path of 250 to Parse, of 258 once library/ is added
  EXPECT_EQ(error(long_name), "invalid tag \"" + long_name + "\": repository name must not be more than 255 characters");
}

TEST(Reference, OutputNamesAreAListForImagesAndOneNameForArchives) {
  EXPECT_EQ(output_image_names("image", "a,,b:1,"), (std::vector<std::string>{"a", "b:1"}));
  EXPECT_EQ(output_image_names("registry", ""), std::vector<std::string>{});
  EXPECT_EQ(output_image_names("oci", "a,b"), std::vector<std::string>{"a,b"});
  EXPECT_EQ(output_image_names("local", "a"), std::vector<std::string>{});
}

}  // namespace
}  // namespace kbuild::image
