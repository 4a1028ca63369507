#include "engine/dockerfile/run_mount.h"

#include <gtest/gtest.h>

#include "common/error.h"

namespace kbuild::dockerfile {
namespace {

RunMount expanded(std::string_view spec) {
  WordExpander identity = [](const std::string& s) { return s; };
  return parse_run_mount(spec, &identity);
}

std::string error_of(std::string_view spec) {
  try {
    expanded(spec);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RunMount, DefaultsToAReadOnlyBindMount) {
  RunMount m = expanded("target=/src");
  EXPECT_EQ(m.type, MountType::bind);
  EXPECT_TRUE(m.read_only);
  EXPECT_EQ(m.target, "/src");
}

TEST(RunMount, CacheAndTmpfsAreWritableByDefault) {
  EXPECT_FALSE(expanded("type=cache,target=/c").read_only);
  EXPECT_FALSE(expanded("type=tmpfs,target=/t").read_only);
  EXPECT_TRUE(expanded("type=cache,target=/c,ro").read_only);
  EXPECT_FALSE(expanded("type=bind,rw,target=/b").read_only);
}

TEST(RunMount, CacheOptionsAreParsed) {
  RunMount m = expanded("type=cache,id=go,target=/root/.cache,sharing=locked,mode=0700,uid=1000,gid=1000,from=base,source=/s");
  EXPECT_EQ(m.cache_id, "go");
  EXPECT_EQ(m.sharing, CacheSharing::locked);
  EXPECT_EQ(m.mode, 0700u);
  EXPECT_EQ(m.uid, 1000u);
  EXPECT_EQ(m.gid, 1000u);
  EXPECT_EQ(m.from, "base");
  EXPECT_EQ(m.source, "/s");
}

TEST(RunMount, KeyAliasesAreAccepted) {
  RunMount m = expanded("type=bind,src=a,dst=/b");
  EXPECT_EQ(m.source, "a");
  EXPECT_EQ(m.target, "/b");
  EXPECT_EQ(expanded("destination=/c").target, "/c");
}

TEST(RunMount, TmpfsSizeIsInBytes) { EXPECT_EQ(expanded("type=tmpfs,target=/t,size=64m").size_limit, 64 << 20); }

TEST(RunMount, SecretAndSshTakeRequiredAndEnv) {
  RunMount secret = expanded("type=secret,id=token,env=TOKEN,required");
  EXPECT_TRUE(secret.required);
  EXPECT_EQ(secret.env, "TOKEN");
  EXPECT_TRUE(secret.read_only);
  EXPECT_TRUE(expanded("type=ssh,required=true").required);
}

TEST(RunMount, ErrorsReadLikeBuildKits) {
  EXPECT_EQ(error_of("type=cahce,target=/c"), "unsupported mount type \"cahce\" (did you mean cache?)");
  EXPECT_EQ(error_of("type=cache,sharing=privat"), "unsupported sharing value \"privat\" (did you mean private?)");
  EXPECT_EQ(error_of("type=bind,mode=0755"), "mode not allowed for \"bind\" type mounts");
  EXPECT_EQ(error_of("type=tmpfs,uid=1"), "uid not allowed for \"tmpfs\" type mounts");
  EXPECT_EQ(error_of("type=bind,required"), "unexpected key 'required' for mount type 'bind'");
  EXPECT_EQ(error_of("type=cache,size=1m"), "unexpected key 'size' for mount type 'cache'");
  EXPECT_EQ(error_of("type=secret,from=x,id=a"), "secret mount should not have a from");
  EXPECT_EQ(error_of("type=secret"), "invalid secret mount. one of source, target required");
  EXPECT_EQ(error_of("type=secret,source=a,id=b"), "both source and id can't be set");
  EXPECT_EQ(error_of("type=bind,sharing=shared"), "invalid cache sharing set for bind mount");
  EXPECT_EQ(error_of("type=cache,mode=abc"), "invalid value abc for mode");
  EXPECT_EQ(error_of("type=bind,ro=maybe"), "invalid value for ro: maybe");
  EXPECT_EQ(error_of("type=bind,bogus"), "invalid field 'bogus' must be a key=value pair");
  EXPECT_EQ(error_of("type=bind,targt=/x"), "unexpected key 'targt' in 'targt=/x' (did you mean target?)");
  EXPECT_EQ(error_of("type=bind,\"x"), "failed to parse csv mounts: extraneous or missing \" in quoted-field");
}

TEST(RunMount, FirstPassOnlyChecksWhatNeedsNoExpansion) {
  RunMount m = parse_run_mount("type=$T,from=base,target=$DIR", nullptr);
  EXPECT_EQ(m.from, "base");
  EXPECT_EQ(m.target, "");
  EXPECT_THROW(parse_run_mount("from=$STAGE", nullptr), Error);
  EXPECT_NO_THROW(parse_run_mount("from=stage$", nullptr));
}

TEST(RunMount, SecondPassExpandsEveryValue) {
  WordExpander expand = [](const std::string& s) { return s == "$DIR" ? std::string("/expanded") : s; };
  EXPECT_EQ(parse_run_mount("type=cache,target=$DIR", &expand).target, "/expanded");
}

}  // namespace
}  // namespace kbuild::dockerfile
