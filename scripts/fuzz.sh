#!/usr/bin/env bash
# Builds the libFuzzer target for the Dockerfile parser and shell lexer with clang and runs it
# for a bounded time (first argument, seconds; default 60). The kept corpus in tests/fuzz/corpus
# and BuildKit's conformance Dockerfiles seed it; new inputs go to a temporary directory, so the
# tree is not changed. A crash leaves its input in build-fuzz/crashes and fails the run.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-60}
build_dir=${KBUILD_FUZZ_BUILD_DIR:-build-fuzz}

if [[ -f "$build_dir/build.ninja" ]]; then
  CXX=clang++ meson setup --reconfigure "$build_dir" -Dfuzz=true >/dev/null
else
  CXX=clang++ meson setup "$build_dir" -Dfuzz=true >/dev/null
fi
ninja -C "$build_dir" tests/fuzz/dockerfile_fuzz

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$build_dir/crashes"

seeds=(tests/fuzz/corpus)
for dir in ../shared/conformance/dockerfile-parser/testfiles ../shared/conformance/dockerfile-parser/testfiles-negative; do
  [[ -d $dir ]] && seeds+=("$dir")
done

echo "fuzz: running dockerfile_fuzz for ${seconds}s"
"$build_dir/tests/fuzz/dockerfile_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -artifact_prefix="$build_dir/crashes/" -print_final_stats=1 "$scratch" "${seeds[@]}" 2>"$build_dir/fuzz.log" || {
  tail -n 60 "$build_dir/fuzz.log"
  echo "fuzz: FAILED (crash input in $build_dir/crashes)"
  exit 1
}
grep -E '^stat::number_of_executed_units|^Done' "$build_dir/fuzz.log" || true
echo "fuzz: no crash in ${seconds}s"
