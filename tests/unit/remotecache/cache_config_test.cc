#include "engine/remotecache/cache_config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"

namespace kbuild::remotecache {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string hex(char c) { return std::string(64, c); }
store::Digest digest(char c) { return store::Digest::from_hex(hex(c)); }
std::string key(char c) { return "sha256:" + hex(c); }

constexpr std::string_view kGzip = "application/vnd.oci.image.layer.v1.tar+gzip";

CacheLayer layer(char blob, char diff, int parent, std::string created = "2025-03-01T10:00:00Z") {
  CacheLayer l;
  l.blob.media_type = kGzip;
  l.blob.digest = digest(blob);
  l.blob.size = 100 + (blob - 'a');
  l.diff_id = digest(diff);
  l.created = std::move(created);
  l.parent = parent;
  return l;
}

// Two stages on one base: a (base) <- b <- c, and a <- d; records on each and on an empty tree.
// Already in canonical order.
CacheConfig sample() {
  CacheConfig c;
  c.key_scheme = "kbuild-key-v3";
  c.layers = {layer('a', '1', -1, "2025-03-01T10:00:00.123456789Z"), layer('b', '2', 0), layer('d', '4', 0),
              layer('c', '3', 1)};
  c.records = {{key('5'), 3}, {key('6'), 2}, {key('7'), -1}, {key('8'), 0}};
  return c;
}

// The blobs a record gives, bottom first.
std::vector<std::string> chain_of(const CacheConfig& c, const std::string& k) {
  for (const CacheRecord& r : c.records) {
    if (r.key != k) continue;
    std::vector<std::string> blobs;
    for (int i = r.layer; i >= 0; i = c.layers[static_cast<size_t>(i)].parent) {
      blobs.insert(blobs.begin(), c.layers[static_cast<size_t>(i)].blob.digest.str());
    }
    return blobs;
  }
  ADD_FAILURE() << "no record " << k;
  return {};
}

CacheConfig parse(std::string_view json, std::vector<std::string>* warnings_out = nullptr) {
  std::vector<std::string> warnings;
  CacheConfig c = parse_cache_config(json, warnings);
  if (warnings_out) {
    *warnings_out = warnings;
  } else {
    EXPECT_TRUE(warnings.empty()) << warnings.front();
  }
  return c;
}

std::string error_of(const std::function<void()>& f, ErrorKind kind = ErrorKind::user) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return {};
}

std::string parse_error(std::string_view json) {
  return error_of([&] {
    std::vector<std::string> warnings;
    parse_cache_config(json, warnings);
  });
}

// A config with one well-formed layer, and `layer_json` as a second one.
std::string with_layer(const std::string& layer_json) {
  return R"({"kbuildCache":1,"keyScheme":"s","layers":[{"blob":"sha256:)" + hex('a') +
         R"(","mediaType":"application/vnd.oci.image.layer.v1.tar","size":1,"diffID":"sha256:)" + hex('1') +
         R"(","parent":-1},)" + layer_json + "]}";
}

std::string good_layer(const std::string& replace_member = "", const std::string& with = "") {
  std::map<std::string, std::string> members = {
      {"blob", "\"sha256:" + hex('b') + "\""}, {"mediaType", "\"application/vnd.oci.image.layer.v1.tar+zstd\""},
      {"size", "2"},  {"diffID", "\"sha256:" + hex('2') + "\""},
      {"parent", "0"}};
  if (!replace_member.empty()) {
    if (with.empty()) {
      members.erase(replace_member);
    } else {
      members[replace_member] = with;
    }
  }
  std::string out = "{";
  for (const auto& [k, v] : members) out += (out.size() > 1 ? "," : "") + ("\"" + k + "\":" + v);
  return out + "}";
}

// A config with two layers and `records_json` as its records.
std::string with_records(const std::string& records_json) {
  return R"({"kbuildCache":1,"keyScheme":"s","layers":[{"blob":"sha256:)" + hex('a') +
         R"(","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":1,"diffID":"sha256:)" + hex('1') +
         R"(","parent":-1},{"blob":"sha256:)" + hex('b') +
         R"(","mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":2,"diffID":"sha256:)" +
         hex('2') + R"(","parent":0}],"records":)" + records_json + "}";
}

