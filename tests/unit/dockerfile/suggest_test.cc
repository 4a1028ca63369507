#include "engine/dockerfile/suggest.h"

#include <gtest/gtest.h>

namespace kbuild::dockerfile {
namespace {

const std::vector<std::string> kNames = {"RUN", "COPY", "ADD", "FROM", "WORKDIR"};

TEST(Suggest, CloseMisspellingGetsTheNameInTheInputsCase) {
  EXPECT_EQ(suggest_name("RNU", kNames, false), "RUN");
  EXPECT_EQ(suggest_name("rnu", kNames, false), "run");
  EXPECT_EQ(suggest_name("Cpoy", kNames, false), "copy");
}

TEST(Suggest, NothingWhenTooFarOrExact) {
  EXPECT_FALSE(suggest_name("HELLO", kNames, false));
  EXPECT_FALSE(suggest_name("run", kNames, false));  // valid: the error is about something else
}

TEST(Suggest, CaseSensitiveSearchTreatsCaseAsDifference) {
  EXPECT_EQ(suggest_name("Build", {"build", "test"}, true), "build");
  EXPECT_EQ(suggest_name("builder", {"build", "Builder"}, true), "Builder");
}

TEST(Suggest, WithSuggestionAppendsTheHint) {
  EXPECT_EQ(with_suggestion("unknown instruction: RNU", "RNU", kNames, false),
            "unknown instruction: RNU (did you mean RUN?)");
  EXPECT_EQ(with_suggestion("unknown instruction: XYZZY", "XYZZY", kNames, false), "unknown instruction: XYZZY");
}

}  // namespace
}  // namespace kbuild::dockerfile
