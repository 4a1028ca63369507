#include "engine/dockerfile/syntax.h"

#include <gtest/gtest.h>

namespace kbuild::dockerfile {
namespace {

TEST(Syntax, DockerfileFrontendNamesSelectTheBuiltInOne) {
  EXPECT_EQ(parse_frontend_reference("docker/dockerfile:1").version, "1");
  EXPECT_EQ(parse_frontend_reference("docker/dockerfile:1.7").version, "1.7");
  EXPECT_EQ(parse_frontend_reference("docker/dockerfile:1.7.1").version, "1.7.1");
  EXPECT_EQ(parse_frontend_reference("docker.io/docker/dockerfile:1").version, "1");
  EXPECT_EQ(parse_frontend_reference("docker/dockerfile").version, "");
  EXPECT_TRUE(parse_frontend_reference("docker/dockerfile:labs").labs);
  EXPECT_TRUE(parse_frontend_reference("docker/dockerfile:1.7-labs").labs);
  EXPECT_EQ(parse_frontend_reference("docker/dockerfile:1@sha256:" + std::string(64, 'a')).version, "1");
}

TEST(Syntax, OtherFrontendsAreRefusedByName) {
  try {
    parse_frontend_reference("example.com/my/frontend:2");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_NE(std::string(e.what()).find("\"example.com/my/frontend:2\""), std::string::npos);
  }
  EXPECT_THROW(parse_frontend_reference("docker/dockerfile:2"), Error);
  EXPECT_THROW(parse_frontend_reference("tonistiigi/dockerfile:1"), Error);
}

TEST(Syntax, BuildArgOverridesTheDirective) {
  ParsedDockerfile parsed = parse_dockerfile("# syntax=docker/dockerfile:1.4\nFROM scratch\n");
  EXPECT_EQ(choose_frontend(parsed, {}).version, "1.4");
  EXPECT_EQ(choose_frontend(parsed, {{"BUILDKIT_SYNTAX", "docker/dockerfile:1.6"}}).version, "1.6");
  EXPECT_THROW(choose_frontend(parsed, {{"BUILDKIT_SYNTAX", "evil/frontend"}}), Error);
}

TEST(Syntax, NoDirectiveMeansTheBuiltInFrontend) {
  FrontendChoice choice = choose_frontend(parse_dockerfile("FROM scratch\n"), {});
  EXPECT_EQ(choice.requested, "");
  EXPECT_FALSE(choice.labs);
}

}  // namespace
}  // namespace kbuild::dockerfile
