#include "engine/image/compressor.h"

#include <gtest/gtest.h>
#include <libdeflate.h>
#include <zstd.h>

#include <random>
#include <string>
#include <vector>

#include "common/error.h"

namespace kbuild::image {
namespace {

class Collect : public ByteSink {
 public:
  void write(const void* data, size_t size) override { bytes.append(static_cast<const char*>(data), size); }
  std::string bytes;
};

std::string text(size_t size) {
  std::string s;
  for (size_t i = 0; s.size() < size; ++i) s += "line " + std::to_string(i * 7919 % 100003) + " of some text\n";
  s.resize(size);
  return s;
}

std::string random_bytes(size_t size, unsigned seed) {
  std::mt19937 generator(seed);
  std::string s(size, '\0');
  for (char& c : s) c = static_cast<char>(generator() & 0xff);
  return s;
}

// Text, then random bytes, then text again, across block and piece boundaries.
std::string mixed(size_t size) {
  std::string s = text(size / 3) + random_bytes(size / 3, 7);
  return s + text(size - s.size());
}

// Every member of a gzip file, one after the other, as gunzip reads them.
std::string gunzip(const std::string& gz, int* members = nullptr) {
  libdeflate_decompressor* d = libdeflate_alloc_decompressor();
  std::string out;
  size_t offset = 0;
  int count = 0;
  while (offset < gz.size()) {
    std::vector<char> buffer(4 << 20);
    size_t in_used = 0, out_used = 0;
    auto rc = libdeflate_gzip_decompress_ex(d, gz.data() + offset, gz.size() - offset, buffer.data(), buffer.size(),
                                            &in_used, &out_used);
    EXPECT_EQ(rc, LIBDEFLATE_SUCCESS);
    if (rc != LIBDEFLATE_SUCCESS) break;
    out.append(buffer.data(), out_used);
    offset += in_used;
    ++count;
  }
  libdeflate_free_decompressor(d);
  if (members) *members = count;
  return out;
}

std::string unzstd(const std::string& z) {
  ZSTD_DCtx* d = ZSTD_createDCtx();
  std::string out;
  ZSTD_inBuffer in{z.data(), z.size(), 0};
  std::vector<char> buffer(1 << 20);
  size_t rc = 1;
  while (in.pos < in.size || rc != 0) {
    ZSTD_outBuffer o{buffer.data(), buffer.size(), 0};
    rc = ZSTD_decompressStream(d, &o, &in);
    EXPECT_FALSE(ZSTD_isError(rc)) << ZSTD_getErrorName(rc);
    if (ZSTD_isError(rc)) break;
    out.append(buffer.data(), o.pos);
    if (o.pos == 0 && in.pos == in.size) break;
  }
  ZSTD_freeDCtx(d);
  return out;
}

// Writes `input` in uneven pieces.
std::string compress(const std::string& input, CompressionConfig config) {
  Collect out;
  auto compressor = make_compressor(out, config);
  size_t offset = 0;
  for (size_t step = 1; offset < input.size(); step = step * 3 + 1) {
    size_t n = std::min(step % 700001, input.size() - offset);
    compressor->write(input.data() + offset, n);
    offset += n;
  }
  compressor->finish();
  return out.bytes;
}

TEST(Compressor, GzipGivesBackEveryByteWhateverTheSize) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{65536}, size_t{1} << 20, (size_t{1} << 20) + 1, size_t{3500000}}) {
    std::string input = mixed(size);
    for (unsigned threads : {1u, 2u, 4u}) {
      std::string gz = compress(input, {Compression::gzip, std::nullopt, threads});
      EXPECT_EQ(gunzip(gz), input) << size << " bytes on " << threads << " threads";
    }
  }
}

TEST(Compressor, GzipOutputDependsOnlyOnTheInputAndLevel) {
  std::string input = mixed(5 << 20);
  std::string one = compress(input, {Compression::gzip, std::nullopt, 1});
  EXPECT_EQ(compress(input, {Compression::gzip, std::nullopt, 2}), one);
  EXPECT_EQ(compress(input, {Compression::gzip, std::nullopt, 7}), one);
  EXPECT_EQ(compress(input, {Compression::gzip, 3, 3}), one) << "3 is the default";
  EXPECT_NE(compress(input, {Compression::gzip, 1, 3}), one);
}

