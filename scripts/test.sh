#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what building and the tests need
# (setup-test-deps.sh, which runs setup-deps.sh), builds kbuild, runs every test, fuzzes the
# Dockerfile frontend for a bounded time, and prints one summary line ("tests: N passed, N failed,
# N skipped", see scripts/test_summary.py: what crashed, timed out or left no result counts as
# failed, and a core test skipped as root fails the run).
# Exits non-zero on any failure.
#
#   KBUILD_BUILD_DIR      build directory (default: build)
#   KBUILD_FUZZ_SECONDS   how long the fuzzer runs (default: 60; 0 skips the fuzzing step)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
build_dir=${KBUILD_BUILD_DIR:-build}
fuzz_seconds=${KBUILD_FUZZ_SECONDS:-60}

bash scripts/setup-test-deps.sh

if [[ -f "$build_dir/build.ninja" ]]; then
  meson setup --reconfigure "$build_dir" >/dev/null
else
  meson setup "$build_dir" >/dev/null
fi
ninja -C "$build_dir"

status=0
# meson writes one GoogleTest XML report per test into the build directory; old ones must not
# be counted again.
rm -f "$build_dir"/*.xml
meson test -C "$build_dir" --print-errorlogs --num-processes "$(nproc)" || status=1

fuzz_status=0
if [[ "$fuzz_seconds" != 0 ]]; then
  bash scripts/fuzz.sh "$fuzz_seconds" || fuzz_status=$?
fi

# The daemon end to end, pulling and pushing against local registries, exporting and importing
# build caches between two daemons, build secrets, SSH agent forwarding (with an sshd of its own),
# daemon.json reloads, disk usage and garbage collection, image names refused before any work,
# other and several platforms (foreign ones under qemu-user-static through binfmt_misc), kill -9
# and concurrent builds with a prune among them, and against BuildKit itself (Debian's dockerd).
# All need root.
suite_logs=$(mktemp -d)
trap 'rm -rf "$suite_logs"' EXIT
python3 tests/integration/test_daemon.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/integration.log" || status=1
python3 tests/integration/test_run.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/run.log" || status=1
python3 tests/integration/test_registry.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/registry.log" || status=1
python3 tests/integration/test_cache.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/cache.log" || status=1
python3 tests/integration/test_secrets.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/secrets.log" || status=1
python3 tests/integration/test_ssh.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/ssh.log" || status=1
python3 tests/integration/test_reload.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/reload.log" || status=1
python3 tests/integration/test_legacy.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/legacy.log" || status=1
python3 tests/integration/test_gc.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/gc.log" || status=1
python3 tests/integration/test_references.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/references.log" || status=1
python3 tests/integration/test_platforms.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/platforms.log" || status=1
python3 tests/integration/test_emulation.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/emulation.log" || status=1
python3 tests/integration/test_crash.py --build-dir "$build_dir" 2>&1 | tee "$suite_logs/crash.log" || status=1
python3 tests/integration/differential/test_image_tree.py 2>&1 | tee "$suite_logs/harness.log" || status=1
python3 tests/integration/differential/run.py --build-dir "$build_dir" --require-kbuild 2>&1 |
  tee "$suite_logs/differential.log" || status=1
python3 tests/integration/differential/run.py --build-dir "$build_dir" --require-kbuild --legacy 2>&1 |
  tee "$suite_logs/legacy_differential.log" || status=1

python3 scripts/test_summary.py "$root/$build_dir" "$suite_logs" "$fuzz_status" "$status" || status=1
exit $status
