#include "engine/store/digest.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::store {
namespace {

TEST(Digest, OfEmptyStringIsTheWellKnownValue) {
  EXPECT_EQ(Digest::of("").str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Digest, StreamingEqualsOneShot) {
  Sha256 hasher;
  hasher.update("hello ");
  hasher.update("world");
  EXPECT_EQ(hasher.finish(), Digest::of("hello world"));
}

TEST(Digest, CopiedHasherGoesOnIndependently) {
  Sha256 hasher;
  hasher.update("shared prefix, ");
  Sha256 twin = hasher.copy();
  hasher.update("one end");
  twin.update("another end");
  EXPECT_EQ(hasher.finish(), Digest::of("shared prefix, one end"));
  EXPECT_EQ(twin.finish(), Digest::of("shared prefix, another end"));
}

TEST(Digest, ParseAcceptsOnlyCanonicalSha256) {
  std::string hex(64, 'a');
  EXPECT_EQ(Digest::parse("sha256:" + hex).hex(), hex);
  EXPECT_THROW(Digest::parse("sha256:" + std::string(63, 'a')), Error);
  EXPECT_THROW(Digest::parse("sha256:" + std::string(64, 'A')), Error);
  EXPECT_THROW(Digest::parse("sha512:" + hex), Error);
  EXPECT_THROW(Digest::parse("sha256:../../etc/passwd" + std::string(41, 'a')), Error);
}

}  // namespace
}  // namespace kbuild::store
