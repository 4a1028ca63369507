#include "engine/image/compressor.h"

#include <libdeflate.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"

namespace kbuild::image {
namespace {

constexpr size_t kGzipBlock = 1 << 20;
// Randomness is judged per piece, so that a block holding text and a compressed file stores
// only the file.
constexpr size_t kPiece = 64 << 10;
// Bits per byte of order-0 entropy from which a piece is stored. Text and code are far below
// (4-6); compressed or encrypted data is above 7.99. Above this, Huffman coding gains almost
// nothing, and matches in such data are rare.
constexpr double kRandomBits = 7.95;
// Unset, gzip is libdeflate's level 3: its output is the size of Go's default level (BuildKit's
// gzip) within 3% on text and binaries (bench/README.md, "gzip levels"), at 3.5 to 5 times
// its speed. A level given is libdeflate's level of that number.
constexpr int kGzipDefaultLevel = 3;
constexpr int kZstdDefaultLevel = 3;

unsigned thread_count(unsigned asked) {
  if (asked != 0) return asked;
  return std::max(1u, std::thread::hardware_concurrency());
}

bool looks_random(const unsigned char* data, size_t size) {
  if (size < 4096) return false;
  std::array<uint32_t, 256> counts{};
  for (size_t i = 0; i < size; ++i) ++counts[data[i]];
  double bits = 0;
  const double total = static_cast<double>(size);
  for (uint32_t count : counts) {
    if (count == 0) continue;
    double p = count / total;
    bits -= p * std::log2(p);
  }
  return bits >= kRandomBits;
}

void put_le32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

// A gzip member of stored deflate blocks: the header libdeflate writes (no name, mtime 0, OS
// unknown), blocks of at most 65535 bytes, CRC-32 and size.
void append_stored_member(std::string& out, const unsigned char* data, size_t size) {
  static constexpr unsigned char kHeader[] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff};
  out.append(reinterpret_cast<const char*>(kHeader), sizeof kHeader);
  size_t offset = 0;
  do {
    size_t n = std::min<size_t>(size - offset, 65535);
    bool last = offset + n == size;
    out.push_back(static_cast<char>(last ? 1 : 0));
    out.push_back(static_cast<char>(n & 0xff));
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(~n & 0xff));
    out.push_back(static_cast<char>((~n >> 8) & 0xff));
    out.append(reinterpret_cast<const char*>(data + offset), n);
    offset += n;
  } while (offset < size);
  put_le32(out, libdeflate_crc32(0, data, size));
  put_le32(out, static_cast<uint32_t>(size));
}

struct DeflateCompressor {
  explicit DeflateCompressor(int level) : level(level) {
    if (level > 0) {
      handle = libdeflate_alloc_compressor(level);
      if (!handle) throw Error(ErrorKind::internal, "gzip: cannot allocate a compressor");
    }
  }
  ~DeflateCompressor() {
    if (handle) libdeflate_free_compressor(handle);
  }
  DeflateCompressor(const DeflateCompressor&) = delete;
  DeflateCompressor& operator=(const DeflateCompressor&) = delete;

  void append_member(std::string& out, const unsigned char* data, size_t size) {
    if (!handle) return append_stored_member(out, data, size);
    size_t start = out.size();
    out.resize(start + libdeflate_gzip_compress_bound(handle, size));
    size_t written = libdeflate_gzip_compress(handle, data, size, out.data() + start, out.size() - start);
    // Stored is 18 bytes of member plus 5 per 64 KiB; a larger result is no gain.
    if (written == 0 || written >= size + 18 + 5 * (size / 65535 + 1)) {
      out.resize(start);
      append_stored_member(out, data, size);
      return;
    }
    out.resize(start + written);
  }

  // One block: runs of pieces that look random are stored, the others compressed.
  std::string block(const std::string& input) {
    std::string out;
    const auto* data = reinterpret_cast<const unsigned char*>(input.data());
    size_t run_start = 0;
    bool run_random = false;
    for (size_t offset = 0; offset < input.size(); offset += kPiece) {
      size_t n = std::min(kPiece, input.size() - offset);
      bool random = level > 0 && looks_random(data + offset, n);
      if (offset != 0 && random != run_random) {
        emit_run(out, data + run_start, offset - run_start, run_random);
        run_start = offset;
      }
      run_random = random;
    }
    emit_run(out, data + run_start, input.size() - run_start, run_random);
    return out;
  }

