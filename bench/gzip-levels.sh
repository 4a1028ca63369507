#!/usr/bin/env bash
# What each gzip level costs and gives: libdeflate (kbuild's gzip) at levels 1-9 against Go's
# compress/gzip at its default level (what BuildKit writes when no level is given) and zlib's
# default (gzip -6), on two inputs of 64 MiB: the text of registry.sh's "words" layer (the same
# generator and seed) and a tar of this machine's /usr/bin (binaries). Each level compresses the
# input in 1 MiB blocks, one core, as kbuild's compressor does per block; Go and zlib compress it
# as one stream. Prints MB/s of input and the compressed size as a fraction of it. Run from
# anywhere:
#
#   bash bench/gzip-levels.sh
#
# Needs g++, libdeflate-dev, zlib1g-dev and golang-go (scripts/setup-test-deps.sh installs them all
# but zlib1g-dev, which libarchive-dev brings).
set -euo pipefail
export LC_ALL=C
work=$(mktemp -d /tmp/kgzip.XXXXXX)
trap 'rm -rf "$work"' EXIT

python3 - "$work/words" <<'PY'
import random, sys
rng = random.Random(61202026)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 10))) for _ in range(5000)]
weights = [1 / (r + 1) for r in range(len(vocab))]
out = bytearray()
while len(out) < 64 << 20:
    words = rng.choices(vocab, weights, k=120000)
    out += "".join(" ".join(words[i:i + 12]) + "\n" for i in range(0, len(words), 12)).encode()
open(sys.argv[1], "wb").write(out[:64 << 20])
PY
# tar stops on a broken pipe once head has its 64 MiB.
(tar cf - -C / usr/bin 2>/dev/null || true) | head -c $((64 << 20)) > "$work/binaries"

cat > "$work/levels.cc" <<'CC'
#include <libdeflate.h>
#include <zlib.h>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>
static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
int main(int, char** argv) {
  std::ifstream file(argv[1], std::ios::binary);
  std::string in((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  const size_t block = 1 << 20;
  for (int level = 1; level <= 9; ++level) {
    libdeflate_compressor* c = libdeflate_alloc_compressor(level);
    std::vector<char> out(libdeflate_gzip_compress_bound(c, block));
    double start = now();
    size_t total = 0;
    for (size_t o = 0; o < in.size(); o += block) {
      total += libdeflate_gzip_compress(c, in.data() + o, std::min(block, in.size() - o), out.data(), out.size());
    }
    double t = now() - start;
    std::printf("libdeflate %d  %6.0f  %.3f\n", level, in.size() / t / 1e6, double(total) / in.size());
    libdeflate_free_compressor(c);
  }
  std::vector<unsigned char> out(compressBound(in.size()));
  uLongf size = out.size();
  double start = now();
  compress2(out.data(), &size, reinterpret_cast<const Bytef*>(in.data()), in.size(), Z_DEFAULT_COMPRESSION);
  double t = now() - start;
  std::printf("zlib -6       %6.0f  %.3f\n", in.size() / t / 1e6, double(size) / in.size());
}
CC
g++ -O2 -o "$work/levels" "$work/levels.cc" -ldeflate -lz

mkdir -p "$work/go"
cat > "$work/go/main.go" <<'GO'
package main

import (
	"compress/gzip"
	"fmt"
	"os"
	"time"
)

type counter struct{ n int }

func (c *counter) Write(p []byte) (int, error) { c.n += len(p); return len(p), nil }

func main() {
	in, err := os.ReadFile(os.Args[1])
	if err != nil {
		panic(err)
	}
	c := &counter{}
	start := time.Now()
	w, _ := gzip.NewWriterLevel(c, gzip.DefaultCompression)
	w.Write(in)
	w.Close()
	t := time.Since(start).Seconds()
	fmt.Printf("Go default    %6.0f  %.3f\n", float64(len(in))/t/1e6, float64(c.n)/float64(len(in)))
}
GO
(cd "$work/go" && GO111MODULE=off GOCACHE="$work/gocache" go build -o "$work/gogzip" main.go)

for input in words binaries; do
  echo "== $input (64 MiB): compressor, MB/s, compressed/input"
  "$work/levels" "$work/$input"
  "$work/gogzip" "$work/$input"
done