TEST(CacheConfig, SerializesToPinnedBytes) {
  CacheConfig c;
  c.key_scheme = "kbuild-key-v3";
  c.layers = {layer('a', '1', -1, "2025-03-01T10:00:00.123456789Z"), layer('b', '2', 0, "")};
  c.records = {{key('5'), 1}, {key('6'), -1}};
  EXPECT_EQ(serialize_cache_config(c),
            R"({"kbuildCache":1,"keyScheme":"kbuild-key-v3","layers":[)"
            R"({"blob":"sha256:)" + hex('a') + R"(","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",)"
            R"("size":100,"diffID":"sha256:)" + hex('1') +
                R"(","created":"2025-03-01T10:00:00.123456789Z","parent":-1},)"
            R"({"blob":"sha256:)" + hex('b') + R"(","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",)"
            R"("size":101,"diffID":"sha256:)" + hex('2') + R"(","parent":0}],)"
            R"("records":[{"key":"sha256:)" + hex('5') + R"(","layer":1},)"
            R"({"key":"sha256:)" + hex('6') + R"(","layer":-1}]})");
}

TEST(CacheConfig, RoundTripGivesTheSameConfig) {
  CacheConfig c = sample();
  std::string bytes = serialize_cache_config(c);
  EXPECT_EQ(parse(bytes), c);
  EXPECT_EQ(serialize_cache_config(parse(bytes)), bytes);
}

TEST(CacheConfig, EmptyCacheRoundTrips) {
  CacheConfig c;
  c.key_scheme = "kbuild-key-v3";
  std::string bytes = serialize_cache_config(c);
  EXPECT_EQ(bytes, R"({"kbuildCache":1,"keyScheme":"kbuild-key-v3","layers":[],"records":[]})");
  EXPECT_EQ(parse(bytes), c);
}

TEST(CacheConfig, BytesDoNotDependOnTheOrderLayersAndRecordsCameIn) {
  const CacheConfig canonical = sample();
  const std::string bytes = serialize_cache_config(canonical);
  // The same chains, listed children-last in another order: c(3) <- b <- a, d <- a.
  CacheConfig shuffled;
  shuffled.key_scheme = canonical.key_scheme;
  shuffled.layers = {layer('a', '1', -1, "2025-03-01T10:00:00.123456789Z"), layer('d', '4', 0), layer('b', '2', 0),
                     layer('c', '3', 2)};
  shuffled.records = {{key('8'), 0}, {key('7'), -1}, {key('6'), 1}, {key('5'), 3}};
  EXPECT_EQ(serialize_cache_config(shuffled), bytes);
  // And with the base listed twice, each child on its own copy.
  CacheConfig doubled = shuffled;
  doubled.layers = {layer('a', '1', -1, "2025-03-01T10:00:00.123456789Z"), layer('d', '4', 0),
                    layer('a', '1', -1, "2025-03-01T10:00:00.123456789Z"), layer('b', '2', 2), layer('c', '3', 3)};
  doubled.records = {{key('6'), 1}, {key('5'), 4}, {key('8'), 2}, {key('7'), -1}, {key('8'), 0}};
  EXPECT_EQ(serialize_cache_config(doubled), bytes);
}

TEST(CacheConfig, SortingKeepsEveryRecordOnItsChain) {
  CacheConfig c;
  c.key_scheme = "s";
  // Deliberately far from canonical: high blobs low, children before their siblings' parents.
  c.layers = {layer('f', '1', -1), layer('e', '2', 0), layer('a', '3', -1), layer('d', '4', 1), layer('b', '5', 2),
              layer('c', '6', 3)};
  c.records = {{key('9'), 5}, {key('8'), 4}, {key('7'), 1}, {key('6'), 2}};
  CacheConfig sorted = parse(serialize_cache_config(c));
  for (const CacheRecord& r : c.records) EXPECT_EQ(chain_of(sorted, r.key), chain_of(c, r.key)) << r.key;
  for (size_t i = 0; i < sorted.layers.size(); ++i) EXPECT_LT(sorted.layers[i].parent, static_cast<int>(i));
  std::vector<std::string> blobs;
  for (const CacheLayer& l : sorted.layers) blobs.push_back(l.blob.digest.str().substr(7, 1));
  EXPECT_THAT(blobs, ElementsAre("a", "f", "b", "e", "d", "c"));  // by depth, then by blob
}

TEST(CacheConfig, SameBlobOnTwoParentsStaysTwoLayers) {
  CacheConfig c;
  c.key_scheme = "s";
  c.layers = {layer('b', '1', -1), layer('a', '2', -1), layer('c', '3', 0), layer('c', '3', 1)};
  c.records = {{key('5'), 2}, {key('6'), 3}};
  CacheConfig sorted = parse(serialize_cache_config(c));
  ASSERT_EQ(sorted.layers.size(), 4u);
  EXPECT_EQ(chain_of(sorted, key('5')), chain_of(c, key('5')));
  EXPECT_EQ(chain_of(sorted, key('6')), chain_of(c, key('6')));
}