  void emit_run(std::string& out, const unsigned char* data, size_t size, bool random) {
    if (random) {
      append_stored_member(out, data, size);
    } else {
      append_member(out, data, size);
    }
  }

  int level;
  libdeflate_compressor* handle = nullptr;
};

class ParallelGzip : public Compressor {
 public:
  ParallelGzip(ByteSink& out, int level, unsigned threads) : out_(out), level_(level), threads_(threads) {
    current_.reserve(kGzipBlock);
  }
  ~ParallelGzip() override { stop_workers(); }
  ParallelGzip(const ParallelGzip&) = delete;
  ParallelGzip& operator=(const ParallelGzip&) = delete;

  void write(const void* data, size_t size) override {
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
      size_t n = std::min(size, kGzipBlock - current_.size());
      current_.append(bytes, n);
      bytes += n;
      size -= n;
      if (current_.size() == kGzipBlock) submit();
    }
  }

  void finish() override {
    if (workers_.empty()) {
      // A stream of one block never leaves this thread.
      DeflateCompressor compressor(level_);
      std::string out = compressor.block(current_);
      current_.clear();
      out_.write(out.data(), out.size());
      return;
    }
    if (!current_.empty()) submit();
    drain_all();
  }

 private:
  struct Job {
    std::string input;
    std::string output;
    bool done = false;
    std::exception_ptr error;
  };

  void submit() {
    auto job = std::make_shared<Job>();
    job->input.swap(current_);
    current_.reserve(kGzipBlock);
    if (workers_.empty()) start_workers();
    {
      std::lock_guard lock(mutex_);
      queue_.push_back(job);
      in_order_.push_back(job);
    }
    work_ready_.notify_one();
    // Bounded: a layer streams through a few blocks of memory, never whole.
    while (in_order_.size() > 2 * threads_ + 1) emit_front();
    emit_finished();
  }

  void start_workers() {
    for (unsigned i = 0; i < threads_; ++i) {
      workers_.emplace_back([this] { work(); });
    }
  }

  void stop_workers() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    for (std::thread& worker : workers_) worker.join();
    workers_.clear();
  }

  void work() {
    std::optional<DeflateCompressor> compressor;
    std::exception_ptr setup_error;
    try {
      compressor.emplace(level_);
    } catch (...) {
      setup_error = std::current_exception();
    }
    for (;;) {
      std::shared_ptr<Job> job;
      {
        std::unique_lock lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (stopping_) return;
        job = queue_.front();
        queue_.pop_front();
      }
      std::string output;
      std::exception_ptr error = setup_error;
      if (!error) {
        try {
          output = compressor->block(job->input);
        } catch (...) {
          error = std::current_exception();
        }
      }
      {
        std::lock_guard lock(mutex_);
        job->output = std::move(output);
        job->error = error;
        job->done = true;
        std::string().swap(job->input);
      }
      job_done_.notify_all();
    }
  }

  // Writes the oldest block once it is compressed.
  void emit_front() {
    std::shared_ptr<Job> job;
    {
      std::unique_lock lock(mutex_);
      job_done_.wait(lock, [&] { return in_order_.front()->done; });
      job = in_order_.front();
      in_order_.pop_front();
    }
    if (job->error) std::rethrow_exception(job->error);
    out_.write(job->output.data(), job->output.size());
  }

  // Writes the blocks at the front that are done, without waiting.
  void emit_finished() {
    for (;;) {
      {
        std::lock_guard lock(mutex_);
        if (in_order_.empty() || !in_order_.front()->done) return;
      }
      emit_front();
    }
  }

  void drain_all() {
    while (!in_order_.empty()) emit_front();
  }

  ByteSink& out_;
  const int level_;
  const unsigned threads_;
  std::string current_;
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable job_done_;
  std::deque<std::shared_ptr<Job>> queue_;     // waiting for a worker
  std::deque<std::shared_ptr<Job>> in_order_;  // submitted, not yet written; touched under mutex_
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

