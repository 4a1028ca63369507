// The lead's context benchmark: 5,000 files of 1-4 KB in 50 directories plus one file of 100 MB,
// read as uid 65534 — cold, unchanged (hash cache and previous tree), one file changed, and with
// the hash cache but no previous tree — next to the SHA-256 speed of this machine.
//
//   ninja -C build tests/unit/context/context_bench && build/tests/unit/context/context_bench [work-dir]
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <cstdio>
#include <random>
#include <string>
#include <thread>

#include "common/syscall.h"
#include "common/temp_dir.h"
#include "common/unique_fd.h"
#include "engine/context/context_reader.h"

namespace {

using namespace kbuild;
using namespace kbuild::context;
using Clock = std::chrono::steady_clock;

void write_file(const std::string& path, const std::string& content) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) throw_errno("open", path);
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) throw_errno("write", path);
    done += static_cast<std::size_t>(n);
  }
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double cpu_ms(int who) {
  struct rusage u {};
  ::getrusage(who, &u);
  return (u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1e3 + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e3;
}

struct Run {
  ContextReadResult result;
  double ms;
  double daemon_cpu_ms;  // user + system time of this process (the daemon's side)
  double reader_cpu_ms;  // of the reader process
};

Run read_once(const std::string& ctx, const std::string& dest, HashCache* cache, const PreviousContext* previous) {
  check(::mkdir(dest.c_str(), 0700), "mkdir", dest);
  UniqueFd ctx_fd(::open(ctx.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  UniqueFd dest_fd(::open(dest.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ContextReadRequest request;
  request.context_fd = ctx_fd.get();
  request.dest_fd = dest_fd.get();
  request.caller = Credentials{65534, 65534, {65534}};
  request.hash_cache = cache;
  // The build tree's reader when run from there (KBUILD_CONTEXT_READER=build/service/...).
  const char* reader = std::getenv("KBUILD_CONTEXT_READER");
  request.reader_program = reader ? reader : KBUILD_CONTEXT_READER;
  if (previous) request.previous = *previous;
  const double self = cpu_ms(RUSAGE_SELF);
  const double children = cpu_ms(RUSAGE_CHILDREN);
  const auto start = Clock::now();
  Run run{read_context(request), 0, 0, 0};
  run.ms = ms_since(start);
  run.daemon_cpu_ms = cpu_ms(RUSAGE_SELF) - self;
  run.reader_cpu_ms = cpu_ms(RUSAGE_CHILDREN) - children;
  return run;
}

void report(const char* name, const Run& run) {
  const TransferStats& s = run.result.stats;
  std::printf("%-36s %7.1f ms wall %7.1f ms cpu (daemon %6.1f, reader %6.1f)  received %4llu files %9llu B  linked %4llu%s\n",
              name, run.ms, run.daemon_cpu_ms + run.reader_cpu_ms, run.daemon_cpu_ms, run.reader_cpu_ms,
              static_cast<unsigned long long>(s.files_received),
              static_cast<unsigned long long>(s.bytes_received), static_cast<unsigned long long>(s.files_linked),
              run.result.unchanged ? "  (unchanged)" : "");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    TempDir work(argc > 1 ? argv[1] : "/var/tmp", "kbuild-context-bench-");
    check(::chmod(work.path().c_str(), 0755), "chmod", work.path());
    const std::string ctx = work.path() + "/ctx";
    check(::mkdir(ctx.c_str(), 0755), "mkdir", ctx);
    std::mt19937_64 random(42);
    std::string big(100u << 20, '\0');
    for (std::size_t i = 0; i + 8 <= big.size(); i += 8) {
      const std::uint64_t v = random();
      std::memcpy(big.data() + i, &v, 8);
    }
    write_file(ctx + "/big.bin", big);
    for (int d = 0; d < 50; ++d) {
      const std::string dir = ctx + "/dir" + std::to_string(d);
      check(::mkdir(dir.c_str(), 0755), "mkdir", dir);
      for (int f = 0; f < 100; ++f) {
        std::string content(1024 + random() % 3072, 'x');
        for (char& c : content) c = static_cast<char>('a' + random() % 26);
        write_file(dir + "/file" + std::to_string(f) + ".txt", content);
      }
    }
    ::sync();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // past the racy-timestamp margin

    auto start = Clock::now();
    double cpu = cpu_ms(RUSAGE_SELF);
    store::Sha256 hasher;
    for (std::size_t i = 0; i < big.size(); i += 1 << 20) hasher.update(big.data() + i, 1 << 20);
    hasher.finish();
    std::printf("%-36s %7.1f ms wall %7.1f ms cpu\n", "sha256 of the 100 MB in memory", ms_since(start),
                cpu_ms(RUSAGE_SELF) - cpu);
    big.clear();
    big.shrink_to_fit();

    const std::string store = work.path() + "/store";
    check(::mkdir(store.c_str(), 0700), "mkdir", store);
    // What a plain copy of the same tree costs on this file system: no hashing, no privilege drop.
    const auto copy = [&](const char* name) {
      const double children = cpu_ms(RUSAGE_CHILDREN);
      const auto copy_start = Clock::now();
      const std::string command = "cp -a --reflink=never " + ctx + " " + store + "/" + name;
      if (std::system(command.c_str()) != 0) throw std::runtime_error("cp failed");
      std::printf("%-36s %7.1f ms wall %7.1f ms cpu\n", "baseline: cp -a of the same tree", ms_since(copy_start),
                  cpu_ms(RUSAGE_CHILDREN) - children);
    };
    copy("cp1");
    MemoryHashCache cache;
    const Run cold = read_once(ctx, store + "/cold", &cache, nullptr);
    report("cold (no cache, no previous)", cold);
    UniqueFd cold_fd(::open((store + "/cold").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    const PreviousContext previous{cold_fd.get(), &cold.result.manifest};
    report("unchanged (cache + previous)", read_once(ctx, store + "/same", &cache, &previous));
    write_file(ctx + "/dir7/file3.txt", "one file changed\n");
    report("one file changed (cache + previous)", read_once(ctx, store + "/one", &cache, &previous));
    report("cache, no previous tree", read_once(ctx, store + "/nopre", &cache, nullptr));
    MemoryHashCache empty;
    report("cold again (warm page cache)", read_once(ctx, store + "/cold2", &empty, nullptr));
    copy("cp2");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "context_bench: %s\n", e.what());
    return 1;
  }
}