TEST(CacheConfig, OnlyMediaTypeDigestAndSizeOfABlobAreWritten) {
  CacheConfig c = sample();
  std::string bytes = serialize_cache_config(c);
  c.layers[1].blob.annotations["containerd.io/uncompressed"] = c.layers[1].diff_id.str();
  c.layers[1].blob.urls = {"https://example.com/blob"};
  EXPECT_EQ(serialize_cache_config(c), bytes);
}

TEST(CacheConfig, WritingRefusesWhatReadingWouldNotTake) {
  CacheConfig loop = sample();
  loop.layers[1].parent = 1;
  EXPECT_EQ(error_of([&] { serialize_cache_config(loop); }, ErrorKind::internal),
            "cache config: layer 1: parent 1 is not below the layer");
  CacheConfig outside = sample();
  outside.records[0].layer = 4;
  EXPECT_EQ(error_of([&] { serialize_cache_config(outside); }, ErrorKind::internal),
            "cache config: record \"" + key('5') + "\": layer 4 is out of range (4 layers)");
  CacheConfig config_type = sample();
  config_type.layers[0].blob.media_type = "application/vnd.oci.image.config.v1+json";
  EXPECT_THAT(error_of([&] { serialize_cache_config(config_type); }, ErrorKind::internal),
              HasSubstr("is not a layer type"));
  CacheConfig twice = sample();
  twice.records.push_back({key('5'), 2});
  EXPECT_EQ(error_of([&] { serialize_cache_config(twice); }, ErrorKind::internal),
            "cache config: key " + key('5') + " has two results");
  CacheConfig future = sample();
  future.version = 2;
  EXPECT_EQ(error_of([&] { serialize_cache_config(future); }, ErrorKind::internal),
            "cache config: version 2 cannot be written");
}

TEST(CacheConfig, DescriptorIsOfTheBytes) {
  std::string bytes = serialize_cache_config(sample());
  image::Descriptor d = cache_config_descriptor(bytes);
  EXPECT_EQ(d.media_type, "application/vnd.kbuild.cache.config.v1+json");
  EXPECT_EQ(d.digest, store::Digest::of(bytes));
  EXPECT_EQ(d.size, static_cast<int64_t>(bytes.size()));
}

TEST(CacheConfig, ReadingIgnoresMembersItDoesNotKnow) {
  std::string json = R"({"kbuildCache":1,"keyScheme":"s","comment":"x","layers":[{"blob":"sha256:)" + hex('a') +
                     R"(","mediaType":"application/vnd.oci.image.layer.v1.tar","size":1,"diffID":"sha256:)" + hex('1') +
                     R"(","parent":-1,"urls":["u"]}],)"
                     R"("records":[{"key":"sha256:)" + hex('5') + R"(","layer":0,"x":1}]})";
  CacheConfig c = parse(json);
  ASSERT_EQ(c.layers.size(), 1u);
  EXPECT_EQ(c.layers[0].created, "");
  EXPECT_THAT(c.records, ElementsAre(CacheRecord{key('5'), 0}));
}

TEST(CacheConfig, ReadingRefusesWhatIsNotAConfig) {
  EXPECT_THAT(parse_error("{"), HasSubstr("invalid kbuild cache config: [json.exception.parse_error"));
  EXPECT_EQ(parse_error("[]"), "invalid kbuild cache config: not a JSON object");
  EXPECT_EQ(parse_error(std::string(kCacheConfigLimit + 1, ' ')), "invalid kbuild cache config: larger than 4 MiB");
}

TEST(CacheConfig, ReadingRefusesAnotherVersion) {
  EXPECT_EQ(parse_error(R"({"keyScheme":"s"})"), "invalid kbuild cache config: no \"kbuildCache\" version");
  EXPECT_EQ(parse_error(R"({"kbuildCache":2,"keyScheme":"s"})"),
            "invalid kbuild cache config: version 2 is not supported (kbuild reads version 1)");
  EXPECT_EQ(parse_error(R"({"kbuildCache":0,"keyScheme":"s"})"),
            "invalid kbuild cache config: version 0 is not supported (kbuild reads version 1)");
  EXPECT_EQ(parse_error(R"({"kbuildCache":"1","keyScheme":"s"})"),
            "invalid kbuild cache config: \"kbuildCache\" is not an integer");
  EXPECT_EQ(parse_error(R"({"kbuildCache":1.5,"keyScheme":"s"})"),
            "invalid kbuild cache config: \"kbuildCache\" is not an integer");
}