class ZstdCompressor : public Compressor {
 public:
  ZstdCompressor(ByteSink& out, int level, unsigned threads) : out_(out), context_(ZSTD_createCCtx()) {
    if (!context_) throw Error(ErrorKind::internal, "zstd: cannot allocate a compressor");
    check(ZSTD_CCtx_setParameter(context_, ZSTD_c_compressionLevel, level));
    // Any number of workers from 1 up gives the same bytes; 0 would give others.
    check(ZSTD_CCtx_setParameter(context_, ZSTD_c_nbWorkers, static_cast<int>(threads)));
    buffer_.resize(ZSTD_CStreamOutSize());
  }
  ~ZstdCompressor() override { ZSTD_freeCCtx(context_); }
  ZstdCompressor(const ZstdCompressor&) = delete;
  ZstdCompressor& operator=(const ZstdCompressor&) = delete;

  void write(const void* data, size_t size) override {
    ZSTD_inBuffer in{data, size, 0};
    while (in.pos < in.size) step(in, ZSTD_e_continue);
  }

  void finish() override {
    ZSTD_inBuffer in{nullptr, 0, 0};
    while (step(in, ZSTD_e_end) != 0) {
    }
  }

 private:
  size_t step(ZSTD_inBuffer& in, ZSTD_EndDirective directive) {
    ZSTD_outBuffer out{buffer_.data(), buffer_.size(), 0};
    size_t remaining = check(ZSTD_compressStream2(context_, &out, &in, directive));
    if (out.pos > 0) out_.write(buffer_.data(), out.pos);
    return remaining;
  }

  static size_t check(size_t result) {
    if (ZSTD_isError(result)) throw Error(ErrorKind::internal, std::string("zstd: ") + ZSTD_getErrorName(result));
    return result;
  }

  ByteSink& out_;
  ZSTD_CCtx* context_;
  std::vector<char> buffer_;
};

class Uncompressed : public Compressor {
 public:
  explicit Uncompressed(ByteSink& out) : out_(out) {}
  void write(const void* data, size_t size) override { out_.write(data, size); }
  void finish() override {}

 private:
  ByteSink& out_;
};

}  // namespace

Compression parse_compression(std::string_view name) {
  if (name == "gzip") return Compression::gzip;
  if (name == "zstd") return Compression::zstd;
  if (name == "uncompressed") return Compression::none;
  if (name == "estargz") throw Error(ErrorKind::user, "compression type estargz is not supported (gzip, zstd, uncompressed are)");
  throw Error(ErrorKind::user, "unsupported compression type " + std::string(name));
}

std::string_view compression_name(Compression compression) {
  switch (compression) {
    case Compression::gzip: return "gzip";
    case Compression::zstd: return "zstd";
    case Compression::none: return "uncompressed";
  }
  return "";
}

void check_compression(const CompressionConfig& config) {
  if (!config.level) return;
  int low = 0, high = 0;
  switch (config.type) {
    case Compression::gzip: high = 9; break;
    case Compression::zstd: high = 22; break;
    case Compression::none: return;
  }
  if (*config.level < low || *config.level > high) {
    throw Error(ErrorKind::user, "compression-level " + std::to_string(*config.level) + " is out of range for " +
                                     std::string(compression_name(config.type)) + " (" + std::to_string(low) + ".." +
                                     std::to_string(high) + ")");
  }
}

std::unique_ptr<Compressor> make_compressor(ByteSink& out, const CompressionConfig& config) {
  check_compression(config);
  switch (config.type) {
    case Compression::gzip:
      return std::make_unique<ParallelGzip>(out, config.level.value_or(kGzipDefaultLevel), thread_count(config.threads));
    case Compression::zstd:
      return std::make_unique<ZstdCompressor>(out, config.level.value_or(kZstdDefaultLevel),
                                              thread_count(config.threads));
    case Compression::none:
      return std::make_unique<Uncompressed>(out);
  }
  throw Error(ErrorKind::internal, "unknown compression");
}

}  // namespace kbuild::image
