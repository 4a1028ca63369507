#include <fnmatch.h>

#include <map>
#include <set>

#include <gtest/gtest.h>

#include "engine/dockerfile/convert.h"
#include "engine/solver/scheduler.h"
#include "engine/store/digest.h"

namespace kbuild::solver {
namespace {

using graph::Definition;
using graph::OpIndex;

// A build context in memory: path → contents.
using Files = std::map<std::string, std::string>;

bool matches(const std::string& pattern, const std::string& path) {
  return ::fnmatch(pattern.c_str(), path.c_str(), 0) == 0;
}

// Whether `path` is `selector` or lies under it ("." selects everything).
bool selected(const std::string& selector, const std::string& path, std::string& relative) {
  std::string dir = selector;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir == "." || dir.empty()) {
    relative = path;
    return true;
  }
  if (path == dir) {
    relative = path.substr(path.rfind('/') + 1);
    return true;
  }
  if (path.starts_with(dir + "/")) {
    relative = path.substr(dir.size() + 1);
    return true;
  }
  if (matches(dir, path)) {
    relative = path;
    return true;
  }
  return false;
}

// The checksum of what a selection picks from the files: their paths and contents, as the
// worker's checksum is of what a copy or a mount reads. Excludes match the path as written
// or relative to the selected directory.
std::string checksum(const Files& files, const Selection& selection) {
  std::string picked;
  for (const auto& [path, contents] : files) {
    bool in = false, out = false;
    for (const std::string& selector : selection.paths) {
      std::string relative;
      if (!selected(selector, path, relative)) continue;
      in = true;
      for (const std::string& exclude : selection.excludes) {
        out = out || matches(exclude, relative) || matches(exclude, path);
      }
    }
    if (in && !out) picked += path + '\0' + contents + '\0';
  }
  return store::Digest::of(picked).str();
}

// Every op's cache key, the context being `files`.
std::vector<std::string> keys_on(const Definition& d, const Files& files) {
  return cache_keys(d.graph, d.root, [&](const graph::SourceOp& source, const Selection& selection) {
    EXPECT_EQ(source.name, "context");
    return checksum(files, selection);
  });
}

// The cache key of each named step of a Dockerfile built on `files`.
std::map<std::string, std::string> step_keys(const std::string& dockerfile, const Files& files,
                                             dockerfile::ConvertOptions options = {}) {
  Definition d = dockerfile::convert_dockerfile(dockerfile, options);
  std::vector<std::string> keys = keys_on(d, files);
  std::map<std::string, std::string> out;
  for (OpIndex i : d.graph.closure(d.root)) {
    const std::string& name = d.graph.op(i).metadata.name;
    if (!name.empty()) out[name] = keys[i];
  }
  return out;
}

// The steps of `after` whose key is not the one the same step has in `before` (a step with a
// new name is changed).
std::set<std::string> changed(const std::map<std::string, std::string>& before,
                              const std::map<std::string, std::string>& after) {
  std::set<std::string> out;
  for (const auto& [name, key] : after) {
    auto it = before.find(name);
    if (it == before.end() || it->second != key) out.insert(name);
  }
  return out;
}

// Two stages on scratch, a third on the first, reading the context by COPY, COPY --link and a
// RUN bind mount; metadata (ENV, LABEL) between the steps.
std::string a_dockerfile(const std::string& env = "fast", const std::string& label = "1",
                         const std::string& run = "/tools/build.sh") {
  return "ARG UNUSED_GLOBAL=1\n"
         "FROM scratch AS base\n"
         "WORKDIR /src\n"
         "COPY a.txt ./\n"
         "COPY --exclude=*.md docs/ /docs/\n"
         "ENV MODE=" + env + "\n"
         "LABEL version=" + label + "\n"
         "RUN --mount=type=bind,source=tools,target=/tools " + run + "\n"
         "FROM scratch AS second\n"
         "COPY b.txt /b.txt\n"
         "FROM base\n"
         "COPY --link c.txt /c.txt\n"
         "COPY --from=second /b.txt /b.txt\n";
}

Files some_files() {
  return {{"a.txt", "a"},          {"b.txt", "b"},           {"c.txt", "c"},
          {"docs/guide.txt", "g"}, {"docs/README.md", "r"}, {"tools/build.sh", "#!/bin/sh\n"},
          {"unread.txt", "u"}};
}

const std::string kWorkdir = "[base 1/4] WORKDIR /src";
const std::string kCopyA = "[base 2/4] COPY a.txt ./";
const std::string kCopyDocs = "[base 3/4] COPY --exclude=*.md docs/ /docs/";
const std::string kRun = "[base 4/4] RUN --mount=type=bind,source=tools,target=/tools /tools/build.sh";
const std::string kCopyB = "[second 1/1] COPY b.txt /b.txt";
const std::string kLink = "[stage-2 1/2] COPY --link c.txt /c.txt";
const std::string kFromSecond = "[stage-2 2/2] COPY --from=second /b.txt /b.txt";

class CacheKeys : public ::testing::Test {
 protected:
  const std::map<std::string, std::string> before = step_keys(a_dockerfile(), some_files());