TEST(CacheConfig, ReadingRefusesBuildKitsConfig) {
  // application/vnd.buildkit.cacheconfig.v0, as BuildKit exports it: no version of ours.
  std::string buildkit = R"({"layers":[{"blob":"sha256:)" + hex('a') +
                         R"(","parent":-1,"annotations":{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",)"
                         R"("diffID":"sha256:)" + hex('1') +
                         R"(","size":3623807,"createdAt":"2024-01-01T00:00:00Z"}}],)"
                         R"("records":[{"digest":"sha256:)" + hex('5') + R"("},{"layers":[{"createdAt":)"
                         R"("2024-01-01T00:00:00Z","layer":0}],"digest":"sha256:)" + hex('6') +
                         R"(","inputs":[[{"selector":"","link":0}]]}]})";
  EXPECT_EQ(parse_error(buildkit), "invalid kbuild cache config: no \"kbuildCache\" version");
}

TEST(CacheConfig, ReadingRefusesMembersOfTheWrongType) {
  EXPECT_EQ(parse_error(R"({"kbuildCache":1})"), "invalid kbuild cache config: no \"keyScheme\"");
  EXPECT_EQ(parse_error(R"({"kbuildCache":1,"keyScheme":3})"),
            "invalid kbuild cache config: \"keyScheme\" is not a string");
  EXPECT_EQ(parse_error(R"({"kbuildCache":1,"keyScheme":"s","layers":{}})"),
            "invalid kbuild cache config: \"layers\" is not an array");
  EXPECT_EQ(parse_error(R"({"kbuildCache":1,"keyScheme":"s","records":"x"})"),
            "invalid kbuild cache config: \"records\" is not an array");
  EXPECT_EQ(parse_error(with_layer("7")), "invalid kbuild cache config: layer 1: not an object");
  EXPECT_EQ(parse_error(with_records("[[]]")), "invalid kbuild cache config: record 0: not an object");
  EXPECT_EQ(parse_error(with_records(R"([{"key":1,"layer":0}])")),
            "invalid kbuild cache config: record 0: \"key\" is not a string");
  EXPECT_EQ(parse_error(with_records(R"([{"key":"sha256:)" + hex('5') + R"("}])")),
            "invalid kbuild cache config: record 0: no \"layer\"");
  EXPECT_EQ(parse_error(with_records(R"([{"key":"sha256:)" + hex('5') + R"(","layer":"0"}])")),
            "invalid kbuild cache config: record 0: \"layer\" is not an integer");
}

TEST(CacheConfig, ReadingRefusesABrokenLayer) {
  EXPECT_EQ(parse(with_layer(good_layer())).layers.size(), 2u);
  auto broken = [](const std::string& member, const std::string& value) {
    return parse_error(with_layer(good_layer(member, value)));
  };
  const std::string prefix = "invalid kbuild cache config: layer 1: ";
  EXPECT_EQ(broken("blob", ""), prefix + "no \"blob\"");
  EXPECT_EQ(broken("blob", "\"sha256:xyz\""), prefix + "\"blob\": invalid digest \"sha256:xyz\"");
  EXPECT_EQ(broken("mediaType", ""), prefix + "no \"mediaType\"");
  EXPECT_EQ(broken("mediaType", "\"application/vnd.oci.image.config.v1+json\""),
            prefix + "media type \"application/vnd.oci.image.config.v1+json\" is not a layer type");
  EXPECT_EQ(broken("mediaType", "\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\""),
            prefix + "media type \"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\" is not a layer type");
  EXPECT_EQ(broken("size", "-1"), prefix + "negative size");
  EXPECT_EQ(broken("size", "\"2\""), prefix + "\"size\" is not an integer");
  EXPECT_EQ(broken("diffID", ""), prefix + "no \"diffID\"");
  EXPECT_EQ(broken("diffID", "\"sha256:" + hex('A') + "\""),
            prefix + "\"diffID\": invalid digest \"sha256:" + hex('A') + "\"");
  EXPECT_EQ(broken("created", "\"yesterday\""), prefix + "invalid time \"yesterday\"");
  EXPECT_EQ(broken("created", "5"), prefix + "\"created\" is not a string");
  EXPECT_EQ(broken("parent", ""), prefix + "no \"parent\"");
  EXPECT_EQ(broken("parent", "null"), prefix + "no \"parent\"");
  EXPECT_EQ(broken("parent", "0.5"), prefix + "\"parent\" is not an integer");
}

