#!/bin/bash
# Runs the tests that need a booted systemd, each inside its own systemd-nspawn container
# (tests/system/nspawn.sh). Needs root, systemd-container, and a build directory with the test
# binaries built:
#
#   tests/system/run.sh [BUILD_DIR]        (default: ./build)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-build}" && pwd)
tests=(
  "$build/tests/unit/sandbox/sandbox_cgroup_systemd_test"
)

status=0
for test in "${tests[@]}"; do
  if [[ ! -x "$test" ]]; then
    echo "run.sh: $test is not built (ninja -C $build)" >&2
    exit 2
  fi
  echo "== $(basename "$test") inside systemd-nspawn"
  if ! (cd "$build" && "$here/nspawn.sh" --bind="$build" -- "$test"); then
    status=1
  fi
done
# RUN end to end under the systemd backend, with kbuildd, kbuildctl and kbuild-exec of $build.
for binary in service/kbuildd cli/kbuildctl engine/kbuild-exec; do
  if [[ ! -x "$build/$binary" ]]; then
    echo "run.sh: $build/$binary is not built (ninja -C $build)" >&2
    exit 2
  fi
done
echo "== test_run_systemd.py inside systemd-nspawn"
if ! (cd "$build" && "$here/nspawn.sh" --bind="$build" -- python3 "$here/test_run_systemd.py" --build-dir "$build"); then
  status=1
fi
# The .deb installed, used and purged (builds the package, or takes it from its cache).
echo "== test_package.py inside systemd-nspawn"
if ! "$here/package_test.sh"; then
  status=1
fi
exit $status