TEST(Compressor, GzipCompressesTextAndStoresRandomBytes) {
  std::string words = text(4 << 20);
  EXPECT_LT(compress(words, {Compression::gzip, std::nullopt, 2}).size(), words.size() / 4);
  std::string noise = random_bytes(4 << 20, 1);
  int members = 0;
  std::string stored = compress(noise, {Compression::gzip, 9, 2});
  EXPECT_EQ(gunzip(stored, &members), noise);
  EXPECT_EQ(members, 4) << "one member per block";
  // Stored blocks cost 5 bytes per 64 KiB and each member 18: nothing was searched for.
  EXPECT_LE(stored.size(), noise.size() + 4 * 18 + 5 * (noise.size() / 65535 + 4));
  // A block of text and random bytes compresses the text only.
  std::string both = text(512 << 10) + random_bytes(512 << 10, 2);
  std::string gz = compress(both, {Compression::gzip, std::nullopt, 1});
  EXPECT_EQ(gunzip(gz, &members), both);
  EXPECT_EQ(members, 2);
  EXPECT_LT(gz.size(), (512 << 10) + (512 << 10) / 4);
}

TEST(Compressor, GzipLevelZeroStoresEverything) {
  std::string words = text(2 << 20);
  std::string gz = compress(words, {Compression::gzip, 0, 2});
  EXPECT_EQ(gunzip(gz), words);
  EXPECT_GT(gz.size(), words.size());
}

TEST(Compressor, ZstdGivesBackEveryByteTheSameOnAnyNumberOfThreads) {
  std::string input = mixed(6 << 20);
  std::string one = compress(input, {Compression::zstd, std::nullopt, 1});
  EXPECT_EQ(unzstd(one), input);
  EXPECT_LT(one.size(), input.size());
  EXPECT_EQ(compress(input, {Compression::zstd, std::nullopt, 2}), one);
  EXPECT_EQ(compress(input, {Compression::zstd, std::nullopt, 6}), one);
  EXPECT_EQ(unzstd(compress(input, {Compression::zstd, 19, 2})), input);
  EXPECT_EQ(unzstd(compress("", {Compression::zstd, std::nullopt, 2})), "");
}

TEST(Compressor, UncompressedPassesTheBytesOn) {
  std::string input = mixed(100000);
  EXPECT_EQ(compress(input, {Compression::none, std::nullopt, 2}), input);
}

TEST(Compressor, AFailingSinkStopsTheStream) {
  class Full : public ByteSink {
   public:
    void write(const void*, size_t) override { throw Error(ErrorKind::internal, "disk full"); }
  } full;
  std::string input = mixed(8 << 20);
  for (Compression type : {Compression::gzip, Compression::zstd}) {
    auto compressor = make_compressor(full, {type, std::nullopt, 2});
    EXPECT_THROW(
        {
          compressor->write(input.data(), input.size());
          compressor->finish();
        },
        Error);
  }
}

TEST(Compressor, NamesAndLevelsAsBuildKitTakesThem) {
  EXPECT_EQ(parse_compression("gzip"), Compression::gzip);
  EXPECT_EQ(parse_compression("zstd"), Compression::zstd);
  EXPECT_EQ(parse_compression("uncompressed"), Compression::none);
  for (const char* bad : {"", "lz4", "GZIP", "none", "estargz"}) EXPECT_THROW(parse_compression(bad), Error) << bad;
  EXPECT_NO_THROW(check_compression({Compression::gzip, 0, 0}));
  EXPECT_NO_THROW(check_compression({Compression::gzip, 9, 0}));
  EXPECT_THROW(check_compression({Compression::gzip, 10, 0}), Error);
  EXPECT_THROW(check_compression({Compression::gzip, -1, 0}), Error);
  EXPECT_NO_THROW(check_compression({Compression::zstd, 22, 0}));
  EXPECT_THROW(check_compression({Compression::zstd, 23, 0}), Error);
  try {
    Collect out;
    make_compressor(out, {Compression::zstd, 23, 0});
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "compression-level 23 is out of range for zstd (0..22)");
  }
}

}  // namespace
}  // namespace kbuild::image