TEST(CacheConfig, ReadingRefusesAParentThatIsNotBelowItsLayer) {
  const std::string prefix = "invalid kbuild cache config: layer 1: ";
  EXPECT_EQ(parse_error(with_layer(good_layer("parent", "1"))), prefix + "parent 1 is not below the layer");
  EXPECT_EQ(parse_error(with_layer(good_layer("parent", "2"))), prefix + "parent 2 is not below the layer");
  EXPECT_EQ(parse_error(with_layer(good_layer("parent", "-2"))), prefix + "parent -2 is not below the layer");
  EXPECT_EQ(parse_error(with_layer(good_layer("parent", "99999999999"))),
            prefix + "parent 99999999999 is not below the layer");
  EXPECT_THAT(parse_error(with_layer(good_layer("parent", "18446744073709551615"))),
              HasSubstr("is not below the layer"));
  // A layer on itself: the shortest loop.
  EXPECT_EQ(parse_error(R"({"kbuildCache":1,"keyScheme":"s","layers":[{"blob":"sha256:)" + hex('a') +
                        R"(","mediaType":"application/vnd.oci.image.layer.v1.tar","size":1,"diffID":"sha256:)" +
                        hex('1') + R"(","parent":0}]})"),
            "invalid kbuild cache config: layer 0: parent 0 is not below the layer");
}

TEST(CacheConfig, ReadingDropsEachBadRecordAloneWithAWarning) {
  std::string upper = "sha256:" + hex('A');
  std::vector<std::string> warnings;
  CacheConfig c = parse(with_records(std::string("[") +
                                     R"({"key":")" + upper + R"(","layer":0},)" +
                                     R"({"key":"md5:0123","layer":0},)" +
                                     R"({"key":")" + key('5') + R"(","layer":2},)" +
                                     R"({"key":")" + key('6') + R"(","layer":-2},)" +
                                     R"({"key":")" + key('7') + R"(","layer":1},)" +
                                     R"({"key":")" + key('7') + R"(","layer":0},)" +
                                     R"({"key":")" + key('8') + R"(","layer":-1},)" +
                                     R"({"key":")" + key('9') + R"(","layer":99999999999})" + "]"),
                        &warnings);
  EXPECT_THAT(c.records, ElementsAre(CacheRecord{key('7'), 1}, CacheRecord{key('8'), -1}));
  EXPECT_EQ(c.layers.size(), 2u);
  EXPECT_THAT(warnings, ElementsAre("cache record \"" + upper + "\" dropped: the key is not sha256:<64 hex>",
                                    "cache record \"md5:0123\" dropped: the key is not sha256:<64 hex>",
                                    "cache record \"" + key('5') + "\" dropped: layer 2 is out of range (2 layers)",
                                    "cache record \"" + key('6') + "\" dropped: layer -2 is out of range (2 layers)",
                                    "cache record \"" + key('7') + "\" dropped: an earlier record has the same key",
                                    "cache record \"" + key('9') +
                                        "\" dropped: layer 99999999999 is out of range (2 layers)"));
}

TEST(CacheConfig, AWarningShowsALongKeyCutBetweenCharacters) {
  std::string long_key = "x";
  for (int i = 0; i < 50; ++i) long_key += "\u00e9";
  std::vector<std::string> warnings;
  parse(with_records(R"([{"key":")" + long_key + R"(","layer":0}])"), &warnings);
  std::string shown = "x";
  for (int i = 0; i < 39; ++i) shown += "\u00e9";
  EXPECT_THAT(warnings, ElementsAre("cache record \"" + shown + "...\" dropped: the key is not sha256:<64 hex>"));
}

TEST(CacheConfig, DamagedBytesGiveAConfigOrAKbuildErrorNeverAnotherException) {
  const std::string bytes = serialize_cache_config(sample());
  auto try_parse = [](std::string_view text) {
    std::vector<std::string> warnings;
    try {
      (void)parse_cache_config(text, warnings);
    } catch (const Error&) {
    }
  };
  for (size_t n = 0; n <= bytes.size(); ++n) ASSERT_NO_THROW(try_parse(std::string_view(bytes).substr(0, n))) << n;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (char c : {'\0', '"', '-', '9', '{', ']', '\xff'}) {
      std::string damaged = bytes;
      damaged[i] = c;
      ASSERT_NO_THROW(try_parse(damaged)) << i << " " << c;
    }
  }
}

}  // namespace
}  // namespace kbuild::remotecache
