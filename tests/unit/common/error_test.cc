#include "common/error.h"

#include <gtest/gtest.h>

namespace kbuild {
namespace {

TEST(Error, ContextIsPrefixedOnceAndKeepsKindAndLocation) {
  Error error(ErrorKind::not_found, "manifest unknown", SourceRange{3, 4});
  Error wrapped = error.with_context("pulling docker.io/library/alpine:3.20");
  EXPECT_STREQ(wrapped.what(), "pulling docker.io/library/alpine:3.20: manifest unknown");
  EXPECT_EQ(wrapped.kind(), ErrorKind::not_found);
  ASSERT_TRUE(wrapped.where().has_value());
  EXPECT_EQ(*wrapped.where(), (SourceRange{3, 4}));
}

TEST(Error, AtDoesNotReplaceAnExistingLocation) {
  Error located(ErrorKind::user, "bad", SourceRange{2, 2});
  EXPECT_EQ(*located.at(SourceRange{9, 9}).where(), (SourceRange{2, 2}));
  Error unlocated(ErrorKind::user, "bad");
  EXPECT_EQ(*unlocated.at(SourceRange{9, 9}).where(), (SourceRange{9, 9}));
}

TEST(Error, ThrowUserErrorThrowsAUserError) {
  try {
    throw_user_error("no", SourceRange{1, 1});
    FAIL() << "did not throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::user);
    EXPECT_STREQ(e.what(), "no");
  }
}

}  // namespace
}  // namespace kbuild