  std::set<std::string> after_file(const std::string& path, const std::string& contents) {
    Files files = some_files();
    files[path] = contents;
    return changed(before, step_keys(a_dockerfile(), files));
  }
};

TEST_F(CacheKeys, NameEveryStep) {
  std::set<std::string> names;
  for (const auto& [name, key] : before) names.insert(name);
  EXPECT_EQ(names, (std::set<std::string>{kWorkdir, kCopyA, kCopyDocs, kRun, kCopyB, kLink, kFromSecond}));
  std::set<std::string> keys;
  for (const auto& [name, key] : before) keys.insert(key);
  EXPECT_EQ(keys.size(), before.size()) << "two steps share a key";
}

TEST_F(CacheKeys, AreTheSameForTheSameDockerfileAndContext) {
  EXPECT_EQ(step_keys(a_dockerfile(), some_files()), before);
  EXPECT_TRUE(changed(before, step_keys(a_dockerfile(), some_files())).empty());
}

TEST_F(CacheKeys, AFileOnlyTheSecondStageCopiesChangesThatCopyAndWhatReadsIt) {
  EXPECT_EQ(after_file("b.txt", "b2"), (std::set<std::string>{kCopyB, kFromSecond}));
}

TEST_F(CacheKeys, AFileNoStepReadsChangesNothing) {
  EXPECT_EQ(after_file("docs/README.md", "excluded"), std::set<std::string>{});
  EXPECT_EQ(after_file("unread.txt", "unread"), std::set<std::string>{});
  EXPECT_EQ(after_file("new.txt", "new"), std::set<std::string>{});
}

TEST_F(CacheKeys, AFileACopyReadsChangesItAndEverythingAfterIt) {
  EXPECT_EQ(after_file("docs/guide.txt", "g2"), (std::set<std::string>{kCopyDocs, kRun, kLink, kFromSecond}));
  EXPECT_EQ(after_file("docs/new.txt", "n"), (std::set<std::string>{kCopyDocs, kRun, kLink, kFromSecond}));
}

TEST_F(CacheKeys, WhatABindMountReadsChangesTheRun) {
  EXPECT_EQ(after_file("tools/build.sh", "#!/bin/sh\nmake\n"), (std::set<std::string>{kRun, kLink, kFromSecond}));
}

TEST_F(CacheKeys, TheRunsCommandChangesTheRun) {
  auto after = step_keys(a_dockerfile("fast", "1", "/tools/build.sh --all"), some_files());
  const std::string run_all = kRun + " --all";
  EXPECT_EQ(changed(before, after), (std::set<std::string>{run_all, kLink, kFromSecond}));
  EXPECT_NE(after.at(run_all), before.at(kRun));
}

TEST_F(CacheKeys, AnEnvValueChangesTheRunAfterItNotTheCopiesBefore) {
  EXPECT_EQ(changed(before, step_keys(a_dockerfile("slow"), some_files())),
            (std::set<std::string>{kRun, kLink, kFromSecond}));
}

TEST_F(CacheKeys, ALabelChangesNoKey) {
  EXPECT_EQ(step_keys(a_dockerfile("fast", "2"), some_files()), before);
}

TEST_F(CacheKeys, ALinkedCopyKeepsItsOwnKeyWhenWhatItIsLinkedOntoChanges) {
  auto linked_layer_key = [](const std::string& a_contents) {
    Files files = some_files();
    files["a.txt"] = a_contents;
    Definition d = dockerfile::convert_dockerfile(a_dockerfile(), {});
    std::vector<std::string> keys = keys_on(d, files);
    for (OpIndex i : d.graph.closure(d.root)) {
      const graph::Op& op = d.graph.op(i);
      if (op.metadata.name != kLink) continue;
      const auto& merge = std::get<graph::MergeOp>(op.body);
      EXPECT_TRUE(d.graph.op(merge.inputs.at(1)).metadata.name.empty());
      return keys[merge.inputs.at(1)];
    }
    ADD_FAILURE() << "no " << kLink;
    return std::string();
  };
  EXPECT_EQ(linked_layer_key("a2"), linked_layer_key("a"));
  EXPECT_EQ(after_file("a.txt", "a2"), (std::set<std::string>{kCopyA, kCopyDocs, kRun, kLink, kFromSecond}));
}

TEST_F(CacheKeys, ABuildArgNobodyUsesChangesNothing) {
  dockerfile::ConvertOptions options;
  options.resolve.build_args = {{"NOT_DECLARED", "2"}, {"UNUSED_GLOBAL", "2"}};
  EXPECT_EQ(step_keys(a_dockerfile(), some_files(), options), before);
}

TEST(CacheKey, ChangesWithTheImageABaseIsPinnedTo) {
  auto keys = [](const std::string& pinned) {
    dockerfile::ConvertOptions options;
    options.resolve_image = [pinned](const std::string&, const std::string&) {
      return graph::ResolvedImage{{}, pinned};
    };
    return step_keys("FROM alpine\nCOPY a.txt /\nRUN make\n", some_files(), options);
  };
  const std::string one = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
  const std::string two = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
  EXPECT_EQ(keys(one), keys(one));
  std::map<std::string, std::string> a = keys(one), b = keys(two);
  ASSERT_EQ(a.size(), 3u);
  for (const auto& [name, key] : a) EXPECT_NE(b.at(name), key) << name;
}

// The key of a trivial build, written out: a change to how keys are made shows here. When the
// format changes on purpose, its version ("v" in cache_keys) goes up and this value is updated
// with it, since every key recorded before no longer matches. It is the digest of the compact
// JSON {"content":[checksum],"op":<the copy's definition, inputs by key>,"v":3}; the checksum
// here is a stand-in, so only "v" moved it from v2's 8e241b65… (v3: context owners reset to 0).
TEST(CacheKey, OfATrivialBuildIsPinned) {
  Definition d = dockerfile::convert_dockerfile("FROM scratch\nCOPY a /a\n", {});
  std::vector<std::string> keys = cache_keys(d.graph, d.root, [](const graph::SourceOp&, const Selection& selection) {
    EXPECT_EQ(selection.paths, std::vector<std::string>{"a"});
    return std::string("sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  });
  EXPECT_EQ(keys[d.root], "sha256:4106d4a21ca078ded62822b46feeaf6c68bc16d0cd2c5ebb696d119d885a33f4");
}

}  // namespace
}  // namespace kbuild::solver
